"""Semantic segmentation accuracy against class-index ground-truth masks (Pascal VOC style).

Ground truth is a folder of PNGs holding one class id per pixel (palette or greyscale, as VOC's
``SegmentationClass``), matched to pictures by file stem: ``photo.jpg`` ↔ ``GT_DIR/photo.png``,
frame 12 of ``clip.mp4`` ↔ ``GT_DIR/clip_f000012.png``. Pixels labelled 255 are ignored.

The metric is VOC's: one confusion matrix over all evaluated pixels; per class
``IoU = TP / (TP + FP + FN)``; mIoU is the mean over the classes that occur in the ground truth
or the predictions (a class that is in neither has no IoU and is left out); pixel accuracy is
the share of non-ignored pixels predicted right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvtool.io.masks import IGNORE, MaskError, read_index_png


class EvalError(Exception):
    pass


def gt_folder(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"--eval {path}: no such folder (expected a folder of class-index PNG masks)")
    return p


def gt_path(folder: Path, source: str, frame: int | None) -> Path:
    stem = Path(source).stem + (f"_f{frame:06d}" if frame is not None else "")
    return folder / f"{stem}.png"


class Confusion:
    """Accumulates a ``(C, C)`` confusion matrix (rows: ground truth, columns: prediction)."""

    def __init__(self, num_classes: int):
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.images = 0

    @staticmethod
    def check(gt: np.ndarray, pred: np.ndarray, n: int) -> str | None:
        """Why ``gt`` cannot be scored against ``pred`` (None when it can)."""
        if gt.shape != pred.shape:
            return (f"ground truth is {gt.shape[1]}x{gt.shape[0]} pixels, the picture "
                    f"{pred.shape[1]}x{pred.shape[0]}")
        bad = (gt != IGNORE) & ((gt < 0) | (gt >= n))
        if bad.any():
            return (f"ground truth has class id {int(gt[bad][0])}, but the model knows ids 0-{n - 1} "
                    f"(and {IGNORE} = ignore)")
        return None

    @staticmethod
    def matrix_of(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
        valid = gt != IGNORE
        idx = gt[valid].astype(np.int64) * n + pred[valid].astype(np.int64)
        return np.bincount(idx, minlength=n * n).reshape(n, n)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        m = self.matrix_of(gt, pred, self.n)
        self.matrix += m
        self.images += 1
        return m


def scores(matrix: np.ndarray, labels: tuple[str, ...] | None = None) -> dict:
    """mIoU, pixel accuracy and per-class IoU of a confusion matrix."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    total = matrix.sum()
    per_class = {}
    for k in np.flatnonzero(union):
        name = labels[k] if labels is not None and k < len(labels) else str(k)
        per_class[name] = round(float(tp[k] / union[k]), 6)
    return {"miou": round(float(np.mean(list(per_class.values()))), 6) if per_class else None,
            "pixel_acc": round(float(tp.sum() / total), 6) if total else None,
            "pixels": int(total), "per_class_iou": per_class}


def load_gt(path: Path) -> np.ndarray:
    try:
        return read_index_png(path)
    except MaskError as e:
        raise EvalError(str(e)) from None
