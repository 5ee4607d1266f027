"""The model wrapper that owns normalisation, so both backends and all jobs share it.

``Normalized(net, mean, std)`` accepts either
  * ``uint8`` pictures ``(B, H, W, 3)`` RGB — what the inference pipeline feeds, and what
    exported ONNX files take (4× less data to move than float, and no numpy pass over it); or
  * ``float`` pixels ``(B, 3, H, W)`` in [0, 1] — what gradient jobs (saliency, attacks)
    perturb, so that perturbations live in pixel space;
and applies ``(x - mean) / std`` before the network. ``.net`` is the bare network.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalized(nn.Module):
    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / std_t, persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor):
        """``extra`` inputs (e.g. a detector's NMS thresholds) pass through to ``net``."""
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).to(self.scale.dtype) * (1.0 / 255.0)
        else:
            x = x.to(self.scale.dtype)
        return self.net(x * self.scale + self.shift, *extra)
