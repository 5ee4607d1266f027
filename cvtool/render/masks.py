"""Drawing segmentation masks over pictures (RGB uint8 ``(H, W, 3)`` in and out)."""

from __future__ import annotations

import numpy as np

from cvtool.io.masks import voc_palette
from cvtool.render.draw import _color, draw_detections


def overlay_semantic(rgb: np.ndarray, index: np.ndarray, labels: tuple[str, ...] | None = None,
                     alpha: float = 0.55, legend: list[dict] | None = None) -> np.ndarray:
    """Classes in VOC colours blended over the picture (background, class 0, left as it is),
    class borders drawn solid, and a legend of the classes present (``legend``: the record's
    ``classes`` list, largest first)."""
    import cv2

    pal = voc_palette()
    img = rgb.astype(np.float32)
    fg = index != 0
    colour = pal[index].astype(np.float32)
    img[fg] = img[fg] * (1 - alpha) + colour[fg] * alpha
    edge = np.zeros(index.shape, bool)
    edge[:, 1:] |= index[:, 1:] != index[:, :-1]
    edge[1:, :] |= index[1:, :] != index[:-1, :]
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    img[edge] = colour[edge] * 0.6 + 255 * 0.4 * (index[edge, None] == 0)
    out = np.clip(img, 0, 255).astype(np.uint8)
    items = [c for c in (legend or []) if c["class_id"] != 0][:8]
    if items:
        h, w = out.shape[:2]
        scale = max(0.4, min(1.0, w / 900))
        thick = max(1, int(round(scale * 2)))
        font = cv2.FONT_HERSHEY_SIMPLEX
        texts = [f"{c['label']} {c['fraction'] * 100:.1f}%" for c in items]
        sizes = [cv2.getTextSize(t, font, scale, thick)[0] for t in texts]
        pad = int(8 * scale) + 2
        line_h = max(s[1] for s in sizes) + pad
        sw = line_h - pad
        panel_w = min(w, max(s[0] for s in sizes) + 3 * pad + sw)
        panel_h = min(h, line_h * len(items) + pad)
        roi = out[:panel_h, :panel_w]
        roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
        for i, (c, t, s) in enumerate(zip(items, texts, sizes)):
            y = pad + line_h * i
            cv2.rectangle(out, (pad, y), (pad + sw, y + sw), tuple(int(v) for v in pal[c["class_id"]]), -1)
            cv2.putText(out, t, (2 * pad + sw, y + s[1]), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def overlay_instances(rgb: np.ndarray, instances: list[dict], masks: list, alpha: float = 0.5) -> np.ndarray:
    """Each object's mask in its own colour, outlined, with its box and "label score" tag."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    for n, (inst, m) in reversed(list(enumerate(zip(instances, masks)))):  # best on top
        if m.mask.size == 0:
            continue
        colour = np.array(_color(n + 1), np.float32)
        h, w = m.mask.shape
        roi = img[m.y0:m.y0 + h, m.x0:m.x0 + w]
        sel = m.mask
        roi[sel] = (roi[sel].astype(np.float32) * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(sel.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(roi, contours, -1, tuple(int(v) for v in colour), max(1, round(max(img.shape[:2]) / 500)),
                         cv2.LINE_AA)
    return draw_detections(img, instances)


def overlay(rgb: np.ndarray, record: dict, masks) -> np.ndarray:
    """The ``--save`` picture for a segment record and its mask(s)."""
    if record.get("mode") == "instance":
        return overlay_instances(rgb, record["instances"], masks)
    return overlay_semantic(rgb, masks, legend=record.get("classes"))
