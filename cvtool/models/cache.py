"""cvtool's own cache: where it is (``$CVTOOL_HOME``), whether it can be used, and sha256
digests of weight files and folders (remembered across runs).

Standard library only."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path


class WeightsError(Exception):
    """Weights could not be found, fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    origin: str  # "argument" | "cache" | "package" | "download" | "hf-cache" | "import" (forced, unverified)
    sha256: str
    revision: str | None = None  # Hugging Face folders: see hf_weights.hf_revision_of


def cache_home() -> Path:
    """``$CVTOOL_HOME`` or the platform's user cache directory + ``/cvtool``."""
    env = os.environ.get("CVTOOL_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cvtool"


def check_cache_home() -> None:
    """Raise :class:`WeightsError` when the cache cannot be used: ``$CVTOOL_HOME`` (or the
    default place) is a file, or lies under one. Nothing is created here."""
    home = cache_home()
    where = "CVTOOL_HOME=" + str(home) if os.environ.get("CVTOOL_HOME") else f"the cache folder {home}"
    p = home
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise WeightsError(f"{where} cannot be used: {p} is not a folder (point CVTOOL_HOME at a folder)")
    if p == home and not os.access(home, os.W_OK | os.X_OK):
        raise WeightsError(f"{where} cannot be used: it is not writable (point CVTOOL_HOME at a writable folder)")


def weights_dir() -> Path:
    return cache_home() / "weights"


def offline() -> bool:
    return os.environ.get("CVTOOL_OFFLINE", "").lower() in ("1", "true", "yes")


_sha_memo: dict[str, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered across runs in ``$CVTOOL_HOME/digests.json`` by path, size
    and modification time (hashing a 67 MB weights file on every start costs ~50 ms)."""
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    if key in _sha_memo:
        return _sha_memo[key]
    store = cache_home() / "digests.json"
    known = _read_digests(store)
    if key not in known:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        known[key] = h.hexdigest()
        _write_digests(store, known)
    _sha_memo[key] = known[key]
    return known[key]


def _read_digests(store: Path) -> dict[str, str]:
    import json

    try:
        data = json.loads(store.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digests(store: Path, known: dict[str, str]) -> None:
    """Best effort, atomic; a read-only cache just means hashing again next time."""
    import json

    from cvtool.io.atomic import SinkError, write_bytes_atomic

    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(store, json.dumps(dict(list(known.items())[-256:])).encode(), overwrite=True)
    except (OSError, SinkError):
        pass


def dir_digest(folder: str | os.PathLike) -> str:
    """One sha256 for a model folder: over the names and digests of its files."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
