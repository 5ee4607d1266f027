"""Heatmaps, overlays and picture grids for `cvtool visualize` (OpenCV; RGB uint8 in and out)."""

from __future__ import annotations

import numpy as np

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "gray")


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``(H, W)`` float in [0, 1] → ``(H, W, 3)`` uint8 RGB."""
    import cv2

    u8 = (np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.uint8)
    if cmap == "gray":
        return np.repeat(u8[..., None], 3, axis=2)
    code = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
            "viridis": cv2.COLORMAP_VIRIDIS, "magma": cv2.COLORMAP_MAGMA}[cmap]
    return cv2.cvtColor(cv2.applyColorMap(u8, code), cv2.COLOR_BGR2RGB)


def overlay_on_source(rgb: np.ndarray, heat: np.ndarray, box: tuple[float, float, float, float],
                      alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend ``heat`` (the map over the network input) onto the full picture ``rgb`` inside
    ``box`` — the region of the picture the network saw (``Preprocess.crop_box``); the rest of
    the picture, which the network never saw, is dimmed."""
    import cv2

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, max(x1, x0 + 1)), min(h, max(y1, y0 + 1))
    out = (rgb.astype(np.float32) * 0.35).astype(np.uint8)
    region = rgb[y0:y1, x0:x1]
    hm = cv2.resize(heat.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    colour = colorize(hm, cmap).astype(np.float32)
    # Weight the colour by the heat itself, so cold regions keep the photo visible.
    a = (alpha * np.clip(hm, 0, 1) ** 0.5)[..., None]
    out[y0:y1, x0:x1] = (region.astype(np.float32) * (1 - a) + colour * a).clip(0, 255).astype(np.uint8)
    return out


def grid(tiles: list[np.ndarray], cols: int | None = None, tile: int = 64, gap: int = 2,
         captions: list[str] | None = None) -> np.ndarray:
    """``tiles`` (each ``(h, w)`` float in [0, 1] or ``(h, w, 3)`` uint8) upscaled with nearest
    neighbour to ``tile``² and laid out in a grid on white."""
    import cv2

    n = len(tiles)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    cap_h = 14 if captions else 0
    out = np.full((rows * (tile + gap + cap_h) + gap, cols * (tile + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        if t.ndim == 2:
            t = colorize(t, "gray") if t.dtype != np.uint8 else np.repeat(t[..., None], 3, 2)
        t = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST if t.shape[0] < tile else cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = gap + r * (tile + gap + cap_h), gap + c * (tile + gap)
        out[y:y + tile, x:x + tile] = t
        if captions:
            cv2.putText(out, captions[i][:12], (x + 1, y + tile + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return out
