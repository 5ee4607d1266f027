"""Object detection: the model's NMS output → boxes in picture pixels, filtered and ranked.

The network (torch or ONNX) already ran per-class NMS (see :mod:`cvtool.models.detection`) and
returns ``(K, 7)`` rows ``[batch_index, x1, y1, x2, y2, score, class_id]`` with normalised
coordinates. Here, for every picture: optional class filter, optional class-agnostic merging
(greedy NMS over all classes), the ``max_det`` best, and coordinates scaled to the original
picture (the detector saw it stretched to a square, so x and y scale separately), clipped.
"""

from __future__ import annotations

import numpy as np

from cvtool.io.sources import Frame
from cvtool.models.loader import LoadedModel

TASK = "detect"


class ClassesError(ValueError):
    pass


def parse_classes(text: str | None, labels: tuple[str, ...]) -> set[int] | None:
    """``"person,cat,62"`` → class ids; names are case-insensitive, ids are the model's own."""
    if not text:
        return None
    by_name = {name.lower(): i for i, name in enumerate(labels) if name and not name.startswith("__")}
    ids = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and 0 < int(part) < len(labels) and labels[int(part)]:
            ids.add(int(part))
        elif part.lower() in by_name:
            ids.add(by_name[part.lower()])
        else:
            import difflib

            close = difflib.get_close_matches(part.lower(), by_name, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ClassesError(f"--classes: unknown class {part!r}{hint}")
    return ids


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` x1y1x2y2 boxes → ``(N, M)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS, by decreasing score (class-agnostic merging)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    suppressed = np.zeros(len(order), bool)
    ious = iou_matrix(boxes[order], boxes[order])
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= ious[i] > iou
    return np.array(keep, dtype=np.int64)


class Detector:
    """Turns the model's detections for a batch into per-picture result fields."""

    def __init__(self, model: LoadedModel, conf: float = 0.3, iou: float = 0.6, classes: set[int] | None = None,
                 max_det: int = 100, agnostic: bool = False):
        self.model, self.labels = model, model.labels
        self.conf, self.iou, self.classes = float(conf), float(iou), classes
        self.max_det, self.agnostic = int(max_det), agnostic
        self.letterbox = model.preprocess.letterbox
        # What the graph's own NMS takes (see cvtool.models.detection).
        self.extra_inputs = {"iou_threshold": np.array([self.iou], np.float32),
                             "score_threshold": np.array([self.conf], np.float32)}
        known = [i for i, n in enumerate(self.labels) if n and not n.startswith("__")]
        self.contiguous = {cid: k for k, cid in enumerate(known)}  # 90-id numbering → 0..79 (YOLO files)

    def __call__(self, dets: np.ndarray, frames: list[Frame]) -> list[dict]:
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 7)
        out = []
        for b, frame in enumerate(frames):
            d = dets[dets[:, 0] == b]
            d = d[d[:, 5] > self.conf]
            if self.classes is not None:
                d = d[np.isin(d[:, 6].astype(int), list(self.classes))]
            if self.agnostic and len(d):
                d = d[greedy_nms(d[:, 1:5], d[:, 5], self.iou)]
            d = d[np.argsort(-d[:, 5], kind="stable")][: self.max_det]
            w, h = frame.orig_size
            # normalised → picture pixels: a letterboxed square spans the longer side on both axes
            sx, sy = (max(w, h), max(w, h)) if self.letterbox else (w, h)
            boxes = d[:, 1:5] * np.array([sx, sy, sx, sy])
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            items = []
            for box, score, cid in zip(boxes, d[:, 5], d[:, 6].astype(int)):
                label = self.labels[cid] if 0 <= cid < len(self.labels) else str(cid)
                items.append({"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                              "class_id": int(cid), "label": label or str(cid)})
            out.append({"count": len(items), "detections": items})
        return out
