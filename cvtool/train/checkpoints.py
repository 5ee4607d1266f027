"""Run directories and checkpoint files.

A run lives in ``runs/NAME/``: ``config.json`` (everything the run resolved), ``metrics.csv`` and
``metrics.jsonl`` (one row per epoch), ``best.pt`` and ``last.pt``, ``curves.png``,
``confusion.png`` and ``eval.json``. An existing run is never written over unless asked.

Checkpoints hold only tensors and plain Python values, so ``torch.load(..., weights_only=True)``
reads them (cvtool never unpickles code)::

    {"cvtool": {"format": 1, "arch", "task": "classify", "name", "labels", "preprocess",
                "arch_kwargs", "grey_input", "epoch", "metrics", "config"},
     "state_dict": {...},
     "train_state": {...}}   # last.pt only: optimiser, schedule, AMP scaler, RNG, history

``cvtool classify/export/visualize/attack --model runs/NAME/best.pt`` read the ``cvtool`` part
(:func:`cvtool.models.loader._load_checkpoint`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cvtool.train.config import TrainError

CHECKPOINT_FORMAT = 1


def auto_name(base: str, runs_dir: Path) -> str:
    """``base``, or ``base-2``, ``base-3``… : the first name not taken in ``runs_dir``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "run"
    if not (runs_dir / base).exists():
        return base
    n = 2
    while (runs_dir / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def check_runs_dir_writable(runs_dir: str | Path) -> None:
    """Raise TrainError now, before data loads, when run directories cannot be made under
    ``runs_dir`` (``--runs-dir``): it (or the nearest folder above it that exists) is a file, or
    not writable (a read-only disk, /sys, a folder of someone else's)."""
    from cvtool.io.atomic import SinkError, check_folder_writable

    p = Path(runs_dir)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise TrainError(f"--runs-dir {runs_dir}: {p} is not a folder")
    try:
        check_folder_writable(p, f"--runs-dir {runs_dir}")
    except SinkError as e:
        raise TrainError(str(e)) from None


def check_run_dir(path: Path, overwrite: bool) -> None:
    """Raise unless ``path`` may become a new run directory: it must not exist, or (with
    ``overwrite``) be an old run directory (one with a config.json, or an empty folder)."""
    if path.exists():
        if not overwrite:
            raise TrainError(f"{path} already exists: pick another --name, continue it with --resume {path}, "
                             "or pass --overwrite to replace it")
        if not path.is_dir() or (not (path / "config.json").is_file() and any(path.iterdir())):
            raise TrainError(f"{path} exists and is not a cvtool run directory (no config.json); "
                             "refusing to delete it even with --overwrite")


def prepare_run_dir(path: Path, overwrite: bool) -> None:
    """Create the run directory (after :func:`check_run_dir`); with ``overwrite`` an old run
    of the same name is removed first."""
    check_run_dir(path, overwrite)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a reader (or a crash)
    never sees half a file."""
    from cvtool.io.atomic import AtomicFile

    with AtomicFile(path, "wb", overwrite=True, probe=False) as fh:
        write(fh)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def model_meta(built, name: str, labels: list[str], epoch: int, metrics: dict, config: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": built.arch,
        "task": "classify",
        "name": name,
        "labels": list(labels),
        "preprocess": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(built.preprocess).items()},
        "arch_kwargs": built.arch_kwargs,
        "grey_input": bool(built.grey_input),
        "epoch": int(epoch),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None},
        "config": json.loads(json.dumps(config)),
    }


def save_checkpoint(path: Path, meta: dict, state_dict: dict, train_state: dict | None = None) -> None:
    obj = {"cvtool": meta, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    if train_state is not None:
        obj["train_state"] = train_state
    atomic_write_bytes(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: Path) -> dict:
    from cvtool.models.state_dict import torch_load, unreadable

    try:
        obj = torch_load(path)
    except Exception as e:

        raise TrainError(f"{path}: {unreadable(path, e)}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("cvtool"), dict):
        raise TrainError(f"{path}: not a checkpoint written by `cvtool train`")
    return obj


def rng_state() -> dict:
    """Every random generator a run draws from, as tensors and plain values."""
    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [st[0], torch.from_numpy(st[1].astype(np.int64)), int(st[2]), int(st[3]), float(st[4])],
    }


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    if d.get("cuda") and torch.cuda.is_available() and len(d["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(d["cuda"])
    py = d["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = d["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
