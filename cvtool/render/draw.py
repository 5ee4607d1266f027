"""Drawing results onto pictures (OpenCV). Input and output are RGB uint8 ``(H, W, 3)``."""

from __future__ import annotations

import numpy as np


def draw_label_lines(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Return a copy of ``rgb`` with ``lines`` written top-left on a dark panel."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    h, w = img.shape[:2]
    scale = max(0.4, min(1.2, w / 900))
    thick = max(1, int(round(scale * 2)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(t, font, scale, thick)[0] for t in lines]
    if not sizes:
        return img
    pad = int(8 * scale) + 2
    line_h = max(s[1] for s in sizes) + pad
    panel_w = min(w, max(s[0] for s in sizes) + 2 * pad)
    panel_h = min(h, line_h * len(lines) + pad)
    roi = img[:panel_h, :panel_w]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        y = pad + line_h * i + sizes[i][1]
        cv2.putText(img, text, (pad, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _color(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated colour per class (golden-angle hue steps)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(rgb: np.ndarray, detections: list[dict]) -> np.ndarray:
    """Boxes with "label score" tags, lowest score first so the best end up on top."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    h, w = img.shape[:2]
    scale = max(0.4, min(1.0, max(w, h) / 1000))
    thick = max(1, int(round(max(w, h) / 400)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for det in sorted(detections, key=lambda d: d["score"]):
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        color = _color(det["class_id"])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        text = f"{det['label']} {det['score']:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(img, (x1, ty - th - base), (min(w - 1, x1 + tw + 2), ty + 1), color, -1)
        cv2.putText(img, text, (x1 + 1, ty - base + 1), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def annotate_classification(rgb: np.ndarray, topk: list[dict], n: int = 3) -> np.ndarray:
    return draw_label_lines(rgb, [f"{t['label']}  {t['score'] * 100:.1f}%" for t in topk[:n]])
