"""Optimisers, learning-rate schedules with warm-up, and the two losses of the ladder.

The schedule is one small class rather than a chain of torch schedulers: the learning rate of
step ``t`` is ``lr × warmup(t) × shape(t) × plateau``, where ``shape`` is constant, step decay,
cosine or one-cycle, and ``plateau`` is the factor ReduceLROnPlateau-style decay has reached.
Its whole state is three numbers, saved in ``last.pt``, so resuming reproduces it exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cvtool.train.config import TrainConfig, TrainError


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: biases and normalisation scales (1-D
    tensors) are left undecayed, the usual practice. Frozen parameters are left out."""
    decay, no_decay = [], []
    for _, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise TrainError("nothing to train: every parameter is frozen")
    return groups


def make_optimizer(cfg: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    lr, wd, m = cfg.resolved_lr(), cfg.weight_decay, cfg.momentum
    groups = param_groups(net, wd)
    name = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=m)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=m, nesterov=True)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.99)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)  # L2 penalty added to the gradient (coupled)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)  # decoupled weight decay
    raise TrainError(f"--optimizer {name!r}: unknown")


class Schedule:
    """Learning rate per step: warm-up × shape × plateau factor (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, steps_per_epoch: int, epochs: int,
                 warmup_epochs: float = 0.0, step_size: int = 0, gamma: float = 0.1,
                 plateau_patience: int = 2, plateau_factor: float = 0.1):
        self.opt = optimizer
        self.kind = kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = self.steps_per_epoch * epochs
        self.warmup = int(round(warmup_epochs * self.steps_per_epoch))
        self.step_size = (step_size or max(1, epochs // 3)) * self.steps_per_epoch
        self.gamma = gamma
        self.plateau_patience, self.plateau_factor = plateau_patience, plateau_factor
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.t = 0
        self.plateau = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self._apply()

    def factor(self, t: int) -> float:
        f = 1.0
        if self.warmup and t < self.warmup:
            f *= (t + 1) / (self.warmup + 1)
        if self.kind == "step":
            f *= self.gamma ** (t // self.step_size)
        elif self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            p = min(1.0, max(0, t - self.warmup) / span)
            f *= 0.5 * (1 + math.cos(math.pi * p))
        elif self.kind == "onecycle":
            # Rise from lr/25 to lr over the first 30% (cosine), then fall to lr/25e4 (cosine).
            up = max(1, int(0.3 * self.total))
            lo, end = 1 / 25, 1 / 25e4
            if t < up:
                f *= lo + (1 - lo) * 0.5 * (1 - math.cos(math.pi * t / up))
            else:
                p = min(1.0, (t - up) / max(1, self.total - up))
                f *= end + (1 - end) * 0.5 * (1 + math.cos(math.pi * p))
        return f * self.plateau

    def _apply(self) -> None:
        f = self.factor(self.t)
        for g, base in zip(self.opt.param_groups, self.base):
            g["lr"] = base * f

    def step(self) -> None:
        """After each optimiser step."""
        self.t += 1
        self._apply()

    def epoch_end(self, val_loss: float | None) -> None:
        """``plateau``: divide the learning rate by 10 after ``plateau_patience`` epochs without a
        lower validation loss."""
        if self.kind != "plateau" or val_loss is None:
            return
        if self.best is None or val_loss < self.best - 1e-4 * abs(self.best):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.plateau_patience:
                self.plateau *= self.plateau_factor
                self.bad_epochs = 0
        self._apply()

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"t": self.t, "plateau": self.plateau, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d: dict) -> None:
        self.t, self.plateau, self.best, self.bad_epochs = int(d["t"]), float(d["plateau"]), d["best"], int(d["bad_epochs"])
        self._apply()


def multiclass_hinge(scores: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The multiclass SVM loss (Weston–Watkins, as in CS231n): for each picture, the sum over the
    wrong classes of ``max(0, s_j - s_y + margin)``; mean over the batch."""
    correct = scores.gather(1, target.view(-1, 1))
    margins = (scores - correct + margin).clamp(min=0)
    margins = margins.scatter(1, target.view(-1, 1), 0.0)
    return margins.sum(1).mean()


class Criterion:
    """Training loss: softmax cross-entropy (hard or soft/mixup targets, label smoothing) or the
    multiclass hinge. ``eval`` is the plain loss used for validation numbers."""

    def __init__(self, kind: str, label_smoothing: float = 0.0):
        self.kind, self.smoothing = kind, label_smoothing

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.kind == "svm":
            return multiclass_hinge(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.smoothing)

    def eval(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        logits = logits.float()
        if self.kind == "svm":
            return multiclass_hinge(logits, target) * (len(target) if reduction == "sum" else 1)
        return F.cross_entropy(logits, target, reduction=reduction)
