"""Training curves, confusion matrices and sweep plots, drawn with OpenCV (no plotting library).

Each function writes one PNG atomically. The drawing is plain: axes with "nice" ticks, a grid,
lines with markers, a legend; a heat map with counts for the confusion matrix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
INK = (40, 40, 40)
GRID = (225, 225, 225)
# BGR colours (OpenCV order): blue, orange, green, red, purple
COLORS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148))


def _text(img, s: str, org, scale=0.45, color=INK, thick=1, anchor="left"):
    import cv2

    (w, h), _ = cv2.getTextSize(s, FONT, scale, thick)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, color, thick, cv2.LINE_AA)
    return w, h


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 1e-2:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.3g}"


def panel(img, rect, series: Sequence[dict], title: str = "", xlabel: str = "", ylabel: str = "",
          xlog: bool = False, ylim: tuple | None = None, scatter: bool = False) -> None:
    """Draw line (or scatter) ``series`` — dicts with ``x``, ``y``, ``label`` and optional ``color``
    — into ``rect = (x0, y0, x1, y1)`` of ``img``."""
    import cv2

    x0, y0, x1, y1 = rect
    left, right, top, bottom = 62, 14, 30, 44
    px0, py0, px1, py1 = x0 + left, y0 + top, x1 - right, y1 - bottom
    xs = [v for s in series for v, w in zip(s["x"], s["y"]) if w is not None and v is not None]
    ys = [w for s in series for w in s["y"] if w is not None and math.isfinite(w)]
    if title:
        _text(img, title, (px0, y0 + 18), 0.5)
    if not xs or not ys:
        _text(img, "no data", ((px0 + px1) // 2, (py0 + py1) // 2), anchor="center")
        return
    tx = (lambda v: math.log10(v)) if xlog else (lambda v: float(v))
    xlo, xhi = min(tx(v) for v in xs), max(tx(v) for v in xs)
    if xhi == xlo:
        xlo, xhi = xlo - 0.5, xhi + 0.5
    pad = (xhi - xlo) * 0.04
    xlo, xhi = xlo - pad, xhi + pad
    ylo, yhi = (min(ys), max(ys)) if ylim is None else ylim
    if yhi - ylo < 1e-9:
        ylo, yhi = ylo - 0.05, yhi + 0.05
    ypad = (yhi - ylo) * 0.06 if ylim is None else 0
    ylo, yhi = ylo - ypad, yhi + ypad

    def X(v):
        return int(round(px0 + (tx(v) - xlo) / (xhi - xlo) * (px1 - px0)))

    def Y(v):
        return int(round(py1 - (v - ylo) / (yhi - ylo) * (py1 - py0)))

    for t in _nice_ticks(ylo, yhi):
        if ylo <= t <= yhi:
            cv2.line(img, (px0, Y(t)), (px1, Y(t)), GRID, 1)
            _text(img, _fmt(t), (px0 - 6, Y(t) + 4), 0.4, anchor="right")
    if xlog:
        xt = [10.0 ** e for e in range(math.floor(xlo), math.ceil(xhi) + 1) if xlo <= e <= xhi]
    else:
        xt = [t for t in _nice_ticks(xlo, xhi, 6) if xlo <= t <= xhi]
        if all(float(v).is_integer() for v in xs):
            xt = [t for t in xt if float(t).is_integer()]
    for t in xt:
        cv2.line(img, (X(t), py0), (X(t), py1), GRID, 1)
        _text(img, _fmt(t) if not (not xlog and float(t).is_integer()) else str(int(t)), (X(t), py1 + 16), 0.4,
              anchor="center")
    cv2.rectangle(img, (px0, py0), (px1, py1), INK, 1)
    if xlabel:
        _text(img, xlabel, ((px0 + px1) // 2, y1 - 8), 0.45, anchor="center")
    if ylabel:
        (w, h), _ = cv2.getTextSize(ylabel, FONT, 0.45, 1)
        label = np.full((h + 8, w + 4, 3), 255, np.uint8)
        _text(label, ylabel, (2, h + 2), 0.45)
        label = np.rot90(label)
        lh, lw = label.shape[:2]
        cy = (py0 + py1) // 2 - lh // 2
        if cy >= 0 and x0 + 4 + lw <= img.shape[1] and cy + lh <= img.shape[0]:
            img[cy:cy + lh, x0 + 4:x0 + 4 + lw] = np.minimum(img[cy:cy + lh, x0 + 4:x0 + 4 + lw], label)
    for i, s in enumerate(series):
        color = s.get("color", COLORS[i % len(COLORS)])
        pts = [(X(v), Y(w)) for v, w in zip(s["x"], s["y"]) if w is not None and v is not None and math.isfinite(w)]
        if not scatter and len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, color, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4 if scatter else 3, color, -1, cv2.LINE_AA)
    # legend: one row above the plot, right-aligned (it never hides a point)
    labels = [(s.get("label"), s.get("color", COLORS[i % len(COLORS)])) for i, s in enumerate(series) if s.get("label")]
    lx = px1
    for label, color in reversed(labels):
        (w, _), _ = cv2.getTextSize(label, FONT, 0.42, 1)
        lx -= w + 30
        ly = py0 - 8
        if scatter:
            cv2.circle(img, (lx + 9, ly - 4), 4, color, -1, cv2.LINE_AA)
        else:
            cv2.line(img, (lx, ly - 4), (lx + 18, ly - 4), color, 2, cv2.LINE_AA)
        _text(img, label, (lx + 24, ly), 0.42)
        lx -= 8


def save_png(path: Path, img: np.ndarray) -> None:
    import cv2

    from cvtool.train.checkpoints import atomic_write_bytes

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write_bytes(Path(path), lambda fh: fh.write(buf.tobytes()))


def training_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train vs validation, side by side."""
    w, h = 1000, 420
    img = np.full((h, w, 3), 255, np.uint8)
    ep = [r["epoch"] for r in history]
    if title:
        _text(img, title, (w // 2, 20), 0.55, anchor="center")
    panel(img, (0, 24, w // 2, h), [
        {"x": ep, "y": [r["train_loss"] for r in history], "label": "train"},
        {"x": ep, "y": [r.get("val_loss") for r in history], "label": "validation"},
    ], "loss", "epoch", "loss")
    panel(img, (w // 2, 24, w, h), [
        {"x": ep, "y": [r["train_acc"] for r in history], "label": "train"},
        {"x": ep, "y": [r.get("val_acc") for r in history], "label": "validation"},
    ], "accuracy", "epoch", "accuracy")
    save_png(path, img)


def confusion_matrix(cm: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    """Rows: true class; columns: predicted. Cell colour = share of the row; numbers = counts."""
    import cv2

    m = np.asarray(cm, dtype=np.float64)
    n = len(classes)
    cell = int(min(56, max(18, 640 // max(1, n))))
    names = [c if len(c) <= 16 else c[:15] + "." for c in classes]
    label_w = max(cv2.getTextSize(s, FONT, 0.42, 1)[0][0] for s in names) + 14
    top = 40 + label_w
    left = label_w + 40
    W, H = left + n * cell + 20, top + n * cell + 40
    W = max(W, 360)
    img = np.full((H, W, 3), 255, np.uint8)
    if title:
        _text(img, title, (W // 2, 20), 0.48, anchor="center")
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            v = share[i, j]
            # white → dark blue
            color = (int(255 - v * (255 - 107)), int(255 - v * (255 - 48)), int(255 - v * (255 - 8)))
            x, y = left + j * cell, top + i * cell
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), color, -1)
            if cell >= 22 and m[i, j]:
                s = str(int(m[i, j]))
                scale = 0.38 if len(s) <= 3 else 0.32
                _text(img, s, (x + cell // 2, y + cell // 2 + 4), scale,
                      color=(255, 255, 255) if v > 0.5 else INK, anchor="center")
    cv2.rectangle(img, (left, top), (left + n * cell, top + n * cell), INK, 1)
    for i, s in enumerate(names):
        _text(img, s, (left - 6, top + i * cell + cell // 2 + 4), 0.42, anchor="right")
        # column labels, rotated
        (tw, th), _ = cv2.getTextSize(s, FONT, 0.42, 1)
        lab = np.full((th + 8, tw + 4, 3), 255, np.uint8)
        _text(lab, s, (2, th + 2), 0.42)
        lab = np.rot90(lab)
        lh, lw = lab.shape[:2]
        x = left + i * cell + cell // 2 - lw // 2
        y = top - 6 - lh
        img[y:y + lh, x:x + lw] = np.minimum(img[y:y + lh, x:x + lw], lab)
    _text(img, "predicted", (left + n * cell // 2, 36), 0.45, anchor="center")
    (w, h), _ = cv2.getTextSize("true", FONT, 0.45, 1)
    _text(img, "true", (8, top + n * cell // 2), 0.45)
    save_png(path, img)


def sweep_plot(results: list[dict], params: dict, path: Path, title: str = "") -> None:
    """Validation accuracy against each swept hyperparameter (one panel each)."""
    names = list(params)
    k = max(1, len(names))
    pw, h = 420, 380
    img = np.full((h + 26, pw * k, 3), 255, np.uint8)
    if title:
        _text(img, title, (pw * k // 2, 18), 0.5, anchor="center")
    ok = [r for r in results if r.get("val_acc") is not None]
    best = max(ok, key=lambda r: r["val_acc"]) if ok else None
    for i, name in enumerate(names):
        spec = params[name]
        numeric = spec["kind"] != "choice"
        if numeric:
            xs = [r["params"][name] for r in ok]
        else:
            xs = [spec["choices"].index(r["params"][name]) for r in ok]
        series = [{"x": xs, "y": [r["val_acc"] for r in ok], "label": "trial"}]
        if best is not None:
            bx = best["params"][name] if numeric else spec["choices"].index(best["params"][name])
            series.append({"x": [bx], "y": [best["val_acc"]], "label": "best", "color": COLORS[3]})
        panel(img, (i * pw, 26, (i + 1) * pw, h + 26), series, name, name + ("" if numeric else " (" + ", ".join(
            f"{j}={c}" for j, c in enumerate(spec["choices"])) + ")"), "val accuracy",
            xlog=spec["kind"] == "log", scatter=True)
    save_png(path, img)


def line_plot(xs: list, series: list[dict], path: Path, title: str, xlabel: str, ylabel: str) -> None:
    img = np.full((420, 620, 3), 255, np.uint8)
    panel(img, (0, 0, 620, 420), [dict(s, x=xs) for s in series], title, xlabel, ylabel)
    save_png(path, img)
