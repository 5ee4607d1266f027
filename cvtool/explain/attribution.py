"""Attribution maps: which pixels of one picture a class score depends on.

Every method takes a :class:`~cvtool.models.differentiable.GradClassifier`, one picture as float
pixels ``x`` ``(1, 3, S, S)`` in [0, 1] and a target class id, and returns an
:class:`Attribution`: a map ``(S, S)`` scaled to [0, 1] (1 = most important) plus the raw,
unscaled map and a few method-specific numbers.

* ``saliency`` — |∂score/∂pixel|, the maximum over colour channels (Simonyan et al., 2014).
* ``smoothgrad`` — the saliency averaged over noisy copies of the picture (Smilkov et al., 2017).
* ``integrated-gradients`` — gradients summed along the straight path from a black picture to the
  input, times the pixel difference (Sundararajan et al., 2017); the attributions add up to the
  score difference, and the record reports how closely ("completeness").
* ``guided-backprop`` — the gradient with negative signals stopped at every ReLU on the way
  back (Springenberg et al., 2015).
* ``gradcam`` — a layer's feature maps weighted by their average gradient, rectified
  (Selvaraju et al., 2017); ``gradcam++`` weights positive gradients per location (Chattopadhyay
  et al., 2018). Both are coarse (the layer's resolution) and class-discriminative.
* ``occlusion`` — how much the target probability drops when a grey square covers each place
  (Zeiler & Fergus, 2014); slow, but needs no gradients at all.

The score is the pre-softmax logit of the target class, as in the papers (occlusion uses the
probability, which is what a user sees drop).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvtool.explain.layers import capture, last_spatial_layer

METHODS = ("saliency", "smoothgrad", "integrated-gradients", "guided-backprop", "gradcam",
           "gradcam++", "occlusion")


@dataclass
class Attribution:
    heat: np.ndarray  # (S, S) float32 in [0, 1]
    raw: np.ndarray  # (S, S) float32, unscaled (the .npy a user gets)
    info: dict = field(default_factory=dict)


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(m.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _robust_normalise(m: np.ndarray, q: float = 99.5) -> np.ndarray:
    """Scale by a high percentile instead of the maximum, so one extreme gradient does not
    leave the rest of the map black (common for raw gradients)."""
    m = np.abs(np.nan_to_num(m.astype(np.float32)))
    hi = float(np.percentile(m, q))
    return np.clip(m / hi, 0.0, 1.0) if hi > 0 else np.zeros_like(m)


def _input_grad(clf, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the target logit w.r.t. each picture of ``x`` (B, 3, S, S); also the logits."""
    x = x.detach().clone().requires_grad_(True)
    logits = clf(x)
    (grad,) = torch.autograd.grad(logits[:, target].sum(), x)
    return grad, logits.detach()


def saliency(clf, x, target: int) -> Attribution:
    grad, _ = _input_grad(clf, x, target)
    raw = grad[0].abs().amax(dim=0).cpu().numpy()
    return Attribution(_robust_normalise(raw), raw)


def smoothgrad(clf, x, target: int, samples: int = 24, noise: float = 0.15, batch: int = 8,
               seed: int = 0) -> Attribution:
    """``noise`` is the standard deviation as a fraction of the pixel range (the paper's 10–20%)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    total = torch.zeros_like(x[0])
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        eps = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device) * noise
        grad, _ = _input_grad(clf, x + eps, target)  # noisy copies may leave [0, 1], as in the paper
        total += grad.abs().sum(dim=0)
        done += n
    raw = (total / samples).amax(dim=0).cpu().numpy()
    return Attribution(_robust_normalise(raw), raw, {"samples": samples, "noise": noise})


def integrated_gradients(clf, x, target: int, steps: int = 128, batch: int = 16) -> Attribution:
    baseline = torch.zeros_like(x)
    # Riemann sum at the midpoints of `steps` equal intervals of the path.
    alphas = (torch.arange(steps, dtype=torch.float32, device=x.device) + 0.5) / steps
    total = torch.zeros_like(x[0])
    for i in range(0, steps, batch):
        a = alphas[i:i + batch].view(-1, 1, 1, 1)
        grad, _ = _input_grad(clf, baseline + a * (x - baseline), target)
        total += grad.sum(dim=0)
    attr = (x - baseline)[0] * total / steps  # (3, S, S)
    with torch.no_grad():
        f_x = float(clf(x)[0, target])
        f_b = float(clf(baseline)[0, target])
    s = float(attr.sum())
    raw = attr.sum(dim=0).cpu().numpy()
    gap = abs(s - (f_x - f_b)) / max(abs(f_x - f_b), 1e-6)
    return Attribution(_robust_normalise(raw), raw,
                       {"steps": steps, "baseline": "black",
                        "attribution_sum": round(s, 4), "score_difference": round(f_x - f_b, 4),
                        "completeness_error": round(gap, 4)})


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper) if upper is not None else x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        keep = (x > 0) & (grad > 0)
        if ctx.upper is not None:
            keep &= x < ctx.upper
        return grad * keep, None


class _Guided(nn.Module):
    def __init__(self, upper):
        super().__init__()
        self.upper = upper

    def forward(self, x):
        return _GuidedReLU.apply(x, self.upper)


@contextlib.contextmanager
def _guided_relus(net: nn.Module):
    """Swap every ReLU/ReLU6 module for its guided version while the block runs."""
    swapped = []
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) in (nn.ReLU, nn.ReLU6):
                upper = 6.0 if isinstance(child, nn.ReLU6) else None
                setattr(module, child_name, _Guided(upper))
                swapped.append((module, child_name, child))
    try:
        yield len(swapped)
    finally:
        for module, child_name, child in swapped:
            setattr(module, child_name, child)


def guided_backprop(clf, x, target: int) -> Attribution:
    with _guided_relus(clf.net) as n:
        if n == 0:
            raise ValueError("guided-backprop needs ReLU layers as modules; this model has none")
        grad, _ = _input_grad(clf, x, target)
    raw = grad[0].clamp_min(0).amax(dim=0).cpu().numpy()
    return Attribution(_robust_normalise(raw), raw, {"relus_guided": n})


def _layer_and_grad(clf, x, target: int, layer: str | None):
    layer = layer or last_spatial_layer(clf.net, x.shape[-1])
    with capture(clf.net, layer) as store:
        x = x.detach().clone().requires_grad_(True)
        logits = clf(x)
        acts = store.get("out")
        if not torch.is_tensor(acts) or acts.dim() != 4:
            shape = list(acts.shape) if torch.is_tensor(acts) else type(acts).__name__
            raise ValueError(f"--layer {layer}: Grad-CAM needs a feature map (B, C, H, W); this layer gives {shape}")
        (grad,) = torch.autograd.grad(logits[0, target], acts)
    return layer, acts.detach()[0], grad[0]


def _upsample(cam: torch.Tensor, size: int) -> np.ndarray:
    up = F.interpolate(cam[None, None], size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy()


def gradcam(clf, x, target: int, layer: str | None = None) -> Attribution:
    name, acts, grad = _layer_and_grad(clf, x, target, layer)
    weights = grad.mean(dim=(1, 2))  # (C,)
    cam = torch.relu((weights[:, None, None] * acts).sum(dim=0))
    raw = _upsample(cam, x.shape[-1])
    return Attribution(_normalise(raw), raw, {"layer": name, "layer_size": list(acts.shape[1:])})


def gradcam_plus_plus(clf, x, target: int, layer: str | None = None) -> Attribution:
    name, acts, grad = _layer_and_grad(clf, x, target, layer)
    # With score = exp(logit), the higher derivatives are powers of the first (the paper's eq. 19).
    g2, g3 = grad.pow(2), grad.pow(3)
    denom = 2 * g2 + (acts.sum(dim=(1, 2), keepdim=True) * g3)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * torch.relu(grad)).sum(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * acts).sum(dim=0))
    raw = _upsample(cam, x.shape[-1])
    return Attribution(_normalise(raw), raw, {"layer": name, "layer_size": list(acts.shape[1:])})


def occlusion(clf, x, target: int, window: int = 32, stride: int = 16, fill: float = 0.5,
              batch: int = 16) -> Attribution:
    """Slide a ``window``² patch of value ``fill`` with ``stride``; each pixel's value is the
    mean drop in target probability over the patches that covered it."""
    size = x.shape[-1]
    if not 1 <= window <= size:
        raise ValueError(f"--window {window}: must be between 1 and the input size {size}")
    if stride < 1:
        raise ValueError("--stride must be at least 1")
    starts = list(range(0, max(size - window, 0) + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)  # cover the bottom/right edge too
    boxes = [(y, x0) for y in starts for x0 in starts]
    with torch.no_grad():
        base = float(torch.softmax(clf(x), dim=1)[0, target])
        drops = []
        for i in range(0, len(boxes), batch):
            chunk = boxes[i:i + batch]
            xs = x.repeat(len(chunk), 1, 1, 1)
            for j, (y, x0) in enumerate(chunk):
                xs[j, :, y:y + window, x0:x0 + window] = fill
            p = torch.softmax(clf(xs), dim=1)[:, target]
            drops.extend((base - p).tolist())
    total = np.zeros((size, size), np.float64)
    count = np.zeros((size, size), np.float64)
    for (y, x0), d in zip(boxes, drops):
        total[y:y + window, x0:x0 + window] += d
        count[y:y + window, x0:x0 + window] += 1
    raw = (total / np.maximum(count, 1)).astype(np.float32)
    heat = np.clip(raw / raw.max(), 0, 1) if raw.max() > 0 else np.zeros_like(raw)
    return Attribution(heat, raw, {"window": window, "stride": stride, "patches": len(boxes),
                                   "target_score": round(base, 6),
                                   "max_drop": round(float(max(drops)), 6)})


def attribute(method: str, clf, x, target: int, *, layer: str | None = None, samples: int = 24,
              noise: float = 0.15, steps: int = 128, window: int = 32, stride: int = 16,
              seed: int = 0) -> Attribution:
    if method == "saliency":
        return saliency(clf, x, target)
    if method == "smoothgrad":
        return smoothgrad(clf, x, target, samples=samples, noise=noise, seed=seed)
    if method == "integrated-gradients":
        return integrated_gradients(clf, x, target, steps=steps)
    if method == "guided-backprop":
        return guided_backprop(clf, x, target)
    if method == "gradcam":
        return gradcam(clf, x, target, layer)
    if method == "gradcam++":
        return gradcam_plus_plus(clf, x, target, layer)
    if method == "occlusion":
        return occlusion(clf, x, target, window=window, stride=stride)
    raise ValueError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
