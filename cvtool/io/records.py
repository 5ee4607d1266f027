"""Record writers: JSON Lines (default), CSV and JSON (one array) on any text stream.

Only the standard library here (imported by the CLI modules at start-up)."""

from __future__ import annotations

import csv
import json
import os
from typing import IO, Any

from cvtool.io.atomic import SinkError, is_special

RECORD_FORMATS = ("jsonl", "csv", "json")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v, ensure_ascii=False)
        elif isinstance(v, bool):
            out[key] = "true" if v else "false"  # as in the JSON records
        else:
            out[key] = v
    return out


class RecordWriter:
    """Writes record dicts to a text stream as JSON Lines (default), CSV or one JSON array.

    CSV flattens nested fields with dots (``image_size.width``) and JSON-encodes lists; its
    columns are fixed by the first record that succeeded (or the first record at all). JSON
    writes ``[`` first, one record per line, and ``]`` on :meth:`close`.
    """

    def __init__(self, stream: IO[str], fmt: str = "jsonl"):
        if fmt not in RECORD_FORMATS:
            raise SinkError(f"unknown record format {fmt!r}")
        self.stream, self.fmt = stream, fmt
        self._csv: csv.DictWriter | None = None
        self._pending: list[dict] = []
        self._n = 0

    def write(self, record: dict) -> None:
        if self.fmt in ("jsonl", "json"):
            text = json.dumps(record, ensure_ascii=False)
            if self.fmt == "json":
                text = ("[" if self._n == 0 else ",") + text
            self._n += 1
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        flat = _flatten(record)
        if self._csv is None:
            if not record.get("ok", True):
                self._pending.append(flat)  # wait for a success to learn the full column set
                return
            self._start_csv(flat)
        self._csv.writerow(flat)

    def _start_csv(self, first: dict) -> None:
        cols = list(first)
        for p in self._pending:
            cols += [c for c in p if c not in cols]
        self._csv = csv.DictWriter(self.stream, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        self._csv.writeheader()
        for p in self._pending:
            self._csv.writerow(p)
        self._pending = []

    def close(self) -> None:
        if self.fmt == "csv" and self._csv is None and self._pending:
            self._start_csv(self._pending[0])
        if self.fmt == "json":
            self.stream.write("[]\n" if self._n == 0 else "]\n")
        self.stream.flush()


RECORD_EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".json": "json"}


def format_for(path: str | None, fmt: str | None) -> str:
    """The record format for ``--format fmt`` and ``--output path``: an explicit jsonl/csv/json
    wins; ``auto`` follows the file's extension (``.jsonl`` → JSON Lines, ``.csv`` → CSV,
    ``.json`` → one JSON array). Any other name (``out.parquet``, ``out.txt``, no extension) is
    refused with :class:`SinkError` rather than silently written as JSON Lines, except special
    files (``/dev/stdout``, ``/dev/null``, FIFOs: JSON Lines). A table cannot go to a file."""
    if fmt == "table" and path is not None:
        raise SinkError(f"--format table shows a table on the terminal; for --output {path} "
                        "give --format jsonl, csv or json (or leave --format out)")
    if fmt and fmt not in ("auto", "table"):
        if fmt not in RECORD_FORMATS:
            raise SinkError(f"--format {fmt!r}: expected auto, jsonl, csv, json or table")
        return fmt
    if path is None:
        return "jsonl"
    ext = os.path.splitext(path)[1].lower()
    if ext in RECORD_EXTENSIONS:
        return RECORD_EXTENSIONS[ext]
    if is_special(path):
        return "jsonl"
    what = f"unknown extension {ext!r}" if ext else "no extension"
    raise SinkError(f"--output {path}: {what} (known: {', '.join(RECORD_EXTENSIONS)}; "
                    "or name the format with --format jsonl, csv or json)")
