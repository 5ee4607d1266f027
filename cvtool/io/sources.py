"""Turning what the user typed into a stream of inputs.

An input may be a file, a folder (searched recursively for image files, sorted), a glob, a
video file (streamed frame by frame), or ``-`` for paths read from stdin, one per line (or
separated by NUL characters, ``find -print0``, so that names may hold newlines).
Nothing here decodes pixels (that is :mod:`cvtool.io.decode`); inputs that cannot exist
become ``Source(kind="error")`` so that every input still yields one record.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np

from cvtool.io.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DecodeError


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "image" | "video" | "error"
    error: str | None = None


@dataclass
class Frame:
    """One decoded picture: a still image or one frame of a video."""

    source: str
    rgb: np.ndarray | None  # (H, W, 3) uint8
    orig_size: tuple[int, int]  # (width, height) of the full-resolution picture
    frame: int | None = None  # frame index for video
    timestamp: float | None = None  # seconds, for video
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.source if self.frame is None else f"{self.source}#{self.frame}"


def _kind_of(path: str) -> str:
    return "video" if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS else "image"


def _walk(folder: str) -> Iterator[str]:
    found = []
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs.sort()
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(root, name))
    found.sort()
    yield from found


def _expand_one(arg: str, from_glob: bool = False) -> Iterator[Source]:
    if os.path.isdir(arg):
        if from_glob:
            yield Source(arg, "error", "is a directory, not an image file")
            return
        n = 0
        for path in _walk(arg):
            n += 1
            yield Source(path, _kind_of(path))
        if n == 0:
            yield Source(arg, "error", "folder contains no image files")
        return
    if os.path.lexists(arg):
        yield Source(arg, _kind_of(arg))
        return
    if not from_glob and glob.has_magic(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            yield Source(arg, "error", "pattern matched no files")
        for m in matches:
            yield from _expand_one(m, from_glob=True)
        return
    yield Source(arg, "error", "no such file or directory")


def expand(inputs: Iterable[str], stdin: TextIO | None = None, null: bool = False) -> Iterator[Source]:
    """Expand command-line inputs lazily, in order. ``-`` reads paths from ``stdin``
    (:func:`stdin_paths`)."""
    for arg in inputs:
        if arg == "-":
            for path in stdin_paths(stdin, null):
                yield from _expand_one(path)
        else:
            yield from _expand_one(arg)


def stdin_paths(stream: TextIO | None = None, null: bool = False) -> Iterator[str]:
    """The paths listed on ``stream`` (default: stdin), as they arrive: one per line (blank lines
    skipped), or with ``null`` separated by NUL characters (``find -print0``, ``xargs -0``), where
    a name is taken byte for byte (newlines and spaces included; only empty entries are skipped)."""
    stream = stream if stream is not None else sys.stdin
    if not null:
        for line in stream:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line
        return
    raw = getattr(stream, "buffer", None)
    if raw is not None:  # the bytes, decoded as file names are (undecodable bytes kept)
        read = getattr(raw, "read1", raw.read)
        chunks, sep, decode = iter(lambda: read(65536), b""), b"\0", os.fsdecode
    else:  # a text stream
        chunks, sep, decode = iter(lambda: stream.read(65536), ""), "\0", str
    pending = sep[:0]
    for chunk in chunks:
        *names, pending = (pending + chunk).split(sep)
        for name in names:
            if name:
                yield decode(name)
    if pending:
        yield decode(pending)


class NoInputs(Exception):
    """The inputs held nothing at all (only ``-``, and stdin listed no paths): nothing to do."""


def nonempty(items: Iterable, what: str = "standard input listed no paths") -> Iterator:
    """``items`` unchanged, after making sure now that there is at least one (else
    :class:`NoInputs`). Takes the first item early; the rest stay lazy."""
    it = iter(items)
    try:
        first = next(it)
    except StopIteration:
        raise NoInputs(f"no inputs ({what})") from None
    return itertools.chain([first], it)


class Failed:
    """An input (or one video) that produced no picture; carries the one-line reason."""

    __slots__ = ("source", "error", "frame")

    def __init__(self, source: str, error: str, frame: int | None = None):
        self.source, self.error, self.frame = source, error, frame


def frame_jobs(sources: Iterable[Source], load_image: Callable[[str], Frame],
               vid_stride: int = 1, max_pixels: int | None = None
               ) -> Iterator[Callable[[], "Frame | Failed"]]:
    """Yield zero-argument jobs, one per picture, in input order.

    Image jobs decode when called (so a thread pool can run them in parallel); video frames are
    decoded while this generator advances (a video decodes sequentially) and their jobs just
    hand the frame over. Any failure becomes a :class:`Failed` for that input.
    """
    from cvtool.io.decode import iter_video_frames

    for src in sources:
        if src.kind == "error":
            yield (lambda s=src: Failed(s.path, s.error))
        elif src.kind == "image":
            yield (lambda p=src.path: _guard(p, load_image))
        else:
            try:
                for index, ts, rgb, fps in iter_video_frames(src.path, vid_stride, max_pixels):
                    frame = Frame(src.path, rgb, (rgb.shape[1], rgb.shape[0]), index, ts,
                                  meta={"fps": fps / vid_stride if fps else None})
                    yield (lambda f=frame: f)
            except DecodeError as e:
                yield (lambda p=src.path, msg=str(e): Failed(p, msg))


def _guard(path: str, load_image: Callable[[str], Frame]) -> "Frame | Failed":
    try:
        return load_image(path)
    except DecodeError as e:
        return Failed(path, str(e))
    except MemoryError:
        return Failed(path, "out of memory while decoding")
    except Exception as e:  # a decoder bug on one odd file must not end the run
        return Failed(path, f"internal error while decoding: {type(e).__name__}: {e}")
