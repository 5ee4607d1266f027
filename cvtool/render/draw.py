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


def annotate_classification(rgb: np.ndarray, topk: list[dict], n: int = 3) -> np.ndarray:
    return draw_label_lines(rgb, [f"{t['label']}  {t['score'] * 100:.1f}%" for t in topk[:n]])
