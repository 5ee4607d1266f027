"""The one place where pixels are decoded.

Every image that enters cvtool passes through :func:`decode_image` (still images) or
:func:`iter_video_frames` (video). Both return RGB ``uint8`` arrays of shape ``(H, W, 3)``:

* EXIF orientation is applied, so a phone photo taken upright comes out upright;
* grayscale, 16-bit, float, palette, RGBA/LA and CMYK images become correct 8-bit RGB
  (transparent pixels are composited over white, 16-bit values are scaled, not clipped);
* a pixel-count limit refuses decompression bombs *before* the pixels are allocated.

Failures raise :class:`DecodeError` with a short human reason; callers turn it into an
error record naming the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

# Pillow's own guard warns above ~89.5 Mpx and refuses above twice that; we refuse above the
# warning threshold by default (configurable with --max-pixels / CVTOOL_MAX_PIXELS).
DEFAULT_MAX_PIXELS = 89_478_485

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .jfif".split()
)
VIDEO_EXTENSIONS = frozenset(".mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv .flv".split())


class DecodeError(Exception):
    """An input could not be turned into pixels; ``str(err)`` is the one-line reason."""


def max_pixels_default() -> int:
    env = os.environ.get("CVTOOL_MAX_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    return DEFAULT_MAX_PIXELS


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
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _check_path(path)
    limit = max_pixels_default() if max_pixels is None else max_pixels
    try:
        with open(path, "rb") as fh:
            try:
                # Our own limit replaces Pillow's global guard (checked below, before load()).
                Image.MAX_IMAGE_PIXELS = None
                im = Image.open(fh)
            except UnidentifiedImageError:
                raise DecodeError("not a recognised image format") from None
            w, h = im.size
            if w <= 0 or h <= 0:
                raise DecodeError(f"invalid image size {w}x{h}")
            if limit and w * h > limit:
                raise DecodeError(
                    f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
                    "(possible decompression bomb; raise it with --max-pixels)")
            fmt = im.format
            mode = im.mode
            orientation = _exif_orientation(im)
            if draft is not None and fmt == "JPEG" and mode in ("RGB", "L", "YCbCr"):
                if orientation in (5, 6, 7, 8):  # rotated 90°: the file's axes are swapped
                    dh, dw = draft(h, w)
                else:
                    dw, dh = draft(w, h)
                if dw < w and dh < h:
                    im.draft("RGB", (dw, dh))
            im.load()
    except DecodeError:
        raise
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            raise DecodeError("truncated or corrupt image data") from None
        raise DecodeError(f"cannot decode image: {msg}") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DecodeError(f"cannot decode image: {e}") from None

    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
    full = (w, h) if orientation not in (5, 6, 7, 8) else (h, w)
    rgb = to_rgb_uint8(im)
    return Decoded(rgb=rgb, orig_size=full, mode=mode, format=fmt)


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


def probe_video(path: str) -> dict:
    """Open a video and report frame count, fps and size; raises DecodeError if unreadable."""
    import cv2

    _check_path(path)
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise DecodeError("cannot open video")
        return {
            "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        }
    finally:
        cap.release()


def iter_video_frames(path: str, stride: int = 1, max_pixels: int | None = None
                      ) -> Iterator[tuple[int, float | None, np.ndarray, float]]:
    """Yield ``(frame_index, timestamp_s, rgb, fps)`` for every ``stride``-th frame.

    Frames are read one at a time (skipped frames are grabbed, not decoded), so memory stays
    bounded however long the video is.
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
    finally:
        cap.release()
