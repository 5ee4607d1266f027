"""First-order attacks within an eps ball: FGSM, BIM, PGD, MI-FGSM.

All take ``model`` (float pixels ``(B, 3, S, S)`` in [0, 1] → logits), the clean picture
``x0`` ``(1, 3, S, S)``, a :class:`~cvtool.attack.base.Goal` and an
:class:`~cvtool.attack.config.AttackConfig`, and return an
:class:`~cvtool.attack.base.AttackResult`. They maximise the goal's objective (the
cross-entropy of the true class, or minus that of the target) with steepest-ascent steps for
the chosen norm: the sign of the gradient for L∞, the normalised gradient for L2.
"""

from __future__ import annotations

import math

import torch

from cvtool.attack.base import AttackResult, Goal, flat_norm, input_gradient, project, steepest
from cvtool.attack.config import AttackConfig


def fgsm(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Goodfellow et al. 2015: if the network were linear in its input, the loss would rise
    most, for a change of at most eps per pixel, by moving every pixel eps along the sign of
    the gradient. One gradient, one step."""
    g, _ = input_gradient(model, x0, goal)
    return AttackResult(project(x0 + cfg.eps * steepest(g, cfg.norm), x0, cfg.eps, cfg.norm), 1, 1)


def bim(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Kurakin et al. 2017 (basic iterative method): FGSM in ``steps`` steps of ``alpha``,
    projected back into the eps ball (and [0, 1]) after each, starting at the clean picture."""
    x = x0.clone()
    for _ in range(cfg.steps):
        g, _ = input_gradient(model, x, goal)
        x = project(x + cfg.alpha * steepest(g, cfg.norm), x0, cfg.eps, cfg.norm)
    return AttackResult(x, cfg.steps, cfg.steps)


def random_start(x0: torch.Tensor, eps: float, norm: str, gen: torch.Generator | None) -> torch.Tensor:
    """A random point of the eps ball around ``x0`` (inside [0, 1]): uniform per pixel for L∞;
    for L2 a uniformly random direction at a radius whose distribution is uniform in the ball."""
    if norm == "linf":
        d = (torch.rand(x0.shape, generator=gen, device=x0.device) * 2 - 1) * eps
    else:
        d = torch.randn(x0.shape, generator=gen, device=x0.device)
        n = x0[0].numel()
        r = torch.rand((x0.shape[0], 1, 1, 1), generator=gen, device=x0.device) ** (1.0 / n)
        d = d / flat_norm(d, "l2").clamp_min(1e-12) * r * eps
    return project(x0 + d, x0, eps, norm)


def pgd(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Madry et al. 2018: projected gradient ascent on the loss from a random point in the
    ball, ``steps`` steps of ``alpha``. The strongest attack that uses only first-order
    information, in their sense. With ``restarts`` > 1 it starts again from a fresh random
    point while no restart has succeeded, and keeps the successful (else the highest-loss) one."""
    best, best_key, iters = None, None, 0
    for _ in range(cfg.restarts):
        x = random_start(x0, cfg.eps, cfg.norm, gen) if cfg.random_start else x0.clone()
        for _ in range(cfg.steps):
            g, _ = input_gradient(model, x, goal)
            x = project(x + cfg.alpha * steepest(g, cfg.norm), x0, cfg.eps, cfg.norm)
            iters += 1
        if cfg.restarts == 1:
            return AttackResult(x, iters, iters)
        with torch.no_grad():
            logits = model(x)
        key = (goal.success(int(logits.argmax(1)[0])), float(goal.objective(logits)[0]))
        if best_key is None or key > best_key:
            best, best_key = x, key
        if key[0]:
            break
    # one extra forward pass per restart, to judge it
    return AttackResult(best, iters, iters + math.ceil(iters / cfg.steps))


def mifgsm(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Dong et al. 2018 (momentum iterative FGSM): BIM whose step follows an accumulated
    gradient ``g_t = decay * g_{t-1} + grad / ||grad||_1``, which steadies the direction and
    makes the result transfer better to other models."""
    x, acc = x0.clone(), torch.zeros_like(x0)
    for _ in range(cfg.steps):
        g, _ = input_gradient(model, x, goal)
        acc = cfg.decay * acc + g / g.flatten(1).abs().mean(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = project(x + cfg.alpha * steepest(acc, cfg.norm), x0, cfg.eps, cfg.norm)
    return AttackResult(x, cfg.steps, cfg.steps)
