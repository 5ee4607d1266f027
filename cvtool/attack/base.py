"""What every attack shares: the goal (move away from a class, or reach a target), the
result, and the projections onto the eps ball.

Shapes: pictures are float ``(1, 3, S, S)`` tensors in [0, 1]; logits are ``(B, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Goal:
    """Untargeted: make the prediction anything but ``label``. Targeted: make it ``target``."""

    label: int
    target: int | None = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def success(self, pred: int) -> bool:
        return pred == self.target if self.targeted else pred != self.label

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        """Per picture, to be maximised: cross-entropy of ``label`` (untargeted) or minus the
        cross-entropy of ``target`` (targeted)."""
        n = logits.shape[0]
        if self.targeted:
            return -F.cross_entropy(logits, torch.full((n,), self.target, device=logits.device), reduction="none")
        return F.cross_entropy(logits, torch.full((n,), self.label, device=logits.device), reduction="none")

    def margin(self, logits):
        """Per picture; below zero exactly when the goal is met. Untargeted:
        ``z[label] - max_{j != label} z[j]``; targeted: ``max_{j != target} z[j] - z[target]``.
        Works on torch tensors and numpy arrays."""
        k = self.target if self.targeted else self.label
        if isinstance(logits, np.ndarray):
            other = logits.copy()
            other[:, k] = -np.inf
            best_other = other.max(axis=1)
        else:
            other = logits.clone()
            other[:, k] = float("-inf")
            best_other = other.max(dim=1).values
        own = logits[:, k]
        return best_other - own if self.targeted else own - best_other


@dataclass
class AttackResult:
    """``x_adv``: the float picture the attack found, ``(1, 3, S, S)`` in [0, 1]. Attacks that
    work on the 8-bit grid themselves (square) also give ``u8`` ``(S, S, 3)``, final as it is.
    ``iterations``: update steps taken (all restarts); ``queries``: model evaluations the
    attack made (a forward pass, or a forward and backward pass, per picture in a batch)."""

    x_adv: torch.Tensor
    iterations: int
    queries: int
    u8: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-picture norm of ``(B, …)``, shaped ``(B, 1, 1, 1)`` for broadcasting."""
    flat = d.flatten(1)
    n = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)
    return n.view(-1, *([1] * (d.dim() - 1)))


def project(x: torch.Tensor, x0: torch.Tensor, eps: float | None, norm: str) -> torch.Tensor:
    """The nearest point to ``x`` in the ``norm`` ball of radius ``eps`` around ``x0`` and in
    [0, 1]. (Clamping to [0, 1] after the L2 projection only moves coordinates towards
    ``x0``, which lies in [0, 1], so the result stays in the ball.)"""
    d = x - x0
    if eps is not None:
        if norm == "linf":
            d = d.clamp(-eps, eps)
        else:
            d = d * (eps / flat_norm(d, "l2").clamp_min(1e-12)).clamp(max=1.0)
    return (x0 + d).clamp(0.0, 1.0)


def steepest(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step that raises a linear function with gradient ``g`` most: ``sign(g)`` for
    L∞ (size 1 in L∞), ``g / ||g||_2`` for L2."""
    if norm == "linf":
        return g.sign()
    return g / flat_norm(g, "l2").clamp_min(1e-12)


def input_gradient(model, x: torch.Tensor, goal: Goal) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d objective / d x, logits)`` at ``x`` (one forward and one backward pass)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(goal.objective(logits).sum(), x)
    return g.detach(), logits.detach()
