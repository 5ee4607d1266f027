"""Depth maps as pictures: a colour map over a value range (near = the bright/warm end)."""

from __future__ import annotations

import numpy as np

DEPTH_COLORMAPS = ("turbo", "inferno", "magma", "viridis", "jet", "gray")


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None,
                   cmap: str = "turbo") -> np.ndarray:
    """``(H, W)`` relative inverse depth → ``(H, W, 3)`` uint8 RGB.

    Values are mapped linearly from ``[lo, hi]`` (default: the map's own min and max) onto the
    colour map, so larger values (nearer, for inverse depth) get its bright end; values outside
    the range are clipped, NaN and inf become ``lo``. A constant map is drawn in the dark end.
    """
    from cvtool.render.heatmap import colorize

    if cmap not in DEPTH_COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}: expected one of {', '.join(DEPTH_COLORMAPS)}")
    d = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(d)
    if lo is None or hi is None:
        vals = d[finite] if not finite.all() else d
        lo = float(vals.min()) if lo is None and vals.size else (0.0 if lo is None else lo)
        hi = float(vals.max()) if hi is None and vals.size else (1.0 if hi is None else hi)
    span = hi - lo
    if not span > 0:
        return colorize(np.zeros(d.shape, np.float32), cmap)
    u = (np.where(finite, d, lo) - lo) * (1.0 / span)
    # colorize truncates to 0..255; shift by half a step so each level is rounded instead
    return colorize(np.clip(u + 0.5 / 255, 0, 1), cmap)
