"""Savers for picture outputs: ``--save DIR`` annotated copies (images and videos) and
several files per input (:class:`ArtifactSaver`); every file written atomically, never over an
existing one unless ``overwrite``.

File names come from the input's stem: :func:`unique_stem` gives a second input with the same stem
``_1``, ``_2``…, and every saver of one run (pictures, label files, crops) uses the same rule on the
same inputs, so a picture and its label file share a stem."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from cvtool.io.atomic import SinkError, commit, discard, make_folder, new_temporary, write_bytes_atomic

def refuse_filled_folder(folder: str | os.PathLike, overwrite: bool = False, flag: str = "--save") -> None:
    """The one rule for a re-run into the same ``--save`` folder, checked before any work: a folder
    that exists and holds anything is refused (:class:`SinkError`) unless ``overwrite`` (which of
    its files this run would replace is only known after decoding the inputs, too late to refuse
    early, so the message names one file it holds, not one it would replace)."""
    folder = Path(folder)
    if overwrite or not folder.is_dir():
        return
    try:
        first = min((e.name for e in os.scandir(folder)), default=None)
    except OSError:
        return  # make_folder reports an unreadable folder
    if first is not None:
        raise SinkError(f"{flag} {folder} already holds files (e.g. {first}); pass --overwrite to "
                        "write into it anyway, or choose another folder")


class PictureSaver:
    """Saves annotated pictures under ``folder``: one image per still input, one video per
    video input (frames appended as they come). Names follow the input's file name; clashes
    within a run get a numeric suffix; existing files are kept unless ``overwrite``."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, suffix: str = "",
                 flag: str = "--save"):
        self.folder = make_folder(folder, flag)
        self.overwrite, self.suffix = overwrite, suffix
        self._names: dict[str, str] = {}
        self._video: tuple[str, Any, str, Path] | None = None  # (source, writer, tmp, final)

    def _target(self, source: str, ext: str) -> Path:
        stem = unique_stem({"source": source}, self._names)
        return self.folder / f"{stem}{self.suffix}{ext}"

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
            tmp = new_temporary(final)
            h, w = rgb.shape[:2]
            with _native_stderr_silenced():
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps or 25.0, (w, h))
            if not writer.isOpened():
                discard(tmp)
                raise SinkError(f"OpenCV cannot write video {final.name}")
            self._video = (source, writer, tmp, final)
        self._video[1].write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return self._video[3]

    def finish_video(self) -> None:
        if self._video is not None:
            _, writer, tmp, final = self._video
            writer.release()
            self._video = None
            commit(tmp, final, self.overwrite)

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


def unique_stem(record: dict, used: dict[str, str]) -> str:
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


class ArtifactSaver:
    """``--save DIR`` for jobs that write several files per input (a picture and its raw array):
    ``DIR/<stem>[_f<frame>]_<what>.<ext>``, written atomically, never over an existing file
    unless ``overwrite``. Same-stem inputs get ``_1``, ``_2``… as elsewhere."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, flag: str = "--save"):
        self.folder = make_folder(folder, flag)
        self.overwrite = overwrite
        self._names: dict[str, str] = {}

    def stem(self, record: dict) -> str:
        return unique_stem(record, self._names)

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
