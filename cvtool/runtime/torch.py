"""The torch runner: eager PyTorch inference (and the path for gradients)."""

from __future__ import annotations

import numpy as np

from cvtool.runtime.device import Device, DeviceError, torch_device


class TorchRunner:
    backend = "torch"

    def __init__(self, module, device: Device, threads: int | None = None,
                 allow_cpu_fallback: bool = False):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.note = None
        try:
            self.torch_device = torch_device(device)
        except DeviceError as e:
            if not (allow_cpu_fallback and device.kind == "cuda"):
                raise
            self.torch_device = torch.device("cpu")
            self.note = f"{e}; running on the CPU as --allow-cpu-fallback allows"
        self.module = module.eval().to(self.torch_device)
        self.device = str(self.torch_device)
        self.provider = f"torch-{self.torch_device.type}"

    def __call__(self, batch: np.ndarray, extra: dict | None = None) -> np.ndarray:
        """uint8 ``(B, H, W, 3)`` (or float ``(B, 3, H, W)`` in [0, 1]) → output as numpy;
        ``extra`` further inputs in the module's order (e.g. a detector's NMS thresholds)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.torch_device, non_blocking=True)
            more = [torch.from_numpy(np.asarray(v)).to(self.torch_device) for v in (extra or {}).values()]
            return self.module(x, *more).float().cpu().numpy()
