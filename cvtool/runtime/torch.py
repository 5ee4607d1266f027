"""The torch runner: eager PyTorch inference (and the path for gradients)."""

from __future__ import annotations

import numpy as np

from cvtool.runtime.device import Device, torch_device


class TorchRunner:
    backend = "torch"

    def __init__(self, module, device: Device, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.torch_device = torch_device(device)
        self.module = module.eval().to(self.torch_device)
        self.device = str(self.torch_device)
        self.provider = f"torch-{self.torch_device.type}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(B, H, W, 3)`` (or float ``(B, 3, H, W)`` in [0, 1]) → output as numpy."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.torch_device, non_blocking=True)
            return self.module(x).float().cpu().numpy()
