"""Preprocessing that travels with a model's weights, shared by the torch and ONNX paths.

A :class:`Preprocess` does the geometric part in numpy/Pillow/OpenCV: an RGB ``uint8`` picture
``(H, W, 3)`` becomes the ``uint8`` network input. ``kind`` says how, each one the semantics of a
reference pipeline:

``"crop"``
    torchvision's ``ImageClassification`` (``weights.transforms()``): the shorter side resized to
    ``resize`` (the longer side ``int(resize * long / short)``), antialiased with the filter the
    weights name, then a ``crop``×``crop`` centre crop whose corner is
    ``int(round((size - crop) / 2))`` as ``torchvision.transforms.functional.center_crop`` places it.
``"stretch"``
    the whole picture resized to ``crop``×``crop`` (aspect not kept): torchvision's SSD transforms,
    the TensorFlow ``fixed_shape_resizer``, Hugging Face processors without ``keep_aspect_ratio``.
``"shorter"``
    the shorter side resized to ``resize``, no crop (variable size): torchvision's
    ``SemanticSegmentation`` transforms.
``"rcnn"``
    torchvision's ``GeneralizedRCNNTransform`` resize: scale ``min(resize / short, max_size / long)``,
    output ``floor(side * scale)``, bilinear without antialiasing (variable size).
``"letterbox"``
    the longer side becomes ``crop``, the rest padded grey (bottom/right) — kept for files
    exported by older versions.

``antialias`` says whether the reference filters when shrinking (torchvision's
``antialias=True`` and Pillow do: a triangle/cubic filter widened by the scale factor; the
R-CNN transform and ``F.interpolate`` do not). Antialiased resizes are Pillow's own resampling
of just the region that ends up in the input (``Image.resize(box=...)`` gives the same pixels as
resizing the whole picture and then cropping, and is what torchvision's PIL path computes);
non-antialiased ones are OpenCV's two-tap bilinear (uint8, fixed-point weights), which is what
``F.interpolate(mode="bilinear", align_corners=False)`` computes, to within 0.76 grey level.

The arithmetic part, ``(x/255 - mean) / std``, lives in the model wrapper
(:mod:`cvtool.models.wrap`) and so inside exported ONNX graphs. It is plain data, so it
serialises into ONNX metadata and checkpoints and comes back identical; metadata written before
``kind`` existed still loads (``letterbox`` → "letterbox", ``resize=0`` → "stretch", else "crop").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

KINDS = ("crop", "stretch", "shorter", "rcnn", "letterbox")
# Reduced-size JPEG decoding (DCT scaling by 1/2, 1/4, 1/8) is switched off: measured against
# a full decode followed by the reference resize, even keeping 4 source pixels per input pixel
# moved busy photos by up to 5 grey levels (mean 0.4), outside the tolerance that the full decode
# meets (docs/benchmarks.md, "Reduced-size JPEG decoding"). ``None``: always decode in full.
DRAFT_FACTOR: int | None = None


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) after torchvision's ``F.resize(img, [size])``: shorter side ``size``, longer side
    ``int(size * long / short)`` (truncated, as torchvision computes it)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def rcnn_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(w, h) after ``GeneralizedRCNNTransform``'s resize (eager mode): the scale is
    ``min(min_size / short, max_size / long)`` in Python floats and each side becomes
    ``floor(side * scale)`` (``F.interpolate(scale_factor=..., recompute_scale_factor=True)``)."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


@dataclass(frozen=True)
class Preprocess:
    resize: int = 256  # "crop"/"shorter": shorter side after resizing; "rcnn": min_size
    crop: int = 224  # square network input ("crop", "stretch", "letterbox"); export example size otherwise
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # or "bicubic" / "nearest", as the weights name it
    letterbox: bool = False  # legacy spelling of kind="letterbox"
    kind: str = ""  # see the module docstring; "" is derived from resize/letterbox (old metadata)
    antialias: bool = True
    max_size: int = 0  # "rcnn": the longer side's limit

    def __post_init__(self):
        kind = self.kind or ("letterbox" if self.letterbox else "stretch" if not self.resize else "crop")
        if kind not in KINDS:
            raise ValueError(f"unknown preprocessing kind {kind!r} (expected one of {', '.join(KINDS)})")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "letterbox", kind == "letterbox")

    @property
    def fixed_size(self) -> bool:
        """Whether every picture becomes the same ``crop``×``crop`` input."""
        return self.kind in ("crop", "stretch", "letterbox")

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input (the example size for variable-size kinds)."""
        return (self.crop, self.crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), interpolation=d.get("interpolation", "bilinear"),
                   letterbox=bool(d.get("letterbox", False)), kind=d.get("kind", ""),
                   antialias=bool(d.get("antialias", True)), max_size=int(d.get("max_size", 0)))

    @classmethod
    def from_json(cls, s: str) -> "Preprocess":
        return cls.from_dict(json.loads(s))

    def at_size(self, size: int) -> "Preprocess":
        """The same preprocessing for a network input of ``size`` (``--imgsz``): the square's
        side for fixed-size kinds (the resize target scaled alike), the shorter side otherwise
        (R-CNN's longer-side limit scaled alike)."""
        from dataclasses import replace

        scale = size / (self.crop or size)
        if self.kind == "shorter":
            return replace(self, resize=size, crop=size)
        if self.kind == "rcnn":
            return replace(self, resize=size, crop=size, max_size=round(self.max_size * size / self.resize))
        return replace(self, crop=size, resize=round(self.resize * scale) if self.resize else 0)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of the network input for a ``width``×``height`` picture."""
        if self.kind == "shorter":
            return shorter_side_size(width, height, self.resize)
        if self.kind == "rcnn":
            return rcnn_size(width, height, self.resize, self.max_size)
        return (self.crop, self.crop)

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (w, h) a JPEG decoder may shrink a ``width``×``height`` photo to (by
        DCT scaling): the full size unless :data:`DRAFT_FACTOR` is set, in which case
        antialiased kinds keep that many source pixels per input pixel on both axes. Kinds
        whose reference does not antialias (it samples the full picture) always get it whole."""
        if not self.antialias or not DRAFT_FACTOR:
            return (width, height)
        if self.kind == "letterbox":
            s = self.crop / max(width, height)
        elif self.kind == "stretch":
            s = max(self.crop / width, self.crop / height)
        else:
            tw, th = shorter_side_size(width, height, self.resize or self.crop)
            s = max(tw / width, th / height)
        s = min(1.0, DRAFT_FACTOR * s)
        return (max(1, math.ceil(width * s)), max(1, math.ceil(height * s)))

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region ``(x0, y0, x1, y1)`` of a ``width``×``height`` picture that ends up in the
        network input, in source pixels."""
        if self.kind != "crop":
            return (0.0, 0.0, float(width), float(height))
        nw, nh = shorter_side_size(width, height, self.resize)
        c = self.crop
        left, top = int(round((nw - c) / 2.0)), int(round((nh - c) / 2.0))
        sx, sy = width / nw, height / nh
        return (left * sx, top * sy, (left + c) * sx, (top + c) * sy)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → the uint8 RGB network input (see the module docstring)."""
        h, w = rgb.shape[:2]
        if self.kind == "letterbox":
            return self._letterbox(rgb)
        if self.kind == "crop":
            nw, nh = shorter_side_size(w, h, self.resize)
            if nw < self.crop or nh < self.crop:  # centre_crop would pad: resize the whole, then pad
                return _pad_centre(self._resize(rgb, (nw, nh)), self.crop)
            if not self.antialias:  # two-tap interpolation: resizing the whole picture is cheap
                left, top = int(round((nw - self.crop) / 2.0)), int(round((nh - self.crop) / 2.0))
                out = self._resize(rgb, (nw, nh))
                return np.ascontiguousarray(out[top:top + self.crop, left:left + self.crop])
            # Pillow's resize of a box equals resize-then-crop; cropping the rows after the
            # resize (not in the box) keeps it bit-identical to torchvision's PIL path, whose
            # vertical pass rounds the box's top edge slightly differently.
            x0, _, x1, _ = self.crop_box(w, h)
            top = int(round((nh - self.crop) / 2.0))
            out = self._resize(rgb, (self.crop, nh), (x0, 0.0, x1, float(h)))
            return np.ascontiguousarray(out[top:top + self.crop])
        return self._resize(rgb, self.output_size(w, h))

    def _resize(self, rgb: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
        """Resize ``rgb`` (or its ``box`` region, in source pixels) to ``size`` = (w, h)."""
        h, w = rgb.shape[:2]
        if box is None and size == (w, h):
            return np.ascontiguousarray(rgb)
        if self.antialias:
            from PIL import Image

            method = {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST
                      }.get(self.interpolation, Image.Resampling.BILINEAR)
            rgb = np.ascontiguousarray(rgb)
            im = Image.frombuffer("RGB", (w, h), rgb, "raw", "RGB", 0, 1)  # cheaper than fromarray
            return np.array(im.resize(size, method, box=box))  # writable, as callers may expect
        import cv2

        if box is not None:  # not used by any registered model; keep the geometry exact anyway
            raise ValueError("a cropped resize without antialiasing is not supported")
        flag = {"bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}.get(self.interpolation, cv2.INTER_LINEAR)
        # OpenCV's uint8 path (11-bit fixed-point weights): within 0.76 grey level of the float
        # reference, and 2-50x faster than resizing float pixels (docs/benchmarks.md)
        return cv2.resize(np.ascontiguousarray(rgb), size, interpolation=flag)

    def _letterbox(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        s = self.crop / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s <= 0.5 else cv2.INTER_LINEAR
        out = np.full((self.crop, self.crop, 3), 114, np.uint8)
        out[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else rgb
        return out


def _pad_centre(rgb: np.ndarray, size: int) -> np.ndarray:
    """torchvision's ``center_crop`` of a picture smaller than ``size``: zero padding around it,
    left/top ``(size - side) // 2``, then the crop."""
    h, w = rgb.shape[:2]
    out = np.zeros((max(h, size), max(w, size), 3), np.uint8)
    top, left = (max(h, size) - h) // 2, (max(w, size) - w) // 2
    out[top:top + h, left:left + w] = rgb
    oh, ow = out.shape[:2]
    t, l = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    return np.ascontiguousarray(out[t:t + size, l:l + size])
