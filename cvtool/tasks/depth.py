"""Monocular relative depth: the network's map → a map at the picture's own size, its stats,
and the files ``--save`` writes.

The models (:mod:`cvtool.models.zoo.hf_depth`) output **relative inverse depth** ``(B, h, w)``
at their input size: disparity-like, larger = nearer, known only up to an unknown scale and
shift (no units). For every picture the map is resized to the picture's full resolution as
the reference post-processing does (transformers' ``post_process_depth_estimation`` and
depth-estimation pipeline: bicubic, ``align_corners=False``; OpenCV's cubic kernel is the same
one, within 1e-5 of the map's range), attached to the frame as ``frame.meta["depth"]``
(float32 ``(H, W)``) for the sinks, and summarised in the record.

16-bit PNGs hold ``round((d - min) / (max - min) * 65535)`` with the record's ``depth.min``
and ``depth.max`` (also stored in the PNG's text chunks ``cvtool.depth_min``/``max``), so
``d ≈ min + png / 65535 * (max - min)`` within half a step.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cvtool.io.sources import Frame
from cvtool.models.loader import LoadedModel

TASK = "depth"
KIND = "relative_inverse"  # larger = nearer; unknown scale and shift
PNG16_MAX = 65535


def resize_depth(d: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(h, w)`` float map → ``(height, width)`` float32, bicubic (a = -0.75, half-pixel
    centres) like ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``,
    which the reference post-processing uses. Like it, the result may overshoot the network's
    range slightly near sharp edges."""
    import cv2

    d = np.ascontiguousarray(d, dtype=np.float32)
    h, w = d.shape
    if (w, h) == (width, height):
        return d
    return cv2.resize(d, (int(width), int(height)), interpolation=cv2.INTER_CUBIC)


def f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (``0.1``, not ``0.100000001…``)."""
    return float(str(np.float32(v)))


def sig(v: float, digits: int = 6) -> float:
    return float(f"{float(v):.{digits}g}")


def depth_stats(d: np.ndarray) -> dict:
    """min/max (exact float32 values) and median/mean (6 significant digits) of a map."""
    return {"min": f32(d.min()), "max": f32(d.max()), "median": sig(np.median(d)),
            "mean": sig(d.mean(dtype=np.float64))}


class DepthEstimator:
    """Turns the model's output ``(B, h, w)`` (or ``(B, 1, h, w)``) into per-picture fields and
    leaves the full-size map on each frame (``frame.meta["depth"]``)."""

    def __init__(self, model: LoadedModel | None = None):
        self.model = model

    def __call__(self, out: np.ndarray, frames: list[Frame]) -> list[dict]:
        out = np.asarray(out)
        if out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 3 or out.shape[0] != len(frames):
            raise ValueError(f"depth model output has shape {out.shape}, expected ({len(frames)}, H, W)")
        results = []
        extra = {"weights": self.model.provenance()} if self.model is not None and self.model.provenance() else {}
        for net, frame in zip(out, frames):
            net = np.nan_to_num(net.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
            w, h = frame.orig_size
            d = resize_depth(net, w, h)
            frame.meta["depth"] = d
            results.append({"depth": {"kind": KIND, **depth_stats(d),
                                      "size": {"width": int(w), "height": int(h)},
                                      "network_size": {"width": int(net.shape[1]), "height": int(net.shape[0])}},
                            **extra})
        return results


# ---- 16-bit PNGs ---------------------------------------------------------------------------

def to_uint16(d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``[lo, hi]`` → ``0..65535``, rounded; a constant map (``hi <= lo``) becomes zeros."""
    if not hi > lo:
        return np.zeros(d.shape, np.uint16)
    q = (np.asarray(d, np.float64) - lo) * (PNG16_MAX / (hi - lo))
    return np.rint(np.clip(q, 0, PNG16_MAX)).astype(np.uint16)


def from_uint16(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The inverse of :func:`to_uint16` (float64), exact to within half a step of ``hi - lo``."""
    return lo + np.asarray(q, np.float64) * ((hi - lo) / PNG16_MAX)


def png16_bytes(d: np.ndarray, lo: float, hi: float) -> bytes:
    """A 16-bit greyscale PNG of ``d`` scaled from ``[lo, hi]``, with ``lo``/``hi`` and the
    meaning of the values in its text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("cvtool.depth_min", repr(lo))
    info.add_text("cvtool.depth_max", repr(hi))
    info.add_text("cvtool.depth_kind", KIND)
    info.add_text("cvtool.depth_decode", "depth = depth_min + value / 65535 * (depth_max - depth_min)")
    buf = io.BytesIO()
    Image.fromarray(to_uint16(d, lo, hi)).save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def read_png16(path: str | os.PathLike) -> np.ndarray:
    """A depth map back from a 16-bit PNG that cvtool wrote (float64, its original values)."""
    from PIL import Image

    with Image.open(path) as im:
        lo, hi = float(im.text["cvtool.depth_min"]), float(im.text["cvtool.depth_max"])
        q = np.asarray(im, dtype=np.uint16)
    return from_uint16(q, lo, hi)


# ---- --save --------------------------------------------------------------------------------

class DepthFiles:
    """``--save DIR`` for depth: per still picture ``<stem>_depth.png`` (colour-mapped),
    ``<stem>_depth16.png`` (16-bit, see the module text) and with ``npy`` ``<stem>_depth.npy``
    (float32 ``(H, W)``); per video ``<stem>_depth.webm`` (or ``.mp4``), colour-mapped frames at
    the video's size and rate, and with ``npy`` ``<stem>_f<frame>_depth.npy`` per frame.

    The folder is created at the first file, so a run that fails before any picture leaves
    nothing behind. Each still picture's files are checked before any is written: existing
    files are never replaced unless ``overwrite``, and a refusal writes none of the set."""

    needs_pixels = False  # the map is drawn on its own, not over the photo

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, cmap: str = "turbo",
                 npy: bool = False):
        from cvtool.io.sinks import SinkError

        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--save {folder}: exists and is not a folder")
        self.overwrite, self.cmap, self.npy = overwrite, cmap, npy
        self._art = None
        self._video = None

    def _artifacts(self):
        if self._art is None:
            from cvtool.io.sinks import ArtifactSaver

            self._art = ArtifactSaver(self.folder, self.overwrite)
        return self._art

    def add(self, record: dict, frame) -> None:
        from cvtool.io.sinks import SinkError, write_bytes_atomic
        from cvtool.render.depth import colorize_depth

        d = frame.meta.get("depth")
        if d is None or "depth" not in record:
            return
        lo, hi = record["depth"]["min"], record["depth"]["max"]
        color = colorize_depth(d, lo, hi, self.cmap)
        art = self._artifacts()
        stem = art.stem(record)
        if frame.frame is None:
            names = [f"{stem}_depth.png", f"{stem}_depth16.png"] + ([f"{stem}_depth.npy"] if self.npy else [])
            for name in names:
                if (self.folder / name).exists() and not self.overwrite:
                    raise SinkError(f"{self.folder / name} already exists (pass --overwrite to replace it)")
            record["saved"] = str(art.png(f"{stem}_depth", color))
            path16 = self.folder / f"{stem}_depth16.png"
            try:
                write_bytes_atomic(path16, png16_bytes(d, lo, hi), self.overwrite)
            except OSError as e:
                raise SinkError(f"cannot write {path16} ({e.strerror})") from None
            record["depth16"] = str(path16)
        else:
            if self._video is None:
                from cvtool.io.sinks import PictureSaver

                self._video = PictureSaver(self.folder, self.overwrite, suffix="_depth")
            record["saved"] = str(self._video.add_video_frame(frame.source, color, frame.meta.get("fps")))
        if self.npy:
            record["npy"] = str(art.npy(f"{stem}_depth", d))

    def close(self, interrupted: bool = False) -> None:
        if self._video is not None:
            self._video.close()


# ---- export parity -------------------------------------------------------------------------

def compare_depth(ref: np.ndarray, got: np.ndarray, tol: float, pairs: int = 20000) -> tuple[float, float]:
    """Two runs' depth maps ``(N, h, w)`` → (largest difference relative to each map's range in
    ``ref``, share of pixel pairs whose nearer/farther order agrees). Pairs closer than
    ``max(1%, 2·tol)`` of the range in ``ref`` are ties and not counted. The pairs are the
    same on every run (fixed seed)."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    rng = np.random.default_rng(0)
    worst, agree, counted = 0.0, 0, 0
    margin = max(0.01, 2 * tol)
    for r, g in zip(ref, got):
        span = float(r.max() - r.min()) or 1.0
        worst = max(worst, float(np.abs(r - g).max()) / span)
        a, b = rng.integers(0, r.size, pairs), rng.integers(0, r.size, pairs)
        sure = np.abs(r[a] - r[b]) > margin * span
        agree += int((np.sign(r[a] - r[b]) == np.sign(g[a] - g[b]))[sure].sum())
        counted += int(sure.sum())
    return worst, (agree / counted if counted else 1.0)
