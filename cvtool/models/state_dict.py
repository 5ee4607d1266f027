"""Loading state_dicts safely (``weights_only=True`` or safetensors) and fitting them to a
network with a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

from cvtool.models.cache import WeightsError


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a state_dict safely (``weights_only=True``; safetensors when the file is one).

    Accepts a bare state_dict or a checkpoint dict that holds one under ``state_dict``/``model``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError as e:
        raise WeightsError(f"{path}: cannot read this format ({e})") from None
    except Exception as e:  # pickle errors, zip errors, refused globals …
        text = str(e).strip()
        if "Weights only load failed" in text:
            why = ("it holds pickled Python objects, not just tensors; cvtool never unpickles "
                   "code (weights_only=True)")
        else:
            why = (text.splitlines() or [type(e).__name__])[0][:200]
        raise WeightsError(f"{path}: not a loadable weights file ({why})") from None
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
