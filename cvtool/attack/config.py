"""Attack settings: parsing ``--eps 4/255``, per-method defaults, and clear errors for
options that do not apply to the chosen method."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cvtool.attack import MINIMAL_NORM, METHODS

DEFAULT_EPS = {"linf": 4 / 255, "l2": 0.5}
DEFAULT_STEPS = {"fgsm": 1, "bim": 10, "pgd": 10, "mifgsm": 10, "deepfool": 50, "cw": 100}
DEFAULT_QUERIES = 1000
ONE_LEVEL = 1 / 255


class ConfigError(ValueError):
    """An option value that cannot work; the message names the option."""


def parse_fraction(text: str, option: str) -> float:
    """``"4/255"``, ``"0.0157"``, ``"1e-2"`` → float (finite, > 0)."""
    t = str(text).strip()
    m = re.fullmatch(r"([^/]+)/([^/]+)", t)
    try:
        num, den = (float(m.group(1)), float(m.group(2))) if m else (float(t), 1.0)
    except ValueError:
        raise ConfigError(f"{option} {t!r}: expected a number or a fraction such as 4/255") from None
    if den == 0:
        raise ConfigError(f"{option} {t}: division by zero")
    value = num / den
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} {t}: must be a positive number")
    return value


def fmt_eps(value: float) -> str:
    """``0.0156862…`` → ``"4/255"`` when it is a whole number of 8-bit levels, else ``"0.0157"``."""
    n = value * 255
    if abs(n - round(n)) < 1e-6 and round(n) > 0:
        return f"{round(n)}/255"
    return f"{value:.4g}"


@dataclass(frozen=True)
class AttackConfig:
    method: str
    norm: str = "linf"  # "linf" | "l2"
    eps: float | None = None  # None: no bound (deepfool, cw only)
    alpha: float | None = None  # step size (bim, pgd, mifgsm)
    steps: int = 10  # iterations (square: unused)
    restarts: int = 1  # pgd only
    random_start: bool = False  # pgd: True
    queries: int = DEFAULT_QUERIES  # square: query budget (including the first)
    decay: float = 1.0  # mifgsm momentum
    overshoot: float = 0.02  # deepfool
    c: float = 1.0  # cw: initial trade-off constant
    search_steps: int = 3  # cw: binary-search rounds on c
    kappa: float = 0.0  # cw: margin the adversarial class must win by
    lr: float = 0.01  # cw: Adam learning rate in tanh space
    p_init: float = 0.05  # square: initial fraction of pixels in a square
    seed: int = 0

    def summary(self) -> dict:
        d = {"method": self.method, "norm": self.norm,
             "eps": None if self.eps is None else round(self.eps, 6),
             "eps_255": None if self.eps is None else round(self.eps * 255, 3)}
        if self.method in ("bim", "pgd", "mifgsm"):
            d.update(alpha=round(self.alpha, 6), alpha_255=round(self.alpha * 255, 3), steps=self.steps)
        if self.method == "pgd":
            d.update(restarts=self.restarts, random_start=self.random_start)
        if self.method == "mifgsm":
            d.update(decay=self.decay)
        if self.method == "deepfool":
            d.update(max_steps=self.steps, overshoot=self.overshoot)
        if self.method == "cw":
            d.update(steps=self.steps, c=self.c, search_steps=self.search_steps, kappa=self.kappa, lr=self.lr)
        if self.method == "square":
            d.update(queries=self.queries, p_init=self.p_init)
        return d

    def describe(self) -> str:
        eps = "unbounded" if self.eps is None else f"eps={fmt_eps(self.eps)}"
        extra = ""
        if self.method in ("bim", "pgd", "mifgsm", "cw"):
            extra = f", {self.steps} steps"
        if self.method == "pgd" and self.restarts > 1:
            extra += f" x {self.restarts} restarts"
        if self.method == "square":
            extra = f", {self.queries} queries"
        return f"{self.method} ({self.norm}, {eps}{extra})"


def build_config(method: str, *, norm: str | None = None, eps: str | None = None, alpha: str | None = None,
                 steps: int | None = None, restarts: int = 1, queries: int | None = None,
                 c: float | None = None, search_steps: int | None = None, seed: int = 0,
                 input_size: int = 224) -> AttackConfig:
    """Validate the options for ``method`` and fill in its defaults. Raises :class:`ConfigError`."""
    if method not in METHODS:
        raise ConfigError(f"unknown attack {method!r}: choose one of {', '.join(METHODS)}")
    aliases = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "2": "l2"}
    if norm is not None:
        if norm.lower() not in aliases:
            raise ConfigError(f"--norm {norm!r}: expected linf or l2")
        norm = aliases[norm.lower()]
    if method == "cw":
        if norm == "linf":
            raise ConfigError("cw is the Carlini-Wagner L2 attack: use --norm l2 (or leave --norm out)")
        norm = "l2"
    if method == "square" and norm == "l2":
        raise ConfigError("square is implemented for --norm linf only")
    norm = norm or ("l2" if method == "deepfool" else "linf")

    def refuse(flag: str, value, why: str) -> None:
        if value is not None:
            raise ConfigError(f"{flag} does not apply to {method}: {why}")

    if method != "square":
        refuse("--queries", queries, "only square counts a query budget")
    if method == "fgsm":
        refuse("--steps", steps, "FGSM takes exactly one step (use bim or pgd for more)")
        refuse("--alpha", alpha, "FGSM's single step is eps itself")
    if method == "square":
        refuse("--steps", steps, "square's budget is --queries")
        refuse("--alpha", alpha, "square changes pixels by exactly eps")
    if method in ("deepfool", "cw"):
        refuse("--alpha", alpha, f"{method} chooses its own step")
    if method != "cw":
        refuse("--c", c, "it is the C&W trade-off constant")
        refuse("--search-steps", search_steps, "they are C&W's binary-search rounds on c")
    if restarts != 1 and method != "pgd":
        raise ConfigError(f"--restarts does not apply to {method}: only pgd restarts from random points")
    if restarts < 1:
        raise ConfigError("--restarts must be at least 1")

    limit = {"linf": 1.0, "l2": math.sqrt(3 * input_size * input_size)}[norm]
    if eps is None:
        value = None if method in MINIMAL_NORM else DEFAULT_EPS[norm]
    else:
        value = parse_fraction(eps, "--eps")
        if value > limit:
            hint = (f"; pixels are in [0, 1], so did you mean {eps}/255?" if norm == "linf" else
                    f"; the largest L2 distance between two {input_size}x{input_size} pictures is {limit:.0f}")
            raise ConfigError(f"--eps {eps}: too large for {norm}{hint}")
        if value < ONE_LEVEL - 1e-9:
            raise ConfigError(f"--eps {eps}: below one 8-bit level (1/255 = 0.0039), so the saved "
                              "8-bit picture could not differ from the original")
    a = None
    if method in ("bim", "pgd", "mifgsm"):
        n = steps or DEFAULT_STEPS[method]
        if alpha is None:
            # BIM and MI-FGSM spread eps over the steps (their papers); PGD takes 2.5 eps / steps
            # (Madry et al.) so that it can still move after reaching the boundary.
            a = (2.5 if method == "pgd" else 1.0) * value / n
        else:
            a = parse_fraction(alpha, "--alpha")
            if a > limit:
                raise ConfigError(f"--alpha {alpha}: too large for {norm}")
    if steps is not None and steps < 1:
        raise ConfigError("--steps must be at least 1")
    if queries is not None and queries < 2:
        raise ConfigError("--queries must be at least 2")
    if search_steps is not None and search_steps < 1:
        raise ConfigError("--search-steps must be at least 1")
    if c is not None and not (math.isfinite(c) and c > 0):
        raise ConfigError("--c must be a positive number")
    return AttackConfig(
        method=method, norm=norm, eps=value, alpha=a, steps=steps or DEFAULT_STEPS.get(method, 1),
        restarts=restarts, random_start=method == "pgd", queries=queries or DEFAULT_QUERIES,
        c=c if c is not None else 1.0, search_steps=search_steps or 3, seed=seed)

