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
        if det.get("keypoints"):
            draw_keypoints(img, det["keypoints"], color, max(2, thick + 1))
    return img


# COCO's 17-keypoint person skeleton (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def draw_keypoints(img: np.ndarray, keypoints: list, color: tuple[int, int, int], radius: int = 3,
                   min_visibility: float = 0.5) -> np.ndarray:
    """Keypoints ``[[x, y, visibility], ...]`` drawn in place as dots (those seen with at least
    ``min_visibility``), joined by COCO's person skeleton when there are 17."""
    import cv2

    pts = [(int(round(x)), int(round(y)), v) for x, y, v in keypoints]
    if len(pts) == 17:
        for a, b in COCO_SKELETON:
            if pts[a][2] >= min_visibility and pts[b][2] >= min_visibility:
                cv2.line(img, pts[a][:2], pts[b][:2], color, max(1, radius // 2), cv2.LINE_AA)
    for x, y, v in pts:
        if v >= min_visibility:
            cv2.circle(img, (x, y), radius, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(img, (x, y), radius, color, 1, cv2.LINE_AA)
    return img


def annotate_classification(rgb: np.ndarray, topk: list[dict], n: int = 3) -> np.ndarray:
    return draw_label_lines(rgb, [f"{t['label']}  {t['score'] * 100:.1f}%" for t in topk[:n]])
