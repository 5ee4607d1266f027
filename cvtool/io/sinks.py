"""Where records and pictures go: JSONL/CSV writers and atomic image/video writers.

Files are written to a temporary name in the target folder and renamed into place when
complete, so a crash or Ctrl-C never leaves a half-written file; an existing file is never
replaced unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
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
            fourcc, ext = video_codec()
            final = self._target(source, ext)
            if final.exists() and not self.overwrite:
                raise SinkError(f"{final} already exists (pass --overwrite to replace it)")
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{final.stem}.", suffix=ext)
            os.close(fd)
            h, w = rgb.shape[:2]
            with _native_stderr_silenced():
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps or 25.0, (w, h))
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
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)
            self._video = None

    def close(self) -> None:
        self.finish_video()


_CODEC: tuple[str, str] | None = None


@contextlib.contextmanager
def _native_stderr_silenced():
    """OpenCV's FFmpeg writer prints a harmless note about the WebM codec tag straight to file
    descriptor 2 (not through any logging switch); hide it while a writer is created."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def video_codec() -> tuple[str, str]:
    """(fourcc, extension) for annotated videos: VP9 in WebM, which browsers play, where this
    OpenCV build can write it; otherwise MPEG-4 Part 2 in .mp4 (plays in VLC/ffplay, not in
    most browsers)."""
    global _CODEC
    if _CODEC is None:
        import cv2
        import numpy as np

        fd, probe = tempfile.mkstemp(suffix=".webm")
        os.close(fd)
        try:
            with _native_stderr_silenced():
                w = cv2.VideoWriter(probe, cv2.VideoWriter_fourcc(*"VP90"), 10.0, (32, 32))
            ok = w.isOpened()
            if ok:
                w.write(np.zeros((32, 32, 3), np.uint8))
            w.release()
            ok = ok and os.path.getsize(probe) > 0
        finally:
            os.unlink(probe)
        _CODEC = ("VP90", ".webm") if ok else ("mp4v", ".mp4")
        if not ok:
            import sys

            print("cvtool: this OpenCV build cannot write VP9/WebM, so annotated videos are MPEG-4 "
                  "Part 2 (mp4v) .mp4 files: VLC and ffplay play them, most browsers do not", file=sys.stderr)
    return _CODEC


def _unique_stem(record: dict, used: dict[str, str]) -> str:
    """The input's file stem (``_f<frame>`` for video frames); a second input with the same
    stem in one run gets ``_1``, ``_2``… (as ``--save`` names do)."""
    key = record["source"]
    if key not in used:
        stem = Path(key).stem or "image"
        name, n = stem, 1
        while name in used.values():
            name, n = f"{stem}_{n}", n + 1
        used[key] = name
    frame = record.get("frame")
    return used[key] + (f"_f{frame:06d}" if frame is not None else "")


class CropSaver:
    """``--save-crops DIR``: one image per detection, ``DIR/<label>/<stem>[_f<frame>]_<n>.jpg``."""

    needs_pixels = True

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--save-crops {folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        self._names: dict[str, str] = {}

    def add(self, record: dict, frame) -> None:
        import cv2

        stem = _unique_stem(record, self._names)
        paths = []
        for n, det in enumerate(record.get("detections", [])):
            x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
            if x2 <= x1 or y2 <= y1:
                continue
            crop = frame.rgb[y1:y2, x1:x2]
            folder = self.folder / (det["label"].replace("/", "_").replace(" ", "_") or str(det["class_id"]))
            folder.mkdir(exist_ok=True)
            path = folder / f"{stem}_{n}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            if ok:
                write_bytes_atomic(path, buf.tobytes(), self.overwrite)
                paths.append(str(path))
        record["crops"] = paths

    def close(self, interrupted: bool = False) -> None:
        pass


class CocoResultsWriter:
    """``--coco-json FILE``: detections in COCO's results format, written atomically at the end.

    ``image_id``: the id ``ids`` maps the file name to (ground truth given), else the number in a
    COCO-style file name (``000000397133.jpg`` → 397133), else the picture's position in the run
    (1-based); an id already given to another picture is never reused (the next free one is
    taken). ``category_id`` is the model's class id (the 90-id COCO numbering for COCO models),
    or what ``categories`` maps it to (e.g. an 80-class YOLO file's ids to COCO's)."""

    def __init__(self, path: str | os.PathLike | None, overwrite: bool = False,
                 ids: dict[str, int] | None = None, categories: dict[int, int] | None = None):
        self.file = AtomicFile(path, overwrite=overwrite) if path is not None else None
        self.ids, self.results, self.n = ids, [], 0
        self.categories = categories or {}
        self.image_ids: list[int] = []
        self._given: dict[str, int] = {}

    def image_id(self, record: dict) -> int | None:
        name = Path(record["source"]).name
        if self.ids is not None:
            return self.ids.get(name)
        key = f"{record['source']}#{record.get('frame')}"
        if key not in self._given:
            stem = Path(name).stem
            want = int(stem) if stem.isdigit() and record.get("frame") is None else self.n
            taken = set(self._given.values())
            while want in taken:
                want = max(taken) + 1
            self._given[key] = want
        return self._given[key]

    def add(self, record: dict, frame) -> None:
        self.n += 1
        image_id = self.image_id(record)
        record["image_id"] = image_id
        if image_id is None:
            return
        self.image_ids.append(image_id)
        for det in record.get("detections", []):
            x1, y1, x2, y2 = det["box"]
            self.results.append({"image_id": image_id,
                                 "category_id": self.categories.get(det["class_id"], det["class_id"]),
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                 "score": det["score"]})

    def close(self, interrupted: bool = False) -> None:
        if self.file is not None:
            fh = self.file.__enter__()
            json.dump(self.results, fh)
            self.file.__exit__(KeyboardInterrupt if interrupted else None, None, None)


class YoloTxtWriter:
    """``--yolo-txt DIR``: one ``<stem>.txt`` per picture, a line per detection:
    ``class x_center y_center width height score`` (normalised; class = contiguous 0–79 index)."""

    def __init__(self, folder: str | os.PathLike, class_index: dict[int, int], overwrite: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--yolo-txt {folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index, self.overwrite = class_index, overwrite
        self._names: dict[str, str] = {}

    def add(self, record: dict, frame) -> None:
        w, h = frame.orig_size
        stem = _unique_stem(record, self._names)
        lines = []
        for det in record.get("detections", []):
            x1, y1, x2, y2 = det["box"]
            cls = self.index.get(det["class_id"], det["class_id"])
            lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                         f"{(y2 - y1) / h:.6f} {det['score']:.5f}")
        path = self.folder / f"{stem}.txt"
        write_bytes_atomic(path, ("\n".join(lines) + ("\n" if lines else "")).encode(), self.overwrite)
        record["yolo_txt"] = str(path)

    def close(self, interrupted: bool = False) -> None:
        pass


def stringify(records: list[dict]) -> str:
    """JSON Lines text for a list of records (handy in tests and docs)."""
    buf = io.StringIO()
    w = RecordWriter(buf)
    for r in records:
        w.write(r)
    return buf.getvalue()


class ArtifactSaver:
    """``--save DIR`` for jobs that write several files per input (a picture and its raw array):
    ``DIR/<stem>[_f<frame>]_<what>.<ext>``, written atomically, never over an existing file
    unless ``overwrite``. Same-stem inputs get ``_1``, ``_2``… as elsewhere."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, flag: str = "--save"):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{flag} {folder}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"{flag} {folder}: cannot create it ({e.strerror})") from None
        self.overwrite = overwrite
        self._names: dict[str, str] = {}

    def stem(self, record: dict) -> str:
        return _unique_stem(record, self._names)

    def check(self, name: str, exts: tuple[str, ...] = (".png", ".npy")) -> None:
        """Fail early (before the work) when ``name``'s files exist and may not be replaced."""
        if not self.overwrite:
            for ext in exts:
                if (self.folder / f"{name}{ext}").exists():
                    raise SinkError(f"{self.folder / (name + ext)} already exists (pass --overwrite to replace it)")

    def png(self, name: str, rgb) -> Path:
        import cv2

        path = self.folder / f"{name}.png"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"could not encode {path.name}")
        self._write(path, buf.tobytes())
        return path

    def npy(self, name: str, array) -> Path:
        import io as _io

        import numpy as np

        path = self.folder / f"{name}.npy"
        buf = _io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        self._write(path, buf.getvalue())
        return path

    def write(self, filename: str, data: bytes) -> Path:
        """Write already-encoded bytes as ``DIR/filename`` (same rules as png/npy)."""
        path = self.folder / filename
        self._write(path, data)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        if path.exists() and not self.overwrite:
            raise SinkError(f"{path} already exists (pass --overwrite to replace it)")
        try:
            write_bytes_atomic(path, data, self.overwrite)
        except OSError as e:
            raise SinkError(f"cannot write {path} ({e.strerror})") from None
