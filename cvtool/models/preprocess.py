"""Preprocessing that travels with a model's weights, shared by the torch and ONNX paths.

A :class:`Preprocess` turns an RGB ``uint8`` image ``(H, W, 3)`` into the float32 tensor
``(3, crop_h, crop_w)`` that the network expects: resize the shorter side, centre-crop,
scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel. It is plain data, so it
serialises into ONNX metadata and checkpoints and comes back identical.
"""

from __future__ import annotations

import json
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

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input."""
        return (self.crop, self.crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), interpolation=d.get("interpolation", "bilinear"))

    @classmethod
    def from_json(cls, s: str) -> "Preprocess":
        return cls.from_dict(json.loads(s))

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (w, h) a decoder may shrink a ``width``×``height`` photo to without
        changing what this preprocessing produces much (the resize still downsamples ≥ 2×)."""
        target = self.resize or self.crop
        short = min(width, height)
        scale = 2 * target / short if short else 1
        return (max(1, int(width * scale)), max(1, int(height * scale)))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → ``(3, crop, crop)`` float32, normalised."""
        import cv2

        h, w = rgb.shape[:2]
        if self.resize:
            s = self.resize / min(h, w)
            nw, nh = max(self.crop, round(w * s)), max(self.crop, round(h * s))
        else:
            nw = nh = self.crop
        if (nw, nh) != (w, h):
            if nw < w and nh < h:
                interp = cv2.INTER_AREA
            else:
                interp = cv2.INTER_CUBIC if self.interpolation == "bicubic" else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
        top, left = (nh - self.crop) // 2, (nw - self.crop) // 2
        crop = rgb[top:top + self.crop, left:left + self.crop]
        # (x/255 - mean)/std folded into one multiply-add per channel.
        scale = np.array([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.array([-m / s for m, s in zip(self.mean, self.std)], dtype=np.float32)
        out = crop.astype(np.float32) * scale + shift
        return np.ascontiguousarray(out.transpose(2, 0, 1))
