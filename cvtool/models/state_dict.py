"""Loading state_dicts safely (``weights_only=True`` or safetensors) and fitting them to a
network with a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

from cvtool.models.cache import WeightsError


def unreadable(path: str | os.PathLike, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in cvtool's words: one clause that
    follows ``"PATH: "``. A file with pickled code or objects in it is refused (PyTorch's long
    explanation of ``weights_only`` is not for users), a file that is no checkpoint at all is said
    to be none, and the unpickler's internals (``KeyError: 101``, a memo index) are not shown."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        return ("refused: it holds pickled Python objects or code, not just tensors, and cvtool never "
                "unpickles those (it loads with weights_only=True)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not head:
        return "empty file, not a weights file"
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip, or a legacy pickle
        return "not a PyTorch checkpoint (.pt, .pth) or a .safetensors file"
    if isinstance(exc, (KeyError, IndexError, EOFError)) or "PytorchStreamReader" in text or not text:
        return "a PyTorch checkpoint that is damaged or cut short; copy it again"
    return f"not a readable PyTorch checkpoint ({(text.splitlines() or [type(exc).__name__])[0][:160]})"


def torch_load(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings about pickle
    protocols (notes for PyTorch's developers, not for users)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(str(path), map_location="cpu", weights_only=True)


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a state_dict safely (``weights_only=True``; safetensors when the file is one).

    Accepts a bare state_dict or a checkpoint dict that holds one under ``state_dict``/``model``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch_load(path)
    except ImportError as e:
        raise WeightsError(f"{path}: cannot read this format ({e})") from None
    except Exception as e:  # pickle errors, zip errors, refused globals …
        if path.suffix == ".safetensors":  # safetensors' own errors are short and say what is wrong
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise WeightsError(f"{path}: not a loadable weights file ({first})") from None
        raise WeightsError(f"{path}: {unreadable(path, e)}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: does not contain a state_dict")
    return obj


def load_into(module, state_dict: dict, what: str) -> None:
    """``module.load_state_dict(strict=True)`` with a one-line error on mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape, e.g. {k} {tuple(state_dict[k].shape)} "
                         f"instead of {tuple(own[k].shape)}")
        raise WeightsError(f"{what}: weights do not fit the architecture (keys: {'; '.join(parts)})")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{what}: weights do not fit the architecture ({first[:200]})") from None
