"""Choosing where to run: ``--device auto|cpu|cuda[:N]|mps``.

``auto`` asks the chosen backend what really works (ONNX Runtime's CUDA provider with an NVIDIA
GPU present, or torch.cuda / MPS for torch), without importing torch for the ONNX path.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass


class DeviceError(Exception):
    pass


@dataclass(frozen=True)
class Device:
    kind: str  # "auto" | "cpu" | "cuda" | "mps"
    index: int = 0

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind


def parse_device(text: str) -> Device:
    t = (text or "auto").strip().lower()
    if t in ("auto", "cpu", "mps"):
        return Device(t)
    m = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?|(\d+)", t)
    if m:
        return Device("cuda", int(m.group(1) or m.group(2) or 0))
    raise DeviceError(f"--device {text!r}: expected auto, cpu, cuda, cuda:N or mps")


def nvidia_gpu_present() -> bool:
    """Cheap check for an NVIDIA driver and device, without importing any framework."""
    if sys.platform.startswith("linux"):
        return os.path.exists("/dev/nvidia0") or os.path.isdir("/proc/driver/nvidia/gpus")
    return sys.platform == "win32"  # let the provider itself decide there


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def torch_device(device: Device):
    """Resolve ``device`` for torch, failing clearly when it is not usable."""
    import torch

    if device.kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: torch cannot use CUDA on this machine "
                              "(no GPU, driver or CUDA build of torch)")
        if device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", device.index)
    if device.kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    return torch.device("cpu")
