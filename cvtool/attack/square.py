"""Square attack (Andriushchenko et al. 2020), L∞, black box: it needs only the model's scores.

It works directly on the 8-bit grid: every pixel of the result differs from the clean one by
0 or ``e = floor(eps · 255)`` levels (clipped to [0, 255]), so the picture it finds is the
picture that is saved, with no rounding left to do. Start: vertical stripes of ±e (one
random sign per column and channel). Then, per query, one random square window gets a
fresh random ±e per channel; the change is kept if the margin loss (true-class log-score
minus the best other; targeted: best other minus the target) went down. The square's side
shrinks on the paper's schedule as the queries are used up. It stops at the first success.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from cvtool.attack.base import AttackResult, Goal
from cvtool.attack.config import AttackConfig

# The paper's schedule, for a 10,000-query budget: the square's area halves at these queries.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, it: int, budget: int) -> float:
    """Fraction of the picture's pixels in the square at iteration ``it`` of ``budget``."""
    scaled = int(it / max(budget, 1) * 10000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def square_linf(scores: Callable[[np.ndarray], np.ndarray], x0u: np.ndarray, goal: Goal,
                cfg: AttackConfig, rng: np.random.Generator) -> AttackResult:
    """``scores``: uint8 ``(B, S, S, 3)`` → logits ``(B, C)`` (numpy). ``x0u``: the clean
    network-sized picture ``(S, S, 3)`` uint8. The result's ``u8`` is final."""
    import torch

    h, w, ch = x0u.shape
    e = int(math.floor(cfg.eps * 255 + 1e-6))
    base = x0u.astype(np.int16)

    def margin(x: np.ndarray) -> float:
        z = scores(x[None]).astype(np.float64)
        z = z - np.log(np.exp(z - z.max()).sum()) - z.max()  # log-softmax: scores or logits alike
        return float(goal.margin(z)[0])

    x = np.clip(base + e * rng.choice((-1, 1), size=(1, w, ch)), 0, 255).astype(np.uint8)
    loss, queries, it = margin(x), 1, 0
    while loss >= 0 and queries < cfg.queries:
        side = int(round(math.sqrt(square_fraction(cfg.p_init, it, cfg.queries) * h * w)))
        side = max(1, min(side, h - 1, w - 1))
        r, c = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        window = base[r:r + side, c:c + side]
        current = x[r:r + side, c:c + side]
        for _ in range(10):  # a change that changes nothing would waste a query
            new = np.clip(window + e * rng.choice((-1, 1), size=(1, 1, ch)), 0, 255).astype(np.uint8)
            if not np.array_equal(new, current):
                break
        cand = x.copy()
        cand[r:r + side, c:c + side] = new
        new_loss = margin(cand)
        queries += 1
        it += 1
        if new_loss < loss:
            x, loss = cand, new_loss
    t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return AttackResult(t, it, queries, u8=x)
