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
        if (part.isdigit() and int(part) < len(labels) and labels[int(part)]
                and not labels[int(part)].startswith("__")):
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


# ---------------------------------------------------------------------------------------------
# Foreign detectors (Ultralytics layouts, see cvtool.models.foreign)

MAX_NMS = 30000  # at most this many candidates enter NMS (as Ultralytics)


NMS_BLOCK = 64


def _overlaps(a: np.ndarray, area_a: np.ndarray, b: np.ndarray, area_b: np.ndarray, iou: float) -> np.ndarray:
    """``(len(a), len(b))``: whether each pair's IoU is above ``iou`` (x1y1x2y2 boxes)."""
    inter = np.minimum(a[:, None, 2], b[None, :, 2])
    inter -= np.maximum(a[:, None, 0], b[None, :, 0])
    np.maximum(inter, 0, out=inter)
    h = np.minimum(a[:, None, 3], b[None, :, 3])
    h -= np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(h, 0, out=h)
    inter *= h
    union = np.add(area_a[:, None], area_b[None, :], out=h)
    union -= inter
    union *= iou
    return inter > union


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None,
        classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy NMS over x1y1x2y2 ``boxes`` by decreasing score (ties: input order); a box is
    dropped when its IoU with a kept one is above ``iou`` (torchvision's ``nms`` rule); with
    ``classes``, only by a kept box of its own class (torchvision's ``batched_nms``).
    ``limit``: stop after that many kept (the same first ``limit`` as running to the end).

    Done in blocks of :data:`NMS_BLOCK` candidates by score: inside a block the greedy order is
    resolved on its small IoU matrix, then the block's kept boxes suppress all later candidates
    in one vectorised step, so the Python loop runs per block, not per box."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = np.asarray(boxes, np.float32)[order]
    cls = None if classes is None else np.asarray(classes)[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    n = len(b)
    limit = n if limit is None else int(limit)
    alive = np.ones(n, bool)
    keep: list[int] = []

    def over(i, j):
        o = _overlaps(b[i], area[i], b[j], area[j], iou)
        return o if cls is None else o & (cls[i][:, None] == cls[j][None, :])

    for start in range(0, n, NMS_BLOCK):
        if len(keep) >= limit:
            break
        end = min(start + NMS_BLOCK, n)
        idx = np.flatnonzero(alive[start:end]) + start
        if not idx.size:
            continue
        within = over(idx, idx)
        gone = np.zeros(len(idx), bool)
        kept = []
        for j in range(len(idx)):
            if gone[j]:
                continue
            kept.append(j)
            if len(keep) + len(kept) >= limit:
                break
            gone |= within[j]
        kidx = idx[kept]
        keep.extend(kidx.tolist())
        rest = np.flatnonzero(alive[end:]) + end
        if rest.size and len(keep) < limit:
            alive[rest[over(kidx, rest).any(0)]] = False
    return order[np.asarray(keep[:limit], dtype=np.int64)]


class YoloDetector:
    """Ultralytics-layout outputs → the same per-picture fields as :class:`Detector`.

    ``yolo`` layout ``(B, 4+nc+extra, N)``: the best class per candidate, ``score > conf``,
    ``--classes`` on that class, the ``MAX_NMS`` best, NMS per class (as Ultralytics'
    class offsets do, here by comparing class ids; all classes together with ``agnostic``), the
    ``max_det`` best. ``end2end`` layout ``(B, K, 6+extra)``: rows already after NMS. Boxes are
    in network-input pixels and go back through the letterbox: ``(x − left) / r``, clipped to
    the picture. Pose files add ``keypoints`` ``[[x, y, visibility], ...]`` per detection.
    """

    extra_inputs = None

    def __init__(self, model: LoadedModel, conf: float = 0.3, iou: float = 0.6, classes: set[int] | None = None,
                 max_det: int = 100, agnostic: bool = False):
        d = model.foreign
        self.model, self.labels, self.desc = model, model.labels, d
        self.conf, self.iou, self.classes = float(conf), float(iou), classes
        self.max_det, self.agnostic = int(max_det), agnostic
        self.nc = len(self.labels)
        self.kpt = d.kpt_shape if d.kind == "pose" else None
        self.extra = (self.kpt[0] * self.kpt[1]) if self.kpt else d.num_masks
        self.contiguous = {i: i for i in range(self.nc)}  # YOLO txt ids are the file's own

    def candidates(self, out: np.ndarray) -> np.ndarray:
        """One picture's output → rows ``[x1, y1, x2, y2, score, class, extra...]`` kept after
        thresholds and NMS, best first, in network-input pixels."""
        nc, ex = self.nc, self.extra
        if self.desc.layout == "end2end":
            rows = np.asarray(out, np.float32)
            if rows.ndim != 2 or rows.shape[1] != 6 + ex:
                raise ValueError(f"detector output rows have shape {rows.shape}, expected (K, {6 + ex})")
            rows = rows[rows[:, 4] > self.conf]
            if self.classes is not None:
                rows = rows[np.isin(rows[:, 5].astype(int), list(self.classes))]
            rows = rows[np.argsort(-rows[:, 4], kind="stable")]
            if self.agnostic and len(rows):
                rows = rows[nms(rows[:, :4], rows[:, 4], self.iou)]
            return rows[: self.max_det]
        p = np.asarray(out)
        if p.ndim != 2 or p.shape[0] != 4 + nc + ex:
            raise ValueError(f"detector output has shape {p.shape}, expected ({4 + nc + ex}, N)")
        scores = p[4:4 + nc]
        best = scores.max(0)
        idx = np.flatnonzero(best > self.conf)
        if not idx.size:
            return np.zeros((0, 6 + ex), np.float32)
        cls = scores[:, idx].argmax(0)
        conf = best[idx]
        if self.classes is not None:
            sel = np.isin(cls, list(self.classes))
            idx, cls, conf = idx[sel], cls[sel], conf[sel]
        order = np.argsort(-conf, kind="stable")[:MAX_NMS]
        idx, cls, conf = idx[order], cls[order], conf[order]
        cx, cy, w, h = p[0, idx], p[1, idx], p[2, idx], p[3, idx]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        keep = nms(boxes, conf, self.iou, limit=self.max_det, classes=None if self.agnostic else cls)
        rows = np.concatenate([boxes[keep], conf[keep, None], cls[keep, None].astype(boxes.dtype),
                               p[4 + nc:, idx[keep]].T], 1)
        return rows

    def to_picture(self, rows: np.ndarray, frame: Frame) -> tuple[np.ndarray, float, int, int]:
        """Boxes from network-input pixels to picture pixels (clipped), with the letterbox used."""
        w, h = frame.orig_size
        r, _nw, _nh, left, top = self.desc.preprocess.geometry(w, h)
        boxes = (rows[:, :4].astype(np.float64) - [left, top, left, top]) / r
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return boxes, r, left, top

    def record(self, rows: np.ndarray, boxes: np.ndarray, r: float, left: int, top: int, frame: Frame) -> list[dict]:
        items = []
        w, h = frame.orig_size
        for row, box in zip(rows, boxes):
            cid = int(row[5])
            label = self.labels[cid] if 0 <= cid < self.nc else str(cid)
            item = {"box": [round(float(v), 2) for v in box], "score": round(float(row[4]), 5),
                    "class_id": cid, "label": label or str(cid)}
            if self.kpt:
                k = row[6:6 + self.extra].astype(np.float64).reshape(self.kpt)
                xs = ((k[:, 0] - left) / r).clip(0, w)
                ys = ((k[:, 1] - top) / r).clip(0, h)
                vis = k[:, 2] if self.kpt[1] > 2 else np.ones(len(k))
                item["keypoints"] = [[round(float(x), 2), round(float(y), 2), round(float(v), 4)]
                                     for x, y, v in zip(xs, ys, vis)]
            items.append(item)
        return items

    def __call__(self, outputs, frames: list[Frame]) -> list[dict]:
        out = outputs[0] if isinstance(outputs, list) else outputs
        res = []
        for b, frame in enumerate(frames):
            rows = self.candidates(out[b])
            boxes, r, left, top = self.to_picture(rows, frame)
            items = self.record(rows, boxes, r, left, top, frame)
            res.append({"count": len(items), "detections": items})
        return res


def detector_for(model: LoadedModel, **options):
    """The postprocessor for ``model``: cvtool's own detectors, or a foreign file's layout."""
    if getattr(model, "foreign", None) is not None:
        return YoloDetector(model, **options)
    return Detector(model, **options)


def coco_categories(model: LoadedModel, gt=None) -> dict[int, int] | None:
    """For a foreign file's class ids (e.g. a YOLO model's 0-79): the COCO ``category_id`` of each
    class, matched by name to the ground truth's categories (``gt``, a pycocotools ``COCO``) or
    else to COCO's own 90-id numbering. None for cvtool's models, whose ids are COCO's already."""
    if getattr(model, "foreign", None) is None:
        return None
    if gt is not None:
        by_name = {c["name"].lower(): int(c["id"]) for c in gt.dataset.get("categories", [])}
    else:
        from cvtool.models.labels import load_labels

        by_name = {n.lower(): i for i, n in enumerate(load_labels("coco")) if n and not n.startswith("__")}
    return {i: by_name[n.lower()] for i, n in enumerate(model.labels) if n.lower() in by_name}
