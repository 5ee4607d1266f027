"""The small end of the model ladder: kNN, a linear classifier, an MLP and a small CNN.

These have no pretrained weights: ``cvtool train --model NAME`` trains them, and the checkpoint
it writes records the architecture's keyword arguments (``arch_kwargs``) next to the weights, so
``--model runs/NAME/best.pt`` rebuilds exactly the trained network.

Every network here takes what :class:`~cvtool.models.wrap.Normalized` hands on: a normalised
float tensor ``(B, 3, H, W)``. Two conventions make a photo reproduce the training input:

* ``in_channels=1`` (grey data such as Fashion-MNIST or the 8×8 digits): the first layer turns
  RGB into luma, ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601). Grey training pictures arrive as
  three equal channels, for which this is the identity; a colour photo becomes the grey picture
  a scanner would make. The mean/std of grey data are equal over channels, so converting after
  normalising equals normalising the grey picture.
* ``size`` is the training input size. The classifier parts see a fixed grid: an input of
  another size is average-pooled to that grid (the identity at the trained size), so the nets
  also run, sensibly, on other sizes.

Tensor shapes: input ``(B, 3, H, W)`` normalised; output logits ``(B, num_classes)`` (kNN:
log vote shares, so that softmax gives the vote shares back).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

LUMA = (0.299, 0.587, 0.114)


class ToGrey(nn.Module):
    """``(B, 3, H, W)`` → ``(B, 1, H, W)`` luma (BT.601); 1-channel input passes through."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        return (x * self.weight.to(x.dtype)).sum(1, keepdim=True)


def _grey_pre_hook(module: nn.Module, args: tuple):
    x, *rest = args
    if x.shape[1] == 3:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    return (x, *rest)


def add_grey_input(net: nn.Module) -> nn.Module:
    """Make a 3-channel network (e.g. a registry ResNet trained on grey data) see grey: RGB input
    is replaced by its luma in all three channels before the first layer. A forward pre-hook, so
    the state_dict keys stay those of the bare architecture; the hook is traced into ONNX."""
    net.register_forward_pre_hook(_grey_pre_hook)
    net.cvtool_grey_input = True
    return net


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool to ``size``×``size`` when the input is of another size (identity otherwise)."""
    if tuple(x.shape[-2:]) != (size, size):
        x = F.adaptive_avg_pool2d(x, size)
    return x


def _input(in_channels: int) -> nn.Module:
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), not {in_channels}")
    return ToGrey() if in_channels == 1 else nn.Identity()


class LinearClassifier(nn.Module):
    """Scores = W·x + b on the raw (normalised) pixels: the course's linear classifier. Trained
    with softmax cross-entropy or the multiclass hinge (SVM) loss."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, size: int = 32):
        super().__init__()
        self.size = int(size)
        self.grey = _input(in_channels)
        self.fc = nn.Linear(in_channels * self.size * self.size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(_fit(self.grey(x), self.size).flatten(1))


class MLP(nn.Module):
    """Fully connected layers with ReLU (and dropout) between them, then a linear head."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, size: int = 32,
                 hidden: Sequence[int] = (256,), dropout: float = 0.2):
        super().__init__()
        self.size = int(size)
        self.grey = _input(in_channels)
        layers: list[nn.Module] = []
        d = in_channels * self.size * self.size
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            d = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(_fit(self.grey(x), self.size).flatten(1)))


class SmallCNN(nn.Module):
    """Blocks of ``depth`` × (3×3 conv → batch norm → ReLU) followed by 2×2 max pooling, one
    block per entry of ``widths``; then dropout → fully connected (``hidden``) → ReLU → dropout
    → linear head. The feature map before the classifier is ``size / 2**len(widths)`` square."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, size: int = 32,
                 widths: Sequence[int] = (32, 64), depth: int = 1, hidden: int = 128,
                 dropout: float = 0.3):
        super().__init__()
        self.size = int(size)
        self.grid = self.size >> len(widths)
        if self.grid < 1:
            raise ValueError(f"a {size}x{size} input is too small for {len(widths)} pooling blocks")
        self.grey = _input(in_channels)
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            for _ in range(int(depth)):
                layers += [nn.Conv2d(c, int(w), 3, padding=1, bias=False), nn.BatchNorm2d(int(w)),
                           nn.ReLU(inplace=True)]
                c = int(w)
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(float(dropout)), nn.Linear(c * self.grid * self.grid, int(hidden)),
            nn.ReLU(inplace=True), nn.Dropout(float(dropout)), nn.Linear(int(hidden), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(_fit(self.features(self.grey(x)), self.grid))


def pairwise_distances(q: torch.Tensor, r: torch.Tensor, p: int, r_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D)`` × ``(N, D)`` → ``(B, N)`` distances: squared L2 (``p=2``, one matrix product;
    the ranking equals L2's) or L1 (``p=1``)."""
    if p == 2:
        if r_sq is None:
            r_sq = (r * r).sum(1)
        return (q * q).sum(1, keepdim=True) - 2.0 * (q @ r.T) + r_sq.unsqueeze(0)
    if p == 1:
        return torch.cdist(q, r, p=1.0)
    raise ValueError(f"distance p={p}: expected 1 (L1) or 2 (L2)")


def vote(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, k)`` labels of the nearest first → ``(B, C)`` vote shares; a tie goes to the class
    whose members are nearer (each vote carries a tiny bonus that falls with its rank)."""
    k = neighbour_labels.shape[1]
    classes = torch.arange(num_classes, device=neighbour_labels.device)
    hits = (neighbour_labels.unsqueeze(-1) == classes).to(torch.float32)  # (B, k, C)
    weight = 1.0 + 1e-3 * (k - torch.arange(k, device=hits.device, dtype=torch.float32)) / k
    votes = (hits * weight.view(1, k, 1)).sum(1)
    return votes / votes.sum(1, keepdim=True)


class KNN(nn.Module):
    """k nearest neighbours on normalised pixels. The training pictures are buffers (uint8,
    with their per-channel mean/std), so the checkpoint holds the whole "model"."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, size: int = 32, n_train: int = 1,
                 k: int = 1, p: int = 2):
        super().__init__()
        self.size, self.k, self.p, self.num_classes = int(size), int(k), int(p), int(num_classes)
        self.grey = _input(in_channels)
        self.register_buffer("train_x", torch.zeros(int(n_train), in_channels, self.size, self.size, dtype=torch.uint8))
        self.register_buffer("train_y", torch.zeros(int(n_train), dtype=torch.int64))
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        self._ref: tuple | None = None

    def references(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pictures as normalised ``(N, D)`` float features and their squared norms."""
        ref = ((self.train_x.to(torch.float32) / 255.0 - self.mean.view(1, -1, 1, 1))
               / self.std.view(1, -1, 1, 1)).flatten(1)
        return ref, (ref * ref).sum(1)

    def _load_from_state_dict(self, *args, **kwargs):
        self._ref = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = _fit(self.grey(x), self.size).flatten(1).to(torch.float32)
        if torch.onnx.is_in_onnx_export():
            ref, ref_sq = self.references()  # computed in the graph from the uint8 constants
        else:
            if self._ref is None or self._ref[0].device != q.device:
                self._ref = self.references()
            ref, ref_sq = self._ref
        d = pairwise_distances(q, ref, self.p, ref_sq)
        k = min(self.k, ref.shape[0])
        idx = d.topk(k, dim=1, largest=False).indices
        return torch.log(vote(self.train_y[idx], self.num_classes) + 1e-6)


def _ints(v) -> tuple[int, ...]:
    return tuple(int(x) for x in ((v,) if isinstance(v, int) else v))


def linear(num_classes: int = 1000, in_channels: int = 3, size: int = 32) -> LinearClassifier:
    return LinearClassifier(num_classes, in_channels, size)


def mlp(num_classes: int = 1000, in_channels: int = 3, size: int = 32, hidden=(256,),
        dropout: float = 0.2) -> MLP:
    return MLP(num_classes, in_channels, size, _ints(hidden), dropout)


def cnn(num_classes: int = 1000, in_channels: int = 3, size: int = 32, widths=(32, 64), depth: int = 1,
        hidden: int = 128, dropout: float = 0.3) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, size, _ints(widths), depth, hidden, dropout)


def knn(num_classes: int = 1000, in_channels: int = 3, size: int = 32, n_train: int = 1, k: int = 1,
        p: int = 2) -> KNN:
    return KNN(num_classes, in_channels, size, n_train, k, p)
