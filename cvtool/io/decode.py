"""The one place where pixels are decoded.

Every image that enters cvtool passes through :func:`decode_image` (still images; its
:func:`decode_bytes` for encoded bytes already in memory, e.g. read from an object store) or
:func:`iter_video_frames` (video). Both return RGB ``uint8`` arrays of shape ``(H, W, 3)``:

* EXIF orientation is applied, so a phone photo taken upright comes out upright;
* grayscale, 16-bit, float, palette, RGBA/LA and CMYK images become correct 8-bit RGB
  (transparent pixels are composited over white, 16-bit values are scaled, not clipped);
* a pixel-count limit refuses decompression bombs *before* the pixels are allocated.

Failures raise :class:`DecodeError` with a short human reason; callers turn it into an
error record naming the input.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

# FFmpeg (inside OpenCV) would print its own complaints about broken videos to stderr; cvtool
# reports each failure once, in its record. Must be set before cv2 is first imported.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

# Pillow's own guard warns above ~89.5 Mpx and refuses above twice that; we refuse above the
# warning threshold by default (configurable with --max-pixels / CVTOOL_MAX_PIXELS).
from cvtool.settings import DEFAULT_MAX_PIXELS  # noqa: E402,F401  (89,478,485)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .jfif".split()
)
VIDEO_EXTENSIONS = frozenset(".mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv .flv".split())


class DecodeError(Exception):
    """An input could not be turned into pixels; ``str(err)`` is the one-line reason."""


def max_pixels_default() -> int:
    """``CVTOOL_MAX_PIXELS`` or the default; an unusable value is a DecodeError (the CLI refuses
    it up front, see cvtool.settings)."""
    from cvtool.settings import SettingError, max_pixels_from_env

    try:
        return max_pixels_from_env()
    except SettingError as e:
        raise DecodeError(str(e)) from None


@dataclass
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, C-contiguous
    orig_size: tuple[int, int]  # (width, height) after EXIF rotation, before any draft scaling
    mode: str  # the file's pixel mode as Pillow named it (e.g. "RGB", "I;16", "CMYK")
    format: str | None


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError("no such file")
    if os.path.isdir(path):
        raise DecodeError("is a directory, not an image file")
    if not os.access(path, os.R_OK):
        raise DecodeError("permission denied")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")


def decode_image(path: str, max_pixels: int | None = None,
                 draft: Callable[[int, int], tuple[int, int]] | None = None) -> Decoded:
    """Decode an image file to RGB uint8.

    ``draft(width, height) -> (w, h)`` lets JPEG decoding scale down by 1/2, 1/4 or 1/8 in the
    DCT domain when the photo is far larger than the model needs; the result is never smaller
    than the size it returns, and ``orig_size`` still reports the full-resolution size.

    Pillow reads the header (format, size, mode, EXIF) and checks the pixel limit before any
    pixel is allocated. Complete RGB/grayscale JPEGs are then decoded by libjpeg-turbo through
    simplejpeg (or OpenCV) straight into RGB: identical pixels, 25% less time than Pillow on
    this machine (docs/benchmarks.md). Everything else, and any JPEG that looks truncated or
    that the fast path refuses, is decoded by Pillow, which reports damage as an error.
    """
    _check_path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise DecodeError(f"cannot decode image: {e}") from None
    return decode_bytes(data, max_pixels, draft)


def decode_bytes(data: bytes, max_pixels: int | None = None,
                 draft: Callable[[int, int], tuple[int, int]] | None = None) -> Decoded:
    """:func:`decode_image` for an encoded image already in memory (bytes read from an object
    store, an archive or a socket): the same checks, decoders and error texts."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DecodeError("empty file (0 bytes)")
    limit = max_pixels_default() if max_pixels is None else max_pixels
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit below replaces Pillow's global guard
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise DecodeError("not a recognised image format") from None
        w, h = im.size
        if w <= 0 or h <= 0:
            raise DecodeError(f"invalid image size {w}x{h}")
        if limit and w * h > limit:
            raise DecodeError(
                f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
                "(possible decompression bomb; raise it with --max-pixels)")
        fmt, mode = im.format, im.mode
        orientation = _exif_orientation(im)
        rotated = orientation in (5, 6, 7, 8)  # the file's axes are swapped
        reduce = 1
        if draft is not None and fmt == "JPEG":
            # draft speaks of the upright picture; (w, h) are the file's axes
            if rotated:
                dh, dw = draft(h, w)
            else:
                dw, dh = draft(w, h)
            while reduce < 8 and w // (reduce * 2) >= dw and h // (reduce * 2) >= dh:
                reduce *= 2
        rgb = None
        if fmt == "JPEG" and mode in ("RGB", "L") and data.rstrip(b"\0")[-2:] == b"\xff\xd9":
            rgb = _fast_jpeg(data, reduce, w, h)
        if rgb is None:
            if reduce > 1:
                im.draft("RGB", (w // reduce, h // reduce))
            im.load()
            rgb = to_rgb_uint8(im)
    except DecodeError:
        raise
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            raise DecodeError("truncated or corrupt image data") from None
        raise DecodeError(f"cannot decode image: {msg}") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DecodeError(f"cannot decode image: {e}") from None

    rgb = apply_orientation(rgb, orientation)
    full = (h, w) if rotated else (w, h)
    return Decoded(rgb=rgb, orig_size=full, mode=mode, format=fmt)


def _fast_jpeg(data: bytes, reduce: int, w: int, h: int) -> np.ndarray | None:
    try:
        import simplejpeg
    except ImportError:
        return _imdecode_rgb(data, reduce)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // reduce),
                                      min_height=-(-h // reduce))
    except ValueError:
        return None  # let Pillow decode it, or say precisely what is wrong with it


def _imdecode_rgb(data: bytes, reduce: int) -> np.ndarray | None:
    import cv2

    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[reduce] | cv2.IMREAD_IGNORE_ORIENTATION
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if rgb_flag is not None:  # OpenCV ≥ 4.10 decodes straight to RGB
        flags = (flags & ~cv2.IMREAD_COLOR) | rgb_flag
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
        return None
    return arr if rgb_flag is not None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def apply_orientation(rgb: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, C)`` array, as cameras intend."""
    if orientation in (None, 1) or orientation not in range(2, 9):
        return rgb
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](rgb))


def _exif_orientation(im) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:  # malformed EXIF is not worth failing an image over
        return None


def to_rgb_uint8(im) -> np.ndarray:
    """Convert any Pillow image to an ``(H, W, 3)`` uint8 RGB array."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im)
        if mode == "F":
            a = a.astype(np.float32)
            finite = np.isfinite(a)
            a = np.where(finite, a, 0)
            hi = float(a.max()) if a.size else 0.0
            scale = 255.0 if hi <= 1.0 else (255.0 / 65535.0 if hi > 255.0 else 1.0)
            g = np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
        else:
            a = a.astype(np.int64)
            hi = int(a.max()) if a.size else 0
            # 16-bit data is scaled to 8 bits; 32-bit "I" images holding 8-bit values stay as they are.
            g = (np.clip(a, 0, 65535) >> 8).astype(np.uint8) if hi > 255 else np.clip(a, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        white.alpha_composite(im)
        return np.ascontiguousarray(np.asarray(white.convert("RGB")))
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def _warn(msg: str) -> None:
    print(f"cvtool: warning: {msg}", file=sys.stderr)


def iter_video_frames(path: str, stride: int = 1, max_pixels: int | None = None,
                      warn: Callable[[str], None] | None = _warn,
                      ) -> Iterator[tuple[int, float | None, np.ndarray, float]]:
    """Yield ``(frame_index, timestamp_s, rgb, fps)`` for every ``stride``-th frame.

    Frames are read one at a time (skipped frames are only grabbed: no colour conversion or
    copy), so memory stays bounded however long the video is. A video that ends well before the
    frame count its header announces (cut short, damaged) is read as far as it goes and
    ``warn`` says so.
    """
    import cv2

    _check_path(path)
    stride = max(1, int(stride))
    limit = max_pixels_default() if max_pixels is None else max_pixels
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise DecodeError("cannot open video")
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if limit and w * h > limit:
            raise DecodeError(f"video frames are {w}x{h}, over the pixel limit of {limit:,}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        index = 0
        produced = 0
        while True:
            if index % stride:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            produced += 1
            yield index, (index / fps if fps > 0 else None), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), fps
            index += 1
        if produced == 0:
            raise DecodeError("video has no decodable frames")
        # some containers only estimate the count (duration × fps): allow 2% and a frame
        if warn is not None and announced > 0 and index < announced * 0.98 - 1:
            warn(f"{path}: the video ends after {index} of the {announced} frames its header announces "
                 "(cut short or damaged); the frames that could be read were used")
    finally:
        cap.release()
