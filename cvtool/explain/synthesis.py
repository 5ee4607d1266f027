"""Pictures made by gradient ascent on the input: what a classifier has learnt, seen from inside.

* :func:`class_model` — an image the network calls a given class, grown from noise (Simonyan,
  Vedaldi & Zisserman 2014, "Deep inside convolutional networks"), kept natural-looking by the
  regularisers of Yosinski et al. 2015 ("Understanding neural networks through deep
  visualization"): L2 decay towards grey, a periodic Gaussian blur and random jitter.
* :func:`deepdream` — a photo whose features at one layer are amplified, over several octaves
  (Mordvintsev, Olah & Tyka 2015).
* :func:`invert` — an image reconstructed from noise so that its features at one layer match a
  photo's, with a total-variation prior (Mahendran & Vedaldi 2015, "Understanding deep image
  representations by inverting them").
* :func:`style_transfer` — the content of one photo in the style of another, matching Gram
  matrices of feature maps (Gatys, Ecker & Bethge 2016), on the classifier's own features.

Every method optimises float pixels ``(1, 3, H, W)`` in [0, 1] through the model wrapper (which
normalises), keeps them in [0, 1], runs on ``clf.device`` and is deterministic for a given
``seed`` (all randomness comes from one CPU :class:`torch.Generator`). The scores reported as
``*_end`` are measured on the 8-bit picture that is returned, i.e. on what gets saved.
``progress(step, total)``, if given, is called after every optimisation step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from cvtool.explain.layers import LayerError, find_layer, layer_table

Progress = Callable[[int, int], None] | None

# Module types counted as activations when layers are picked automatically.
_ACTIVATIONS = ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU", "ELU", "Mish", "PReLU",
                "Hardtanh", "Sigmoid", "Tanh")


@dataclass
class SynthResult:
    image: np.ndarray  # (H, W, 3) uint8 RGB, the picture to save
    info: dict = field(default_factory=dict)  # JSON-serialisable record fields
    array: np.ndarray | None = None  # float32 (H, W, 3) in [0, 1], the raw optimised pixels


# ----------------------------------------------------------------------------------------------
# shared pieces


class _Stop(Exception):
    """Raised by a hook once every wanted layer has produced its output: the rest of the forward
    pass is not needed."""


class _Tap:
    """``tap(x)`` → ``{layer: output}`` for float pixels ``x`` in [0, 1], with the graph kept.

    The forward pass stops after the last wanted layer has been called for the last time (the
    first pass runs in full to learn how often each layer is called: a shared activation module
    may run several times, and, as with :func:`cvtool.explain.layers.capture`, its last output is
    the one taken)."""

    def __init__(self, clf, layers: list[str]):
        self.clf = clf
        self.names = list(dict.fromkeys(layers))
        self.modules = {n: find_layer(clf.net, n) for n in self.names}
        self.calls: dict[str, int] | None = None
        self._seen: dict[str, int] = {}
        self._out: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name):
        def hook(mod, args, output):
            self._seen[name] = self._seen.get(name, 0) + 1
            self._out[name] = output
            if self.calls is not None and all(self._seen.get(n, 0) >= self.calls[n] for n in self.names):
                raise _Stop
        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._seen, self._out = {}, {}
        try:
            self.clf(x)
        except _Stop:
            pass
        if self.calls is None:
            missing = [n for n in self.names if n not in self._out]
            if missing:
                raise LayerError(f"--layer {missing[0]!r} is not used in this model's forward pass; "
                                 "`cvtool visualize layers` lists the layers that are")
            for n in self.names:
                out = self._out[n]
                if not torch.is_tensor(out) or out.dim() < 2:
                    raise LayerError(f"--layer {n!r} does not output a feature tensor "
                                     f"({type(out).__name__}); pick another layer")
            self.calls = dict(self._seen)
        return {n: self._out[n].float() for n in self.names}


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] from ``gen``."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _jitter(x: torch.Tensor, gen: torch.Generator, jitter: int) -> torch.Tensor:
    """``x`` rolled by a random offset of up to ``jitter`` pixels each way (the gradient rolls
    back through ``torch.roll``)."""
    if jitter <= 0:
        return x
    dy, dx = _randint(gen, -jitter, jitter), _randint(gen, -jitter, jitter)
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflected borders."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    down = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=down)


def _working_size(h: int, w: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) with the longer side at most ``max_size`` (never enlarged)."""
    if not max_size or max(h, w) <= max_size:
        return h, w
    s = max_size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _photo(clf, rgb: np.ndarray, max_size: int | None) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` → float ``(1, 3, h, w)`` in [0, 1] on ``clf.device``, the longer side
    shrunk (area averaging) to at most ``max_size``."""
    rgb = _check_rgb(rgb)
    h, w = _working_size(*rgb.shape[:2], max_size)
    if (h, w) != rgb.shape[:2]:
        import cv2

        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return clf.to_tensor(rgb)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB picture, got {rgb.dtype} {rgb.shape}")
    return rgb


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    a = x.detach()[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(np.rint(a * 255).astype(np.uint8))


def _quantised(clf, image: np.ndarray) -> torch.Tensor:
    """The saved 8-bit picture back as float pixels, to measure what the user gets."""
    return clf.to_tensor(image)


def _finite_grad(x: torch.Tensor) -> torch.Tensor:
    g = x.grad
    if g is None:
        return torch.zeros_like(x)
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def _result(x: torch.Tensor, info: dict) -> SynthResult:
    image = _to_uint8(x)
    array = np.ascontiguousarray(x.detach()[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32))
    return SynthResult(image=image, info=info, array=array)


def _r(v: float, n: int = 6) -> float | None:
    """A float for a JSON record: rounded, and None where it is not finite."""
    v = float(v)
    return float(round(v, n)) if math.isfinite(v) else None


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation (β = 1, smoothed): mean over pixels of the colour gradient's length."""
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    return torch.sqrt(dx.pow(2) + dy.pow(2) + 1e-6).sum(1).mean()


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a − b‖² / ‖b‖²: a loss on features that means the same for any layer or model."""
    return (a - b).pow(2).sum() / b.pow(2).sum().clamp_min(1e-12)


class _NonFinite(RuntimeError):
    pass


def _check(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise _NonFinite(f"the loss became {float(loss.detach())} at step {step}")


# ----------------------------------------------------------------------------------------------
# automatic layer choice


def _spatial_rows(clf) -> list[dict]:
    """Layers with a feature map, in forward order, up to where maps start growing again (e.g.
    VGG's adaptive pooling back to 7×7, or a decoder)."""
    rows, smallest = [], None
    for r in layer_table(clf.net, clf.input_size):
        s = r["shape"]
        if s is None or len(s) != 4 or s[2] <= 1:
            continue
        if smallest is not None and s[3] > smallest:
            break
        smallest = s[3] if smallest is None else min(smallest, s[3])
        rows.append(r)
    return rows


def default_layer(clf, method: str = "deepdream") -> str:
    """A sensible ``--layer`` for ``deepdream`` (a layer at 1/16 of the input size: textures and
    object parts) or ``invert`` (a layer at 1/8: enough detail left to reconstruct from)."""
    if method not in ("deepdream", "invert"):
        raise ValueError(f"no default layer for {method!r}")
    factor = 16 if method == "deepdream" else 8
    return _layer_at(clf, factor, last=True)


def _layer_at(clf, factor: int, last: bool) -> str:
    """The first/last activation (else any layer) whose feature map is ``input_size / factor``
    wide; the nearest larger map if none is exactly that size."""
    rows = _spatial_rows(clf)
    if not rows:
        raise LayerError("this model has no layer with a spatial feature map; pass --layer")
    want = clf.input_size / factor
    widths = sorted({r["shape"][3] for r in rows}, reverse=True)
    fits = [w for w in widths if w >= want * 0.99]
    width = fits[-1] if fits else widths[0]
    at = [r for r in rows if r["shape"][3] == width]
    acts = [r for r in at if r["type"] in _ACTIVATIONS] or at
    return (acts[-1] if last else acts[0])["name"]


def default_style_layers(clf) -> tuple[list[str], str]:
    """``(style_layers, content_layer)`` chosen from the layer table, in the spirit of Gatys et al.
    on VGG (relu1_1 … relu5_1 for style, relu4_2 for content): for style, the first activation at
    each feature-map resolution from the input size down to 1/16; for content, the last
    activation at 1/8 of the input size."""
    rows = _spatial_rows(clf)
    if not rows:
        raise LayerError("this model has no layer with a spatial feature map; pass the layers")
    size = clf.input_size
    style = []
    for width in sorted({r["shape"][3] for r in rows}, reverse=True):
        if width < size / 16 * 0.99:
            continue
        at = [r for r in rows if r["shape"][3] == width]
        acts = [r for r in at if r["type"] in _ACTIVATIONS] or at
        style.append(acts[0]["name"])
    return style[:5], _layer_at(clf, 8, last=True)


# ----------------------------------------------------------------------------------------------
# class model visualisation


def class_model(clf, target: int, *, steps: int = 200, lr: float = 0.05, l2: float = 0.002,
                blur_every: int = 4, blur_sigma: float = 0.7, jitter: int = 8,
                size: int | None = None, seed: int = 0, octaves: int = 2, octave_scale: float = 1.6,
                scale_jitter: float = 0.1, progress: Progress = None) -> SynthResult:
    """Gradient ascent on the pre-softmax score of class ``target`` from grey-plus-noise pixels.

    Each step: roll the picture by a random offset of up to ``jitter`` pixels and rescale it by a
    random factor within ±``scale_jitter`` (transformation robustness), take an Adam step
    (learning rate ``lr``, in pixel units) up the class score, clip to [0, 1], shrink towards
    grey by a factor ``1 − l2`` (L2 decay); every ``blur_every`` steps blur by ``blur_sigma``
    pixels. The last tenth of the steps run without jitter, which settles the picture the network
    will see when it is saved. ``octaves`` > 1 starts at ``size / octave_scale**(octaves − 1)``
    and enlarges the picture between stages, which gives the object larger, more coherent
    structure; the steps are shared out over the octaves (more to the larger). ``size`` defaults
    to the model's input size.
    """
    target = int(target)
    if not 0 <= target < len(clf.labels):
        raise ValueError(f"target {target}: class ids run from 0 to {len(clf.labels) - 1}")
    size = int(size or clf.input_size)
    steps, octaves = max(1, int(steps)), max(1, int(octaves))
    gen = _generator(seed)
    dev = clf.device
    sizes = [max(16, round(size / octave_scale ** k)) for k in reversed(range(octaves))]
    per = _share(steps, octaves)
    polish_steps = steps // 10

    x0 = (0.5 + 0.1 * torch.randn(1, 3, sizes[0], sizes[0], generator=gen)).clamp(0, 1).to(dev)
    with torch.no_grad():
        start = clf(_resize(x0, (size, size))).float()
    logit_start = float(start[0, target])
    prob_start = float(torch.softmax(start, 1)[0, target])

    x = x0.clone()
    done, loss_start, loss_end, warning = 0, None, None, None
    try:
        for s, n in zip(sizes, per):
            x = _resize(x.detach(), (s, s)).clamp(0, 1).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for i in range(n):
                opt.zero_grad(set_to_none=True)
                polish = done >= steps - polish_steps
                inp = x if polish else _jitter(x, gen, jitter)
                if scale_jitter > 0 and not polish:
                    f = 1 + scale_jitter * (2 * float(torch.rand(1, generator=gen)) - 1)
                    inp = _resize(inp, (round(s * f), round(s * f)))
                score = clf(inp)[0, target].float()
                _check(score, done)
                (-score).backward()
                x.grad = _finite_grad(x)
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                    if l2 > 0:
                        x.sub_(0.5).mul_(1 - l2).add_(0.5)
                    if blur_every and blur_sigma > 0 and (i + 1) % blur_every == 0 and i + 1 < n:
                        x.copy_(_gaussian_blur(x, blur_sigma))
                loss_start = -float(score.detach()) if loss_start is None else loss_start
                loss_end = -float(score.detach())
                done += 1
                if progress:
                    progress(done, steps)
    except _NonFinite as e:
        warning = f"stopped early: {e}"

    x = _resize(x.detach(), (size, size)).clamp(0, 1)
    res = _result(x, {})
    with torch.no_grad():
        end = clf(_quantised(clf, res.image)).float()
    p = torch.softmax(end, 1)[0]
    top = int(p.argmax())
    res.info = {
        "target": clf.label_record(target),
        "steps": done, "size": [size, size], "octaves": octaves, "seed": int(seed),
        "target_logit_start": _r(logit_start, 4), "target_logit_end": _r(end[0, target], 4),
        "target_score_start": _r(prob_start), "target_score_end": _r(p[target]),
        "loss_start": _r(loss_start if loss_start is not None else -logit_start, 4),
        "loss_end": _r(loss_end if loss_end is not None else -logit_start, 4),
        "top": clf.label_record(top, float(p[top]) if math.isfinite(float(p[top])) else None),
        "settings": {"lr": lr, "l2": l2, "blur_every": blur_every, "blur_sigma": blur_sigma,
                     "jitter": jitter, "scale_jitter": scale_jitter, "octave_scale": octave_scale},
    }
    if warning:
        res.info["warning"] = warning
    return res


def _share(total: int, parts: int) -> list[int]:
    """``total`` steps shared out over ``parts`` stages, the later (larger) stages getting more."""
    weights = [2 ** k for k in range(parts)]
    raw = [total * w / sum(weights) for w in weights]
    out = [int(math.floor(v)) for v in raw]
    for k in sorted(range(parts), key=lambda k: raw[k] - out[k], reverse=True)[: total - sum(out)]:
        out[k] += 1
    return out


# ----------------------------------------------------------------------------------------------
# DeepDream


def deepdream(clf, rgb: np.ndarray, layer: str, *, octaves: int = 4, octave_scale: float = 1.4,
              steps: int = 10, lr: float = 0.015, jitter: int = 16, max_size: int = 512, seed: int = 0,
              progress: Progress = None) -> SynthResult:
    """Amplify whatever ``layer`` sees in ``rgb``: normalised gradient ascent on the mean square
    of its activations, ``steps`` steps per octave, from the smallest octave (the picture shrunk
    by ``octave_scale**(octaves − 1)``) up to the working size (longer side ≤ ``max_size``); the
    detail grown at each octave is enlarged and carried to the next. Each step moves pixels by
    ``lr`` on average (gradient divided by its mean absolute value) after a random roll of up to
    ``jitter`` pixels."""
    base = _photo(clf, rgb, max_size)
    h, w = base.shape[-2:]
    octaves, steps = max(1, int(octaves)), max(1, int(steps))
    sizes = []
    for k in reversed(range(octaves)):
        hw = (max(1, round(h / octave_scale ** k)), max(1, round(w / octave_scale ** k)))
        if min(hw) >= 32 or k == 0:
            sizes.append(hw)
    total = steps * len(sizes)
    gen = _generator(seed)

    def norm(acts: torch.Tensor) -> torch.Tensor:
        return acts.pow(2).mean()

    warning = None
    done = 0
    detail = None
    x = base_s = base
    with _Tap(clf, [layer]) as tap:
        with torch.no_grad():
            start = float(norm(tap(base)[layer]).sqrt())
        try:
            for hw in sizes:
                base_s = _resize(base, hw)
                detail = torch.zeros_like(base_s) if detail is None else _resize(detail, hw)
                x = (base_s + detail).clamp(0, 1)
                j = min(jitter, max(0, min(hw) // 4))
                for _ in range(steps):
                    x = x.detach().requires_grad_(True)
                    obj = norm(tap(_jitter(x, gen, j))[layer])
                    _check(obj, done)
                    obj.backward()
                    g = _finite_grad(x)
                    with torch.no_grad():
                        x = (x + lr * g / g.abs().mean().clamp_min(1e-12)).clamp(0, 1)
                    done += 1
                    if progress:
                        progress(done, total)
                detail = x.detach() - base_s
        except _NonFinite as e:
            warning = f"stopped early: {e}"
        # the detail grown so far on the full-size photo (the last octave is the full size)
        x = (base + _resize(x.detach() - base_s, (h, w))).clamp(0, 1)
        res = _result(x, {})
        with torch.no_grad():
            end = float(norm(tap(_quantised(clf, res.image))[layer]).sqrt())
    res.info = {
        "layer": layer, "steps": done, "octaves": len(sizes), "size": [int(w), int(h)], "seed": int(seed),
        "activation_start": _r(start), "activation_end": _r(end),
        "activation_gain": _r(end / max(start, 1e-12), 4),
        "settings": {"octave_scale": octave_scale, "steps_per_octave": steps, "lr": lr,
                     "jitter": jitter, "max_size": max_size},
    }
    if warning:
        res.info["warning"] = warning
    return res


# ----------------------------------------------------------------------------------------------
# feature inversion


def invert(clf, rgb: np.ndarray, layer: str, *, steps: int = 200, lr: float = 0.05,
           tv_weight: float = 0.05, jitter: int = 2, seed: int = 0,
           progress: Progress = None) -> SynthResult:
    """Reconstruct, from grey-plus-noise pixels, an image whose ``layer`` features match those of
    ``clf.prepare(rgb)``: Adam (``lr`` in pixel units) on ‖φ(x) − φ₀‖² / ‖φ₀‖² +
    ``tv_weight`` · TV(x), where TV is the mean length of the image gradient (the β = 1 total
    variation prior of Mahendran & Vedaldi), with random rolls of up to ``jitter`` pixels (the
    photo is rolled alike, so the target moves with it) during the first three quarters of the
    steps, and a cosine-decaying learning rate.
    ``feature_loss_*`` is the relative loss ‖φ(x) − φ₀‖² / ‖φ₀‖²."""
    src = clf.prepare(_check_rgb(rgb))
    steps = max(1, int(steps))
    gen = _generator(seed)
    x = (0.5 + 0.1 * torch.randn(src.shape, generator=gen)).clamp(0, 1).to(clf.device)
    warning = None
    with _Tap(clf, [layer]) as tap:
        with torch.no_grad():
            target = tap(src)[layer].detach()
            feat_start = float(_rel(tap(x)[layer], target))
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
        done = 0
        try:
            for i in range(steps):
                opt.zero_grad(set_to_none=True)
                if jitter > 0 and i < steps - steps // 4:
                    dy, dx = _randint(gen, -jitter, jitter), _randint(gen, -jitter, jitter)
                else:
                    dy = dx = 0
                if dy or dx:
                    with torch.no_grad():
                        want = tap(torch.roll(src, shifts=(dy, dx), dims=(2, 3)))[layer].detach()
                else:
                    want = target
                feats = tap(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))[layer]
                loss = _rel(feats, want) + tv_weight * _tv(x)
                _check(loss, done)
                loss.backward()
                x.grad = _finite_grad(x)
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                done += 1
                if progress:
                    progress(done, steps)
        except _NonFinite as e:
            warning = f"stopped early: {e}"
        res = _result(x.detach(), {})
        with torch.no_grad():
            q = _quantised(clf, res.image)
            feat_end = float(_rel(tap(q)[layer], target))
            tv_end = float(_tv(q))
    res.info = {
        "layer": layer, "steps": done, "size": [int(src.shape[-1]), int(src.shape[-2])], "seed": int(seed),
        "feature_loss_start": _r(feat_start), "feature_loss_end": _r(feat_end),
        "tv_end": _r(tv_end), "tv_source": _r(_tv(src)),
        "settings": {"lr": lr, "tv_weight": tv_weight, "jitter": jitter},
    }
    if warning:
        res.info["warning"] = warning
    return res


# ----------------------------------------------------------------------------------------------
# style transfer


def _gram(f: torch.Tensor) -> torch.Tensor:
    """``(1, C, H, W)`` → ``(C, C)`` Gram matrix, averaged over positions (size-independent)."""
    if f.dim() == 2:
        f = f[:, :, None, None]
    m = f.reshape(f.shape[1], -1)
    return (m @ m.t()) / m.shape[1]


def style_transfer(clf, content_rgb: np.ndarray, style_rgb: np.ndarray, *,
                   content_layer: str | None = None, style_layers: list[str] | None = None,
                   steps: int = 150, lr: float = 0.02, content_weight: float = 1.0,
                   style_weight: float = 100.0, tv_weight: float = 0.01, max_size: int = 384,
                   seed: int = 0, progress: Progress = None) -> SynthResult:
    """Gatys et al.: from the content picture (longer side shrunk to ≤ ``max_size``), Adam steps
    (``lr`` in pixel units) on ``content_weight`` · ‖φc(x) − φc(content)‖²/‖φc(content)‖²
    + ``style_weight`` · mean over style layers of ‖G(x) − G(style)‖²/‖G(style)‖²
    + ``tv_weight`` · TV(x), G being position-averaged Gram matrices, so that the weights mean
    the same on any model.
    The style picture is shrunk to the same longer side at most. Layers default to
    :func:`default_style_layers`. Nothing here is random (the start is the content picture);
    ``seed`` is only recorded."""
    content = _photo(clf, content_rgb, max_size)
    h, w = content.shape[-2:]
    style = _photo(clf, style_rgb, max(h, w))
    if style_layers is None or content_layer is None:
        auto_style, auto_content = default_style_layers(clf)
        style_layers = list(style_layers) if style_layers is not None else auto_style
        content_layer = content_layer or auto_content
    style_layers = list(style_layers)
    if not style_layers:
        raise LayerError("style transfer needs at least one style layer")
    steps = max(1, int(steps))
    warning = None

    with _Tap(clf, style_layers + [content_layer]) as tap:
        with torch.no_grad():
            grams = {n: _gram(f) for n, f in tap(style).items() if n in style_layers}
            content_target = tap(content)[content_layer].detach()

        def losses(x):
            feats = tap(x)
            s = sum(_rel(_gram(feats[n]), grams[n]) for n in style_layers) / len(style_layers)
            c = _rel(feats[content_layer], content_target)
            return s, c

        x = content.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        style_start = content_start = None
        done = 0
        try:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                s, c = losses(x)
                loss = style_weight * s + content_weight * c + tv_weight * _tv(x)
                _check(loss, done)
                if style_start is None:
                    style_start, content_start = float(s.detach()), float(c.detach())
                loss.backward()
                x.grad = _finite_grad(x)
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                done += 1
                if progress:
                    progress(done, steps)
        except _NonFinite as e:
            warning = f"stopped early: {e}"
        res = _result(x.detach(), {})
        with torch.no_grad():
            s_end, c_end = losses(_quantised(clf, res.image))
            if style_start is None:
                style_start, content_start = float(s_end), float(c_end)
    res.info = {
        "style_layers": style_layers, "content_layer": content_layer, "steps": done,
        "size": [int(w), int(h)], "seed": int(seed),
        "style_loss_start": _r(style_start), "style_loss_end": _r(s_end),
        "content_loss_start": _r(content_start), "content_loss_end": _r(c_end),
        "settings": {"lr": lr, "content_weight": content_weight, "style_weight": style_weight,
                     "tv_weight": tv_weight, "max_size": max_size},
    }
    if warning:
        res.info["warning"] = warning
    return res
