"""Masks in and out: class-index palette PNGs, binary mask PNGs, COCO run-length encoding, and
the ``--save`` sink of ``cvtool segment``.

* A **class-index PNG** stores one class id per pixel (0–255) as an 8-bit palette image, coloured
  with Pascal VOC's palette, exactly like VOC's ``SegmentationClass`` files: image viewers show
  colours, and any reader that takes the raw indices (PIL's ``np.array(Image.open(p))``) gets
  the class ids back. 255 is VOC's "ignore" value (drawn cream).
* **COCO RLE** (``{"size": [h, w], "counts": "..."}``) is the compressed string form COCO's
  annotation and result files use (pycocotools ``mask.encode``): run lengths of the mask read in
  column-major order, starting with a run of zeros, written with COCO's 6-bit variable-length
  code. Written here so that pycocotools stays an optional dependency; the tests check it
  against pycocotools when that is installed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np

MASK_KEY = "segment_mask"  # where the segment task leaves a picture's mask(s) on its Frame.meta
IGNORE = 255


class MaskError(Exception):
    """A mask file cannot be read as class indices; the message names it."""


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map ``(n, 3)`` uint8: class bits spread over the high bits of R, G, B
    (0 black, 1 maroon (128, 0, 0), 15 person (192, 128, 128), 255 (224, 224, 192))."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def encode_index_png(index: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """``(H, W)`` class ids (0–255) → bytes of an 8-bit palette PNG."""
    from PIL import Image

    index = np.asarray(index)
    if index.ndim != 2:
        raise ValueError(f"class-index mask must be (H, W), got {index.shape}")
    if index.size and (index.min() < 0 or index.max() > 255):
        raise ValueError("class ids must be in 0..255 for an 8-bit palette PNG")
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette((voc_palette() if palette is None else palette).astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_binary_png(mask: np.ndarray) -> bytes:
    """``(H, W)`` bool → bytes of a 1-bit PNG (0 = background, 1 = object; 0/255 when read as L)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(mask, bool))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def read_index_png(path: str | os.PathLike, palette: np.ndarray | None = None) -> np.ndarray:
    """A ground-truth mask as ``(H, W)`` int class ids.

    Palette ("P") and greyscale ("L", "I;16", "I") PNGs give their values directly. An RGB(A)
    colour mask is mapped back through the VOC palette; a colour that is not in it is an error.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L", "I;16", "I;16B", "I;16L", "I", "1"):
                return np.asarray(im).astype(np.int64)
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"))
            else:
                raise MaskError(f"{path}: unsupported mask mode {mode} (expected a class-index PNG: palette or greyscale)")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        if isinstance(e, MaskError):
            raise
        raise MaskError(f"{path}: not a readable mask image ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    pal = (voc_palette() if palette is None else palette).astype(np.int64)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    uniq, inv = np.unique(code, return_inverse=True)
    missing = [int(u) for u in uniq if int(u) not in lut]
    if missing:
        u = missing[0]
        raise MaskError(f"{path}: colour ({u >> 16}, {(u >> 8) & 255}, {u & 255}) is not a VOC palette colour; "
                        "give class-index masks (palette or greyscale PNG)")
    return np.array([lut[int(u)] for u in uniq], np.int64)[inv].reshape(code.shape)


# ---------------------------------------------------------------------------------------- COCO RLE

def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths of a ``(H, W)`` mask: column-major, zeros first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return ([0] + runs) if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    """COCO's compressed form of run lengths (pycocotools ``rleToString``): each count (from the
    fourth on, as the difference to the count two before) in 5-bit groups, low bits first, with
    a continuation bit, offset into printable ASCII from ``'0'``."""
    out = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end in ...11111
            more = (x != -1) if (c & 0x10) else (x != 0)
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """Inverse of :func:`counts_to_string` (pycocotools ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask → ``{"size": [H, W], "counts": str}`` as pycocotools ``mask.encode``
    gives it (with ``counts`` decoded to str, as COCO's JSON files hold it)."""
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}


def rle_decode(rle: dict) -> np.ndarray:
    """``{"size": [H, W], "counts": str | list}`` → ``(H, W)`` bool mask."""
    h, w = rle["size"]
    counts = rle["counts"] if isinstance(rle["counts"], list) else string_to_counts(rle["counts"])
    if sum(counts) != h * w:
        raise ValueError(f"RLE covers {sum(counts)} pixels, size says {h}x{w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T


# ---------------------------------------------------------------------------------------- --save

class MaskSaver:
    """``cvtool segment --save DIR``: per picture a class-index PNG (semantic) or one 1-bit PNG
    per object (instances), plus a coloured overlay; for video, the overlay is one video and
    the masks are per-frame PNGs. Names: ``DIR/<stem>[_f<frame>]_mask.png``,
    ``DIR/<stem>[_f<frame>]_obj<NN>_<label>.png``, ``DIR/<stem>_overlay.<ext>``. Files are written
    atomically and never over existing ones unless ``overwrite``. ``overlay(rgb, record, masks)``
    draws the picture (see :mod:`cvtool.render.masks`)."""

    needs_pixels = True

    def __init__(self, folder: str | os.PathLike, overwrite: bool,
                 overlay: Callable[[np.ndarray, dict, object], np.ndarray]):
        from cvtool.io.sinks import ArtifactSaver, PictureSaver

        self.files = ArtifactSaver(folder, overwrite)
        self.pictures = PictureSaver(folder, overwrite, suffix="_overlay")
        self.folder, self.overwrite, self.overlay = Path(folder), overwrite, overlay

    def _write(self, name: str, data: bytes) -> Path:
        return self.files.write(name, data)

    def add(self, record: dict, frame) -> None:
        masks = frame.meta.get(MASK_KEY)
        if masks is None:
            return
        stem = self.files.stem(record)
        if record.get("mode") == "instance":
            h, w = frame.orig_size[1], frame.orig_size[0]
            for n, (inst, m) in enumerate(zip(record["instances"], masks)):
                label = (inst["label"] or str(inst["class_id"])).replace("/", "_").replace(" ", "_")
                inst["mask_png"] = str(self._write(f"{stem}_obj{n:02d}_{label}.png",
                                                   encode_binary_png(m.full(h, w))))
        else:
            record["mask_png"] = str(self._write(f"{stem}_mask.png", encode_index_png(masks)))
        drawn = self.overlay(frame.rgb, record, masks)
        record["saved"] = str(self.pictures.add_video_frame(frame.source, drawn, frame.meta.get("fps"))
                              if frame.frame is not None else self.pictures.save_image(frame.source, drawn))

    def close(self, interrupted: bool = False) -> None:
        self.pictures.close()
