"""From the attack's float picture to the 8-bit picture that is saved.

An attack works on floats in [0, 1]; a PNG holds whole 8-bit levels. Rounding can undo a
perturbation that only just crossed a class boundary, and could push a pixel outside the eps
ball. So the float perturbation is rounded to whole levels and then projected back into the
ball *on the grid*: for L∞ every level change is clipped to ``floor(eps · 255)``; for L2 a
too-long change is scaled down and rounded towards zero (which can only shorten it). For the
eps-bounded L2 attacks the first candidate is :func:`budget_round_l2`, which rounds so as to
use the ball's budget, since plain rounding would wipe out most of an L2 step. The
rounded picture is what the record's ``adversarial``, ``success_8bit`` and ``norms`` describe.

If nearest rounding is no longer adversarial, :func:`finalise` tries other roundings, each
scored on the attacked model: for the minimal-norm attacks (DeepFool, C&W), whose change can
be far below one level, the change stretched by growing factors (starting where its largest
value reaches half a level), the 8-bit analogue of DeepFool's overshoot; last, rounding every
change away from zero ("outward"). The first candidate that fools the model is kept (else
nearest rounding). Every candidate stays within eps.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

# Minimal-norm attacks: stretch factors tried (on top of the one that makes the largest change
# reach half a level, so that rounding keeps something).
STRETCH = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.4, 8.0)


def quantise(delta255: np.ndarray, x0u: np.ndarray, eps: float | None, norm: str,
             mode: str = "nearest") -> np.ndarray:
    """``delta255``: the float change in 8-bit units ``(S, S, 3)``; ``x0u`` the clean uint8
    picture. Returns the uint8 picture: rounded (``nearest``, ``outward``, or ``exact`` when it
already holds whole levels), projected into the
    eps ball on the grid, clipped to [0, 255]."""
    if mode == "exact":  # already whole levels
        d = delta255
    elif mode == "nearest":
        d = np.rint(delta255)
    else:
        d = np.sign(delta255) * np.ceil(np.abs(delta255) - 1e-6)
    if eps is not None:
        if norm == "linf":
            e = math.floor(eps * 255 + 1e-6)
            d = np.clip(d, -e, e)
        else:
            limit, n = eps * 255, float(np.sqrt((d.astype(np.float64) ** 2).sum()))
            if n > limit:
                d = np.fix(d * (limit / n))
    return np.clip(x0u.astype(np.int32) + d.astype(np.int32), 0, 255).astype(np.uint8)


def budget_round_l2(delta255: np.ndarray, eps: float) -> np.ndarray:
    """Whole-level changes close to ``delta255`` (projected into the L2 ball of radius ``eps``)
    that use the ball's budget: every change is first rounded towards zero, then the values with
    the largest remainders are moved one more level along their change while the squared length
    stays within ``(eps · 255)²``. An L2 step spreads a little change over every value, mostly
    under half a level, so nearest rounding alone would wipe out most of it."""
    limit = eps * 255
    n = float(np.sqrt((delta255 ** 2).sum()))
    d = delta255 * (limit / n) if n > limit else delta255
    q = np.fix(d)
    budget = limit * limit - float((q ** 2).sum())
    rest = np.abs(d) - np.abs(q)
    flat = rest.ravel()
    order = np.argsort(-flat, kind="stable")
    order = order[flat[order] > 0]
    cost = 2 * np.abs(q).ravel()[order] + 1  # (|q| + 1)² - |q|²
    take = order[np.cumsum(cost) <= budget + 1e-9]
    q = q.ravel()
    q[take] += np.sign(d.ravel()[take])
    return q.reshape(d.shape)


def norms(xu: np.ndarray, x0u: np.ndarray) -> dict:
    """True distances of an 8-bit picture from the clean one: L∞ and L2 in [0, 1] units (the
    unit eps is given in), L∞ also in 8-bit levels, and the fraction of values changed."""
    d = xu.astype(np.int32) - x0u.astype(np.int32)
    linf = int(np.abs(d).max()) if d.size else 0
    return {"linf": round(linf / 255, 6), "linf_255": linf,
            "l2": round(float(np.sqrt((d.astype(np.float64) ** 2).sum())) / 255, 6),
            "changed": round(float((d != 0).mean()), 6)}


def float_norms(x_adv, x0) -> dict:
    d = (x_adv - x0).detach().flatten()
    return {"linf": round(float(d.abs().max()), 6), "l2": round(float(d.norm()), 6)}


def finalise(x_adv, x0u: np.ndarray, eps: float | None, norm: str,
             predict: Callable[[np.ndarray], tuple[int, float]], success: Callable[[int], bool],
             stretch: bool) -> tuple[np.ndarray, str, int, tuple[int, float]]:
    """Choose the saved picture: ``(uint8 picture, how it was rounded, model queries spent, its
    prediction)``. ``predict``: uint8 ``(S, S, 3)`` → ``(class id, probability)`` on the
    attacked model."""
    delta = x_adv.detach()[0].permute(1, 2, 0).cpu().double().numpy() * 255.0 - x0u.astype(np.float64)
    tries = [("nearest", delta, "nearest")]
    if norm == "l2" and eps is not None and not stretch:
        tries = [("filled to eps", budget_round_l2(delta, eps), "exact")] + tries
    if stretch:
        top = float(np.abs(delta).max())
        base = max(1.0, 0.5001 / top) if top > 0 else 1.0
        tries += [(f"stretched x{base * s:.3g}", delta * (base * s), "nearest") for s in STRETCH]
    tries.append(("outward", delta, "outward"))
    first, queries, seen = None, 0, set()
    for name, d, mode in tries:
        xu = quantise(d, x0u, eps, norm, mode)
        key = xu.tobytes()
        if key in seen:
            continue
        seen.add(key)
        pred = predict(xu)
        queries += 1
        if first is None:
            first = (xu, name, pred)
        if success(pred[0]):
            return xu, name, queries, pred
    return first[0], first[1], queries, first[2]
