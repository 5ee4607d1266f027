"""The model under attack (or the one a transfer is measured on), behind one interface.

A :class:`Victim` scores 8-bit network-sized pictures ``(B, S, S, 3)`` uint8 → logits
``(B, C)``, on torch (a registry model or checkpoint; then ``grad`` is the
:class:`~cvtool.models.differentiable.GradClassifier` the white-box attacks differentiate)
or on ONNX Runtime (an ONNX file, or ``--backend onnx``; scores only, so black box only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cvtool.models.loader import LoadedModel, ModelError, load


@dataclass
class Victim:
    name: str
    labels: tuple[str, ...]
    loaded: LoadedModel
    backend: str  # "torch" | "onnxruntime"
    device: str
    grad: Any = None  # GradClassifier (torch) or None (ONNX Runtime)
    runner: Any = None  # OnnxRunner

    @property
    def input_size(self) -> int:
        return self.loaded.preprocess.crop

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S, 3)`` → logits ``(B, C)`` float32."""
        if self.runner is not None:
            return self.runner(np.ascontiguousarray(batch))
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.grad.device)
            return self.grad.module(x).float().cpu().numpy()

    def predict(self, u8: np.ndarray) -> tuple[int, float]:
        """``(class id, probability)`` for one ``(S, S, 3)`` uint8 picture."""
        z = self.scores(u8[None])[0].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        i = int(p.argmax())
        return i, float(p[i])

    def fit(self, u8: np.ndarray) -> np.ndarray:
        """A picture of another model's input size, resized to this one's (if they differ)."""
        s = self.input_size
        if u8.shape[:2] == (s, s):
            return u8
        import cv2

        interp = cv2.INTER_AREA if u8.shape[0] > s else cv2.INTER_LINEAR
        return cv2.resize(u8, (s, s), interpolation=interp)


def load_classifier_model(model: str, weights: str | None = None, option: str = "--model",
                          notify=None) -> LoadedModel:
    """Resolve ``--model`` (no torch needed yet: labels and preprocessing only); ``notify``
    hears about a weights download, as for :func:`cvtool.models.loader.load`."""
    try:
        # --eval-model has no weights option of its own (--weights is the attacked model's)
        loaded = load(model, weights, weights_option="--weights" if option == "--model" else None, option=option,
                      notify=notify)
    except ModelError as e:
        if option == "--model":
            raise
        msg = str(e)
        raise ModelError(msg.replace("--model ", f"{option} ", 1) if msg.startswith("--model ")
                         else f"{option} {model}: {msg}") from None
    if loaded.task != "classify":
        raise ModelError(f"{option} {model}: {loaded.name!r} is a {loaded.task} model; attacks need a classifier")
    return loaded


def check_backend(loaded: LoadedModel, model: str, backend: str, need_gradients: bool,
                  option: str = "--model") -> bool:
    """Whether ``loaded`` runs on ONNX Runtime; a ModelError when it cannot run as asked."""
    if backend not in ("auto", "torch", "onnx"):
        raise ModelError(f"--backend {backend!r}: expected auto, torch or onnx")
    use_onnx = loaded.kind == "onnx" or backend == "onnx"
    if use_onnx and need_gradients:
        what = "an ONNX file" if loaded.kind == "onnx" else "ONNX Runtime"
        raise ModelError(f"{option} {model}: this attack needs gradients, which {what} cannot give; use a "
                         "registry model or a `cvtool train` checkpoint on torch, or the black-box "
                         "attack `square`")
    if loaded.kind == "onnx" and backend == "torch":
        raise ModelError(f"{option} {model}: an ONNX file runs on ONNX Runtime only (--backend auto or onnx)")
    return use_onnx


def open_victim(loaded: LoadedModel, use_onnx: bool, device: str, threads: int | None,
                notify=None) -> Victim:
    """The runnable model: ONNX Runtime (scores only) or torch (scores and gradients).
    ``notify(message)`` hears about a first ONNX export. Raises ModelError/DeviceError with a
    one-line reason."""
    if use_onnx:
        from cvtool.models.weights import cache_home
        from cvtool.runtime.device import parse_device
        from cvtool.runtime.onnx import OnnxRunner

        path, fresh = loaded.onnx_path()
        if fresh and notify is not None:
            notify(f"exported {loaded.name} to ONNX once, cached at {path}")
        runner = OnnxRunner(path, parse_device(device), threads, cache_home())
        return Victim(loaded.name, loaded.labels, loaded, "onnxruntime", runner.device, runner=runner)
    from cvtool.models.differentiable import GradClassifier

    grad = GradClassifier(loaded, device, threads)
    return Victim(loaded.name, loaded.labels, loaded, "torch", str(grad.device), grad=grad)
