"""Scoring relative depth against ground truth, as MiDaS and Depth Anything evaluate.

A relative depth model knows depth only up to scale and shift, so each prediction is first
aligned to the ground truth by least squares **in disparity space** (``s·pred + t ≈ 1/depth``
over the valid pixels), clamped so that no aligned depth exceeds ``depth_cap`` (default: the
farthest valid ground-truth depth of that picture), and turned into depth; then

* AbsRel = mean(|d̂ − d| / d)
* δ1 = share of pixels with max(d̂/d, d/d̂) < 1.25

over the valid ground-truth pixels (finite and > 0; NaN, ±inf and 0 mark missing values).
Both metrics are unit-free, and the alignment absorbs any scale of the ground truth, so
``--gt-scale`` changes only what ``depth_cap`` is measured in.

Ground truth: a file per picture in one folder, matched by the picture's file stem (video
frames: ``<stem>_f<frame:06d>``): ``.npy``/``.npz`` (the first array) or ``.pfm`` as stored,
16-bit (or 8-bit) ``.png``/``.tif`` divided by ``gt_scale``. ``kind`` says whether the
files hold depth or disparity (any inverse depth, e.g. a stereo disparity map).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GT_EXTENSIONS = (".npy", ".npz", ".pfm", ".png", ".tif", ".tiff")


class DepthEvalError(Exception):
    pass


def find_gt(folder: Path, stem: str) -> Path | None:
    for ext in GT_EXTENSIONS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """A greyscale (``Pf``) or colour (``PF``, first channel) PFM file, top row first."""
    with open(path, "rb") as fh:
        kind = fh.readline().strip()
        if kind not in (b"Pf", b"PF"):
            raise ValueError("not a PFM file")
        dims = fh.readline().split()
        while len(dims) < 2:
            dims += fh.readline().split()
        w, h = int(dims[0]), int(dims[1])
        scale = float(fh.readline().strip())
        data = np.fromfile(fh, dtype="<f4" if scale < 0 else ">f4")
    ch = 3 if kind == b"PF" else 1
    if data.size != w * h * ch:
        raise ValueError(f"PFM holds {data.size} values, expected {w * h * ch}")
    data = data.reshape(h, w, ch)[::-1, :, 0]
    return np.ascontiguousarray(data, dtype=np.float64)


def read_gt(path: str | os.PathLike, gt_scale: float = 1.0) -> np.ndarray:
    """The ground-truth map in ``path`` as float64 ``(H, W)``; raises DepthEvalError."""
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("empty .npz")
                arr = z[z.files[0]]
        elif ext == ".pfm":
            arr = read_pfm(path)
        else:
            import cv2

            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
            if arr is None:
                raise ValueError("not a readable image")
            if arr.ndim == 3:
                raise ValueError(f"has {arr.shape[2]} channels; expected a single-channel depth image")
            arr = arr.astype(np.float64) / gt_scale
    except (OSError, ValueError, EOFError) as e:
        raise DepthEvalError(f"{path}: cannot read ground truth ({(str(e).splitlines() or [type(e).__name__])[0][:150]})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DepthEvalError(f"{path}: ground truth must be one number per pixel (H, W), got {arr.dtype} {arr.shape}")
    return arr.astype(np.float64)


def scale_shift(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(s, t)`` minimising Σ(s·pred + t − target)² (closed form; a constant prediction gets
    ``s = 0`` and the target's mean)."""
    p, g = pred.astype(np.float64), target.astype(np.float64)
    n = p.size
    if n == 0:
        return 0.0, 0.0
    pm, gm = p.mean(), g.mean()
    var = ((p - pm) ** 2).sum()
    if not var > 1e-12 * max(1.0, (p ** 2).sum()):
        return 0.0, float(gm)
    s = float(((p - pm) * (g - gm)).sum() / var)
    return s, float(gm - s * pm)


def evaluate(pred: np.ndarray, gt: np.ndarray, kind: str = "depth", depth_cap: float | None = None) -> dict:
    """Align ``pred`` (relative inverse depth) to ``gt`` and score it; see the module text."""
    if kind not in ("depth", "disparity"):
        raise ValueError(f"kind {kind!r}: expected depth or disparity")
    if pred.shape != gt.shape:
        from cvtool.tasks.depth import resize_depth

        pred = resize_depth(pred, gt.shape[1], gt.shape[0])
    valid = np.isfinite(gt) & (gt > 0)
    n = int(valid.sum())
    if n < 2:
        return {"valid_pixels": n, "abs_rel": None, "delta1": None, "scale": None, "shift": None}
    g = gt[valid]
    gt_disp = g if kind == "disparity" else 1.0 / g
    gt_depth = 1.0 / g if kind == "disparity" else g
    p = pred[valid].astype(np.float64)
    s, t = scale_shift(p, gt_disp)
    cap = float(depth_cap) if depth_cap else float(gt_depth.max())
    aligned = np.maximum(s * p + t, 1.0 / cap)
    est = 1.0 / aligned
    ratio = est / gt_depth
    return {"valid_pixels": n,
            "abs_rel": float(np.mean(np.abs(est - gt_depth) / gt_depth)),
            "delta1": float(np.mean(np.maximum(ratio, 1.0 / ratio) < 1.25)),
            "scale": float(s), "shift": float(t)}


@dataclass
class Summary:
    """Per-picture scores collected over a run; means over pictures (each counts once)."""

    abs_rel: list[float] = field(default_factory=list)
    delta1: list[float] = field(default_factory=list)
    matched: int = 0
    unmatched: int = 0
    unusable: int = 0  # ground truth found but with fewer than 2 valid pixels

    def add(self, scores: dict) -> None:
        self.matched += 1
        if scores["abs_rel"] is None:
            self.unusable += 1
            return
        self.abs_rel.append(scores["abs_rel"])
        self.delta1.append(scores["delta1"])

    def result(self) -> dict:
        n = len(self.abs_rel)
        return {"pictures": n, "abs_rel": float(np.mean(self.abs_rel)) if n else None,
                "delta1": float(np.mean(self.delta1)) if n else None,
                "without_gt": self.unmatched, "unusable_gt": self.unusable}
