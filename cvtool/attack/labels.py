"""``--labels FILE``: the true class of each picture, for clean and robust accuracy.

Formats (chosen by the file's extension):

* ``.json``: one object, file name → class, e.g. ``{"cat.jpg": "tiger cat", "dog.png": 208}``;
* ``.csv`` (comma), ``.tsv`` (tab), anything else (tab if the first data line has one, else
  comma): two columns, file name and class, one picture per line. A header line (first
  column ``file``, ``filename``, ``path``, ``image`` or ``source``), blank lines and lines
  starting with ``#`` are skipped. Quote a class name that contains a comma in a CSV file.

A class is a class id or a label of the model, resolved as ``--target`` is (a unique whole
word or prefix of a label is enough). A file name matches a picture whose path is that name
or ends with it as whole path components: ``cat.jpg`` matches ``photos/cat.jpg``, and
``photos/cat.jpg`` matches ``/data/photos/cat.jpg``; the longest matching entry wins. All
frames of a video take the video's label.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from cvtool.models.differentiable import TargetError, resolve_target

HEADER_NAMES = {"file", "filename", "file_name", "path", "image", "source", "name"}


class LabelsError(ValueError):
    """The labels file cannot be used; the message names the file (and line)."""


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in os.path.normpath(path).replace("\\", "/").split("/") if p not in ("", "."))


class LabelMap:
    def __init__(self, path: str, entries: dict[str, int]):
        self.path = path
        self.entries = {_parts(k): v for k, v in entries.items()}

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, source: str) -> int | None:
        parts = _parts(source)
        best, best_len = None, 0
        for key, cls in self.entries.items():
            n = len(key)
            if n > best_len and parts[-n:] == key:
                best, best_len = cls, n
        return best


def read_labels_file(path: str | os.PathLike, labels: tuple[str, ...] | list[str]) -> LabelMap:
    """Parse ``path`` against the model's ``labels``. Raises :class:`LabelsError`."""
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"--labels {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"--labels {path}: cannot read it as UTF-8 text ({e.__class__.__name__})") from None
    rows: list[tuple[int, str, object]] = []  # (line, file, class)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelsError(f"--labels {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict):
            raise LabelsError(f"--labels {path}: expected a JSON object mapping file names to classes")
        rows = [(0, str(k), v) for k, v in data.items()]
    else:
        lines = [ln for ln in text.splitlines()]
        first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
        delim = {".csv": ",", ".tsv": "\t"}.get(p.suffix.lower(), "\t" if "\t" in first else ",")
        for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delim), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise LabelsError(f"--labels {path} line {n}: expected two columns (file, class), "
                                  f"separated by {'a tab' if delim == chr(9) else 'a comma'}")
            name, cls = row[0].strip(), row[1].strip()
            if not rows and name.lower() in HEADER_NAMES:
                continue
            rows.append((n, name, cls))
    if not rows:
        raise LabelsError(f"--labels {path}: no entries")
    entries: dict[str, int] = {}
    for n, name, cls in rows:
        where = f"--labels {path}" + (f" line {n}" if n else f" entry {name!r}")
        if not name:
            raise LabelsError(f"{where}: empty file name")
        if isinstance(cls, bool) or not isinstance(cls, (str, int)):
            raise LabelsError(f"{where}: the class must be a label or a class id")
        try:
            idx = resolve_target(cls, labels)
        except TargetError as e:
            raise LabelsError(f"{where}: {str(e).replace('--target ', 'class ')}") from None
        key = os.path.normpath(name)
        if key in entries and entries[key] != idx:
            raise LabelsError(f"{where}: {name!r} is listed twice with different classes")
        entries[key] = idx
    return LabelMap(str(path), entries)
