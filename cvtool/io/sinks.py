"""Where records and pictures go: JSONL/CSV writers and atomic image/video writers.

Files are written to a temporary name in the target folder and renamed into place when
complete, so a crash or Ctrl-C never leaves a half-written file; an existing file is never
replaced unless ``overwrite`` is set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any


class SinkError(Exception):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """``with AtomicFile(path) as fh:`` writes ``path`` all at once, or not at all."""

    def __init__(self, path: str | os.PathLike, mode: str = "w", overwrite: bool = False):
        self.path = Path(path)
        self.mode = mode
        if self.path.exists() and not overwrite:
            raise SinkError(f"{self.path} already exists (pass --overwrite to replace it)")
        if self.path.is_dir():
            raise SinkError(f"{self.path} is a directory")
        parent = self.path.parent
        if not parent.is_dir():
            raise SinkError(f"{parent}: folder does not exist")
        self._fh: IO | None = None
        self._tmp: str | None = None

    def __enter__(self) -> IO:
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._fh = os.fdopen(fd, self.mode, **({"encoding": "utf-8", "newline": ""} if "b" not in self.mode else {}))
        return self._fh

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._fh is not None and self._tmp is not None
        self._fh.close()
        if exc_type is None:
            os.chmod(self._tmp, 0o666 & ~_umask())
            os.replace(self._tmp, self.path)
        else:
            os.unlink(self._tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> None:
    with AtomicFile(path, "wb", overwrite) as fh:
        fh.write(data)


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
    """Writes record dicts to a text stream as JSON Lines (default) or CSV.

    CSV flattens nested fields with dots (``image_size.width``) and JSON-encodes lists; its
    columns are fixed by the first record that succeeded (or the first record at all).
    """

    def __init__(self, stream: IO[str], fmt: str = "jsonl"):
        if fmt not in ("jsonl", "csv"):
            raise SinkError(f"unknown record format {fmt!r}")
        self.stream, self.fmt = stream, fmt
        self._csv: csv.DictWriter | None = None
        self._pending: list[dict] = []

    def write(self, record: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
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
        self.stream.flush()


def format_for(path: str | None, fmt: str | None) -> str:
    if fmt and fmt not in ("auto", "table"):
        return fmt
    if path and path.lower().endswith(".csv"):
        return "csv"
    return "jsonl"


class PictureSaver:
    """Saves annotated pictures under ``folder``: one image per still input, one video per
    video input (frames appended as they come). Names follow the input's file name; clashes
    within a run get a numeric suffix; existing files are kept unless ``overwrite``."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, suffix: str = ""):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--save {folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overwrite, self.suffix = overwrite, suffix
        self._names: dict[str, Path] = {}
        self._video: tuple[str, Any, str, Path] | None = None  # (source, writer, tmp, final)

    def _target(self, source: str, ext: str) -> Path:
        if source in self._names:
            return self._names[source]
        stem = Path(source).stem or "image"
        path = self.folder / f"{stem}{self.suffix}{ext}"
        n = 1
        while path in self._names.values():
            path = self.folder / f"{stem}{self.suffix}_{n}{ext}"
            n += 1
        self._names[source] = path
        return path

    def save_image(self, source: str, rgb) -> Path:
        import cv2

        ext = Path(source).suffix.lower()
        ext = ext if ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".png"
        path = self._target(source, ext)
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"could not encode {path.name}")
        write_bytes_atomic(path, buf.tobytes(), self.overwrite)
        return path

    def add_video_frame(self, source: str, rgb, fps: float | None) -> Path:
        import cv2

        if self._video is None or self._video[0] != source:
            self.finish_video()
            final = self._target(source, ".mp4")
            if final.exists() and not self.overwrite:
                raise SinkError(f"{final} already exists (pass --overwrite to replace it)")
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{final.stem}.", suffix=".mp4")
            os.close(fd)
            h, w = rgb.shape[:2]
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, (w, h))
            if not writer.isOpened():
                os.unlink(tmp)
                raise SinkError(f"OpenCV cannot write video {final.name}")
            self._video = (source, writer, tmp, final)
        self._video[1].write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return self._video[3]

    def finish_video(self) -> None:
        if self._video is not None:
            _, writer, tmp, final = self._video
            writer.release()
            os.replace(tmp, final)
            self._video = None

    def close(self) -> None:
        self.finish_video()


def stringify(records: list[dict]) -> str:
    """JSON Lines text for a list of records (handy in tests and docs)."""
    buf = io.StringIO()
    w = RecordWriter(buf)
    for r in records:
        w.write(r)
    return buf.getvalue()
