"""Segmentation: network output → masks at the picture's own resolution → record fields.

Semantic (``head="semantic"``): the network gives logits ``(B, C, S, S)`` for the letterboxed
square (or the stretched picture). For each picture the padding is cut off, every class's
logits are resized (bilinear) to the picture's size and the class with the largest logit wins
each pixel, which is "upsample the logits, then argmax" computed one class at a time so that
memory stays at two float planes however many classes there are.

Instance (``head="instance"``): the network gives rows ``[batch, x1, y1, x2, y2, score, class,
M×M mask probabilities]`` (:class:`cvtool.models.segmentation.InstanceRows`). Each mask is
pasted into its box in the picture's own pixels as torchvision's ``paste_masks_in_image`` does
(one pixel of zero padding, box widened to match, bilinear resize) and thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvtool.io.masks import MASK_KEY, rle_encode
from cvtool.io.sources import Frame
from cvtool.models.loader import LoadedModel

TASK = "segment"
MASK_THRESHOLD = 0.5
INSTANCE_IOU = 0.5  # Mask R-CNN's own NMS threshold (torchvision's default)


def mode_of(model: LoadedModel) -> str:
    """"semantic" or "instance" (cvtool's ONNX files are always semantic: its instance models run
    on torch; foreign segment files, e.g. Ultralytics, are instance models)."""
    if getattr(model, "foreign", None) is not None:
        return "instance"
    return model.spec.head if model.spec is not None and model.spec.head in ("semantic", "instance") else "semantic"


def valid_region(width: int, height: int, side: int, letterbox: bool) -> tuple[int, int]:
    """(w, h) of the part of a ``side``×``side`` network input that holds the picture."""
    if not letterbox:
        return side, side
    s = side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def logits_to_mask(logits: np.ndarray, size: tuple[int, int], letterbox: bool) -> np.ndarray:
    """``(C, S, S)`` logits → ``(H, W)`` uint8 class ids for a picture of ``size`` = (W, H)."""
    import cv2

    w, h = size
    c, sh, sw = logits.shape
    if letterbox:
        nw, nh = valid_region(w, h, sw, True)
        logits = logits[:, :nh, :nw]
    if logits.shape[1:] == (h, w):
        return logits.argmax(0).astype(np.uint8)
    best = cv2.resize(np.ascontiguousarray(logits[0], dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    index = np.zeros((h, w), np.uint8)
    for k in range(1, c):
        plane = cv2.resize(np.ascontiguousarray(logits[k], dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        win = plane > best  # strict: ties keep the lower class id, as argmax does
        index[win] = k
        np.maximum(best, plane, out=best)
    return index


def class_fractions(index: np.ndarray, labels: tuple[str, ...]) -> list[dict]:
    """The classes present in a class-index mask, most pixels first."""
    counts = np.bincount(index.ravel(), minlength=len(labels))
    total = max(1, index.size)
    present = [int(k) for k in np.flatnonzero(counts)]
    present.sort(key=lambda k: (-counts[k], k))
    return [{"class_id": k, "label": labels[k] if k < len(labels) else str(k), "pixels": int(counts[k]),
             "fraction": round(float(counts[k]) / total, 6)} for k in present]


class SemanticSegmenter:
    """Turns a batch of logits into per-picture fields; keeps the mask on the frame when
    ``keep_masks`` (for ``--save`` and ``--eval``). ``classes``: other classes' pixels become
    background (class 0)."""

    def __init__(self, model: LoadedModel, classes: set[int] | None = None, keep_masks: bool = False):
        self.labels = model.labels
        self.letterbox = model.preprocess.letterbox
        self.keep = keep_masks
        self.lut = None
        if classes is not None:
            self.lut = np.zeros(256, np.uint8)
            for k in classes | {0}:
                self.lut[k] = k

    def __call__(self, logits: np.ndarray, frames: list[Frame]) -> list[dict]:
        if logits.ndim != 4 or logits.shape[0] != len(frames) or logits.shape[1] != len(self.labels):
            raise ValueError(f"segmenter output has shape {logits.shape}, expected "
                             f"({len(frames)}, {len(self.labels)}, H, W)")
        out = []
        for lg, frame in zip(logits, frames):
            index = logits_to_mask(lg, frame.orig_size, self.letterbox)
            if self.lut is not None:
                index = self.lut[index]
            if self.keep:
                frame.meta[MASK_KEY] = index
            w, h = frame.orig_size
            out.append({"mode": "semantic", "mask_size": {"width": w, "height": h},
                        "classes": class_fractions(index, self.labels)})
        return out


@dataclass
class InstanceMask:
    """One object's mask as the part of the picture its box covers: ``mask`` (bool) at
    ``(x0, y0)``; :meth:`full` gives the whole-picture mask."""

    x0: int
    y0: int
    mask: np.ndarray

    def full(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), bool)
        h, w = self.mask.shape
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.mask
        return out

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def paste_mask(probs: np.ndarray, box: np.ndarray, height: int, width: int,
               threshold: float = MASK_THRESHOLD) -> InstanceMask:
    """An ``(M, M)`` mask of probabilities over ``box`` (x1, y1, x2, y2 in picture pixels) →
    the thresholded mask in the picture, exactly as torchvision's ``paste_masks_in_image``
    places it: pad one pixel, widen the box by (M+2)/M around its centre, truncate to integers,
    resize bilinearly to (x2 − x1 + 1) × (y2 − y1 + 1), clip to the picture."""
    import cv2

    m = probs.shape[-1]
    padded = np.pad(np.asarray(probs, np.float32).reshape(m, m), 1)
    scale = (m + 2) / m
    cx, cy = (box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5
    hw, hh = (box[2] - box[0]) * 0.5 * scale, (box[3] - box[1]) * 0.5 * scale
    x1, y1, x2, y2 = (int(np.float32(v)) for v in (cx - hw, cy - hh, cx + hw, cy + hh))  # toward zero, as .to(int64)
    bw, bh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    resized = cv2.resize(padded, (bw, bh), interpolation=cv2.INTER_LINEAR)
    xa, xb = max(x1, 0), min(x2 + 1, width)
    ya, yb = max(y1, 0), min(y2 + 1, height)
    if xb <= xa or yb <= ya:
        return InstanceMask(0, 0, np.zeros((0, 0), bool))
    crop = resized[ya - y1:yb - y1, xa - x1:xb - x1] > threshold
    return InstanceMask(xa, ya, crop)


class InstanceSegmenter:
    """Mask R-CNN rows → per-picture instances with box, score, class, area and COCO RLE."""

    def __init__(self, model: LoadedModel, conf: float = 0.5, classes: set[int] | None = None,
                 max_det: int = 100, keep_masks: bool = False):
        from cvtool.models.segmentation import MASK_FIELDS

        self.labels = model.labels
        self.letterbox = model.preprocess.letterbox
        self.conf, self.classes, self.max_det, self.keep = float(conf), classes, int(max_det), keep_masks
        self.fields = MASK_FIELDS
        self.extra_inputs = {"iou_threshold": np.array([INSTANCE_IOU], np.float32),
                             "score_threshold": np.array([self.conf], np.float32)}

    def __call__(self, rows: np.ndarray, frames: list[Frame]) -> list[dict]:
        rows = np.asarray(rows, np.float32)
        if rows.ndim != 2 or rows.shape[1] <= self.fields:
            raise ValueError(f"instance segmenter output has shape {rows.shape}, expected (K, 7 + M*M)")
        side = int(round((rows.shape[1] - self.fields) ** 0.5))
        out = []
        for b, frame in enumerate(frames):
            d = rows[rows[:, 0] == b]
            d = d[d[:, 5] >= self.conf]
            if self.classes is not None:
                d = d[np.isin(d[:, 6].astype(int), list(self.classes))]
            d = d[np.argsort(-d[:, 5], kind="stable")][: self.max_det]
            w, h = frame.orig_size
            sx, sy = (max(w, h), max(w, h)) if self.letterbox else (w, h)
            items, masks = [], []
            for row in d:
                box = row[1:5].astype(np.float64) * np.array([sx, sy, sx, sy])
                m = paste_mask(row[self.fields:].reshape(side, side), box, h, w)
                cid = int(row[6])
                clipped = [float(np.clip(box[0], 0, w)), float(np.clip(box[1], 0, h)),
                           float(np.clip(box[2], 0, w)), float(np.clip(box[3], 0, h))]
                label = self.labels[cid] if 0 <= cid < len(self.labels) else str(cid)
                items.append({"box": [round(v, 2) for v in clipped], "score": round(float(row[5]), 5),
                              "class_id": cid, "label": label or str(cid), "area": m.area,
                              "rle": rle_encode(m.full(h, w))})
                masks.append(m)
            out.append(_instance_record(items, masks, frame, w, h, self.keep))
        return out


class YoloSegmenter:
    """Ultralytics segment outputs → the same fields as :class:`InstanceSegmenter`.

    Detections come from :class:`cvtool.tasks.detect.YoloDetector` (their 32 extra values are
    mask coefficients). Each mask is ``coefficients @ prototypes`` (logits at prototype
    resolution), sampled bilinearly at every picture pixel's centre through the letterbox
    (picture → network input → prototype grid, Ultralytics' ``retina_masks`` path without the
    intermediate resize), cut to the box as the record gives it (pixel columns ``x1 ≤ c < x2``,
    rows alike, as Ultralytics' ``crop_mask``) and kept where the logit is above 0 (sigmoid above 0.5).
    """

    extra_inputs = None

    def __init__(self, model: LoadedModel, conf: float = 0.5, iou: float = 0.6, classes: set[int] | None = None,
                 max_det: int = 100, keep_masks: bool = False, agnostic: bool = False):
        from cvtool.tasks.detect import YoloDetector

        self.labels = model.labels
        self.det = YoloDetector(model, conf=conf, iou=iou, classes=classes, max_det=max_det, agnostic=agnostic)
        self.pre = model.foreign.preprocess
        self.keep = keep_masks

    def mask(self, logits: np.ndarray, box: np.ndarray, r: float, left: int, top: int,
             width: int, height: int) -> InstanceMask:
        """``(mh, mw)`` logits → the object's mask inside ``box`` (picture pixels, clipped)."""
        import cv2

        box = np.round(box, 2)  # the box the record reports (float32 noise must not move an edge a pixel)
        xa, ya = int(np.ceil(box[0])), int(np.ceil(box[1]))
        xb, yb = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
        if xb <= xa or yb <= ya:
            return InstanceMask(0, 0, np.zeros((0, 0), bool))
        mh, mw = logits.shape
        gx, gy = mw / self.pre.width, mh / self.pre.height
        # picture pixel (x, y), centre x + 0.5 → input x' = (x + 0.5)·r + left → grid u = x'·gx − 0.5;
        # the warp runs over the box only, so x = xa + i.
        m = np.array([[r * gx, 0, ((xa + 0.5) * r + left) * gx - 0.5],
                      [0, r * gy, ((ya + 0.5) * r + top) * gy - 0.5]], np.float64)
        crop = cv2.warpAffine(np.ascontiguousarray(logits, np.float32), m, (xb - xa, yb - ya),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        return InstanceMask(xa, ya, crop > 0)

    def __call__(self, outputs, frames: list[Frame]) -> list[dict]:
        if not isinstance(outputs, list) or len(outputs) < 2:
            raise ValueError("segment model gave one output; expected detections and mask prototypes")
        dets, protos = outputs[0], outputs[1]
        out = []
        for b, frame in enumerate(frames):
            rows = self.det.candidates(dets[b])
            boxes, r, left, top = self.det.to_picture(rows, frame)
            w, h = frame.orig_size
            proto = np.asarray(protos[b], np.float32)
            c = proto.shape[0]
            flat = proto.reshape(c, -1)
            items, masks = [], []
            for row, box, item in zip(rows, boxes, self.det.record(rows, boxes, r, left, top, frame)):
                logits = (row[6:6 + c].astype(np.float32) @ flat).reshape(proto.shape[1:])
                m = self.mask(logits, box, r, left, top, w, h)
                item.update(area=m.area, rle=rle_encode(m.full(h, w)))
                items.append(item)
                masks.append(m)
            out.append(_instance_record(items, masks, frame, w, h, self.keep))
        return out


def _instance_record(items: list[dict], masks: list, frame, w: int, h: int, keep: bool) -> dict:
    """The record fields of an instance segmentation (Mask R-CNN or a YOLO -seg file); with
    ``keep`` the masks also stay on the frame for --save and --eval."""
    if keep:
        frame.meta[MASK_KEY] = masks
    return {"mode": "instance", "mask_size": {"width": w, "height": h}, "count": len(items), "instances": items}
