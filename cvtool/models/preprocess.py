"""Preprocessing that travels with a model's weights, shared by the torch and ONNX paths.

A :class:`Preprocess` does the geometric part in numpy/OpenCV: an RGB ``uint8`` picture
``(H, W, 3)`` becomes the ``uint8`` network input ``(crop, crop, 3)`` (shorter side resized to
``resize``, centre-cropped). The arithmetic part, ``(x/255 - mean) / std``, lives in the model
wrapper (:mod:`cvtool.models.wrap`) and so inside exported ONNX graphs, where it costs nothing
measurable. ``mean``/``std`` are stored here because they travel with the weights. It is plain
data, so it serialises into ONNX metadata and checkpoints and comes back identical.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    resize: int = 256  # shorter side after resizing (0: resize straight to the crop size)
    crop: int = 224  # square centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # or "bicubic"; downscaling always uses area averaging
    # resize=0 stretches the picture to crop×crop; letterbox=True keeps its aspect instead:
    # the longer side becomes ``crop`` and the rest is padded (grey, bottom/right).
    letterbox: bool = False

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input."""
        return (self.crop, self.crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), interpolation=d.get("interpolation", "bilinear"),
                   letterbox=bool(d.get("letterbox", False)))

    @classmethod
    def from_json(cls, s: str) -> "Preprocess":
        return cls.from_dict(json.loads(s))

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (w, h) a JPEG decoder may shrink a ``width``×``height`` photo to (by
        DCT scaling, itself a proper low-pass filter) while its shorter side still covers the
        resize target, so the network input is never upsampled from a reduced decode."""
        target = self.resize or self.crop
        short = max(width, height) if self.letterbox else min(width, height)
        scale = target / short if short else 1
        return (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region ``(x0, y0, x1, y1)`` of a ``width``×``height`` picture that ends up in the
        network input: the centre crop of the resized picture, mapped back to source pixels."""
        if not self.resize:
            return (0.0, 0.0, float(width), float(height))
        s = self.resize / min(width, height)
        cw, ch = min(width, self.crop / s), min(height, self.crop / s)
        x0, y0 = (width - cw) / 2, (height - ch) / 2
        return (x0, y0, x0 + cw, y0 + ch)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → ``(crop, crop, 3)`` uint8 RGB network input.

        Equivalent to "resize the shorter side to ``resize``, centre-crop ``crop``", done in the
        cheaper order: cut the crop region out of the source, then resize it once. Shrinking by
        more than 2× averages pixels (no aliasing); milder scaling interpolates.
        """
        import cv2

        h, w = rgb.shape[:2]
        if self.letterbox:
            s = self.crop / max(w, h)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            interp = cv2.INTER_AREA if s <= 0.5 else cv2.INTER_LINEAR
            out = np.full((self.crop, self.crop, 3), 114, np.uint8)
            out[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else rgb
            return out
        x0, y0, x1, y1 = self.crop_box(w, h)
        top, left = int(round(y0)), int(round(x0))
        region = rgb[top:max(int(round(y1)), top + 1), left:max(int(round(x1)), left + 1)]
        rh, rw = region.shape[:2]
        if (rw, rh) != (self.crop, self.crop):
            if rw >= 2 * self.crop and rh >= 2 * self.crop:
                interp = cv2.INTER_AREA
            else:
                interp = cv2.INTER_CUBIC if self.interpolation == "bicubic" else cv2.INTER_LINEAR
            region = cv2.resize(region, (self.crop, self.crop), interpolation=interp)
        return np.ascontiguousarray(region)
