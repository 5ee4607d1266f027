"""Random hyperparameter search (random beats grid when few knobs matter; go coarse to fine).

``--sweep 'lr=1e-4:1e-1:log,weight_decay=1e-6:1e-3:log,optimizer=adam|sgd'``: each item is
``NAME=LO:HI`` with an optional scale (``log``: log-uniform, the usual choice for rates and
decays; ``lin``: uniform; ``int``: uniform integers) or ``NAME=A|B|C`` (one of the choices). Every
trial samples all of them, trains ``--sweep-epochs`` epochs from the same seed, and is judged by
its best validation accuracy.
"""

from __future__ import annotations

import math
import random

from cvtool.train.config import LOSSES, OPTIMIZERS, SCHEDULES, TrainError

# name → (type, allowed choices or None)
TUNABLE = {
    "lr": (float, None), "weight_decay": (float, None), "momentum": (float, None), "dropout": (float, None),
    "label_smoothing": (float, None), "warmup_epochs": (float, None), "mixup": (float, None),
    "erase": (float, None), "jitter": (float, None), "crop": (float, None), "gamma": (float, None),
    "batch": (int, None), "depth": (int, None), "step_size": (int, None),
    "optimizer": (str, OPTIMIZERS), "schedule": (str, SCHEDULES), "loss": (str, LOSSES),
}


def parse(text: str) -> dict[str, dict]:
    """``"lr=1e-4:1e-1:log,optimizer=adam|sgd"`` → ``{"lr": {"kind": "log", "lo": …, "hi": …}, …}``."""
    params: dict[str, dict] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, eq, rng = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not rng.strip():
            raise TrainError(f"--sweep {item!r}: expected NAME=LO:HI[:log|lin|int] or NAME=A|B|C")
        if name not in TUNABLE:
            raise TrainError(f"--sweep: cannot tune {name!r}; tunable: {', '.join(sorted(TUNABLE))}")
        typ, allowed = TUNABLE[name]
        if "|" in rng or typ is str:
            choices = [c.strip() for c in rng.split("|") if c.strip()]
            if allowed is not None:
                bad = [c for c in choices if c not in allowed]
                if bad:
                    raise TrainError(f"--sweep {name}: {bad[0]!r} is not one of {', '.join(allowed)}")
            else:
                try:
                    choices = [typ(c) for c in choices]
                except ValueError:
                    raise TrainError(f"--sweep {name}: choices must be numbers") from None
            params[name] = {"kind": "choice", "choices": choices}
            continue
        parts = rng.split(":")
        if len(parts) not in (2, 3):
            raise TrainError(f"--sweep {item!r}: expected {name}=LO:HI[:log|lin|int]")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise TrainError(f"--sweep {item!r}: LO and HI must be numbers") from None
        kind = parts[2].strip().lower() if len(parts) == 3 else ("int" if typ is int else "lin")
        if kind not in ("log", "lin", "int"):
            raise TrainError(f"--sweep {item!r}: scale {kind!r} is not log, lin or int")
        if hi < lo:
            lo, hi = hi, lo
        if kind == "log" and lo <= 0:
            raise TrainError(f"--sweep {item!r}: a log scale needs LO > 0")
        if typ is int and kind == "lin":
            kind = "int"
        params[name] = {"kind": kind, "lo": lo, "hi": hi}
    if not params:
        raise TrainError("--sweep: nothing to tune")
    return params


def sample(params: dict[str, dict], rng: random.Random) -> dict:
    out = {}
    for name, p in params.items():
        if p["kind"] == "choice":
            out[name] = rng.choice(p["choices"])
        elif p["kind"] == "log":
            out[name] = float(f"{math.exp(rng.uniform(math.log(p['lo']), math.log(p['hi']))):.4g}")
        elif p["kind"] == "int":
            out[name] = rng.randint(int(round(p["lo"])), int(round(p["hi"])))
        else:
            out[name] = float(f"{rng.uniform(p['lo'], p['hi']):.4g}")
        if TUNABLE[name][0] is int:
            out[name] = int(out[name])
    return out


def as_options(values: dict) -> str:
    """The command-line options that reproduce ``values``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
