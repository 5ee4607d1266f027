"""Minimal-perturbation attacks: DeepFool and Carlini-Wagner L2.

They look for the smallest change that flips the decision, rather than the most damaging
change within a budget. ``--eps``, when given, is a bound the result is projected into.
"""

from __future__ import annotations

import torch

from cvtool.attack.base import AttackResult, Goal, project
from cvtool.attack.config import AttackConfig

CANDIDATES = 10  # DeepFool: classes considered per step (the top ones of the clean picture)


def _class_gradients(model, x: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(C,)`` at ``x`` and the gradients ``(K, 3, S, S)`` of the logits of ``classes``,
    with one batched forward/backward pass (the picture repeated K times)."""
    xb = x.detach().repeat(len(classes), 1, 1, 1).requires_grad_(True)
    logits = model(xb)
    idx = torch.tensor(classes, device=x.device)
    (g,) = torch.autograd.grad(logits.gather(1, idx.view(-1, 1)).sum(), xb)
    return logits[0].detach(), g.detach()


def deepfool(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Moosavi-Dezfooli et al. 2016. Around the current point, each class boundary is
    approximated by a hyperplane (from the logits' gradients); the step goes to the nearest
    one, and this repeats until the decision changes. The total step is finally stretched by
    ``1 + overshoot`` to land past the boundary. Untargeted: the boundaries between the true
    class and the 10 classes the clean picture scores highest; targeted: the boundary to the
    target only. L2 steps go along the normal; L∞ steps along its sign."""
    with torch.no_grad():
        clean = model(x0)[0]
    if goal.targeted:
        others = [goal.target]
    else:
        top = clean.topk(min(CANDIDATES + 1, clean.numel())).indices.tolist()
        others = [k for k in top if k != goal.label][:CANDIDATES]
    x, r_tot, iters, queries = x0.clone(), torch.zeros_like(x0), 0, 1
    with torch.no_grad():
        pred = int(model(x).argmax(1)[0])
    while not goal.success(pred) and iters < cfg.steps:
        # Targeted: move from whatever the picture is now towards the target.
        own = pred if goal.targeted else goal.label
        logits, g = _class_gradients(model, x, [own] + others)
        queries += 1 + len(others)
        w = g[1:] - g[:1]  # (K, 3, S, S): normals of the boundaries own→k
        f = logits[others] - logits[own]  # (K,): below zero while own still wins
        if cfg.norm == "linf":
            wn = w.flatten(1).abs().sum(1)
        else:
            wn = w.flatten(1).norm(dim=1)
        dist = f.abs() / wn.clamp_min(1e-12)
        k = int(dist.argmin())
        if cfg.norm == "linf":
            r = (f[k].abs() + 1e-4) / wn[k].clamp_min(1e-12) * w[k].sign()
        else:
            r = (f[k].abs() + 1e-4) / wn[k].clamp_min(1e-12) ** 2 * w[k]
        r_tot = r_tot + r.unsqueeze(0)
        x = project(x0 + (1 + cfg.overshoot) * r_tot, x0, cfg.eps, cfg.norm)
        iters += 1
        with torch.no_grad():
            pred = int(model(x).argmax(1)[0])
        queries += 1
    return AttackResult(x, iters, queries)


def cw(model, x0: torch.Tensor, goal: Goal, cfg: AttackConfig, gen=None) -> AttackResult:
    """Carlini & Wagner 2017, L2. Writes the picture as ``x = (tanh(w) + 1) / 2`` (always in
    [0, 1]) and minimises ``||x - x0||² + c · max(margin(x), -kappa)`` with Adam, where the
    margin is the logit of the true class minus the best other (targeted: best other minus
    the target). Adam's first steps move every value by about ``lr`` whatever its gradient, so
    the learning rate decays (cosine, to lr/20) over each round to let the change shrink back.
    A binary search over ``search_steps`` rounds adjusts ``c``: smaller after a
    success (to shrink the change), larger (×10 until a first success) after a failure. The
    smallest successful picture wins; when none succeeds, the last one is returned."""
    x0c = x0.clamp(1e-6, 1 - 1e-6)
    w0 = torch.atanh(2 * x0c - 1).detach()
    c, lo, hi = cfg.c, 0.0, float("inf")
    best, best_l2, best_c, last, iters = None, float("inf"), None, x0, 0
    for _ in range(cfg.search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr / 20)
        found = False
        for _ in range(cfg.steps):
            x = (torch.tanh(w) + 1) / 2
            logits = model(x)
            l2sq = ((x - x0) ** 2).flatten(1).sum(1)
            margin = goal.margin(logits).clamp_min(-cfg.kappa)
            loss = (l2sq + c * margin).sum()
            opt.zero_grad()
            loss.backward()
            iters += 1
            with torch.no_grad():
                if goal.success(int(logits.argmax(1)[0])) and float(l2sq[0]) < best_l2:
                    best, best_l2, best_c, found = x.detach().clone(), float(l2sq[0]), c, True
            opt.step()
            sched.step()
        last = ((torch.tanh(w) + 1) / 2).detach()
        if found:
            hi = min(hi, c)
        else:
            lo = max(lo, c)
        c = (lo + hi) / 2 if hi < float("inf") else c * 10
    x = best if best is not None else last
    found_c = None if best_c is None else round(best_c, 6)
    return AttackResult(project(x, x0, cfg.eps, "l2"), iters, iters, extra={"c": found_c})

