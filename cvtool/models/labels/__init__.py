"""Class-name lists bundled with cvtool (one name per line; line number = class id)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def load_labels(name: str) -> tuple[str, ...]:
    """The list called ``name``; an empty name (models without classes, e.g. depth) gives ()."""
    if not name:
        return ()
    path = _HERE / f"{name}.txt"
    return tuple(line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines())
