"""The geometric part of :class:`~cvtool.models.preprocess.Preprocess` on torch tensors, so that
gradients reach the photo's own pixels (``attack`` at the photo's resolution).

One operation, kept here: the region of the photo that ends up in the network input
(:meth:`Preprocess.crop_box`, rounded to whole pixels) is cut out and resized to the network's
input size with ``F.interpolate(..., antialias=True)`` (bilinear or bicubic as the weights say):
torchvision's antialiased tensor resize. ``Preprocess.__call__`` (numpy, what ``classify`` runs)
may resample slightly differently (OpenCV area/bilinear, or Pillow); the difference is measured
in docs/attack.md, and every attack result is scored again through ``Preprocess.__call__`` on the
8-bit picture that is saved, so a difference can cost an attack strength but never makes a
record claim more than ``cvtool classify`` will see.

Shapes: ``(B, 3, H, W)`` float in [0, 1] in, ``(B, 3, S, S)`` out.
"""

from __future__ import annotations

from cvtool.models.preprocess import Preprocess


class Unsupported(ValueError):
    """This preprocessing has no differentiable counterpart here (letterbox padding)."""


def region(pre: Preprocess, width: int, height: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` in whole source pixels: the part of a ``width``×``height``
    picture that the network sees (the rest does not reach it, so is never changed)."""
    if getattr(pre, "letterbox", False) or getattr(pre, "kind", "") in ("letterbox", "shorter", "rcnn"):
        raise Unsupported("this model's preprocessing (letterbox or variable size) is not differentiable here")
    x0, y0, x1, y1 = pre.crop_box(width, height)
    left, top = int(round(x0)), int(round(y0))
    right, bottom = max(int(round(x1)), left + 1), max(int(round(y1)), top + 1)
    return left, top, min(right, width), min(bottom, height)


def resize_region(pre: Preprocess, x):
    """The cut-out region ``(B, 3, h, w)`` → the network input ``(B, 3, S, S)``, differentiably."""
    import torch.nn.functional as F

    s = pre.crop
    if tuple(x.shape[-2:]) == (s, s):
        return x
    mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
    out = F.interpolate(x, size=(s, s), mode=mode, antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0) if mode == "bicubic" else out


class AtPhotoResolution:
    """A model of the photo's region: ``(B, 3, h, w)`` float pixels of the region in [0, 1] →
    logits, through :func:`resize_region` and the network (``clf``, a GradClassifier)."""

    def __init__(self, clf, pre: Preprocess):
        self.clf, self.pre = clf, pre
        self.device = clf.device

    def __call__(self, x):
        return self.clf(resize_region(self.pre, x))

    def top(self, x):
        return self.clf.top(resize_region(self.pre, x))
