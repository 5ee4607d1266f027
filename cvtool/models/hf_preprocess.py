"""Preprocessing read from a Hugging Face weights folder's ``preprocessor_config.json``.

A :class:`HFPreprocess` holds the image processor settings that came with the weights (size
in its ``height``/``width`` or ``shortest_edge`` form, ``keep_aspect_ratio`` and
``ensure_multiple_of`` as DPT/Depth Anything use them, ``resample``, rescale, mean/std,
centre crop, padding) and turns an RGB ``uint8`` picture ``(H, W, 3)`` into the ``uint8``
network input the same way the reference processor does. It has the interface of
:class:`cvtool.models.preprocess.Preprocess` (``__call__``, ``input_size``, ``draft_size``,
``crop_box``, ``mean``/``std`` for :class:`~cvtool.models.wrap.Normalized`, ``to_json`` /
``from_dict``) plus ``kind = "hf_image_processor"``, so it serialises into exported ONNX
metadata and comes back from it.

The geometry is the reference's own: transformers 5's default image processors resize a
``uint8`` tensor with ``torchvision.transforms.v2.functional.resize(..., antialias=True)``
(``backend="torchvision"``, the default here, calling that same function); its ``Pil``
processors use ``PIL.Image.resize`` (``backend="pil"``). Either way the resized picture is
``uint8``, so cvtool's network input equals the reference's ``pixel_values`` up to float32
rounding in ``(x/255 - mean)/std``. Rescale and normalisation are folded into the effective
``mean``/``std`` that the model wrapper applies to ``x/255``.

Folders without the file fall back to values typed from the model cards (the registry
entry's ``HFPreprocess``, ``source`` says so) and :attr:`note` explains it in one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

KIND = "hf_image_processor"
CONFIG_FILE = "preprocessor_config.json"
FROM_CONFIG = CONFIG_FILE
FALLBACK = "built-in fallback (no preprocessor_config.json)"

# PIL's resampling enum (what preprocessor_config.json stores) → names
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
IMAGENET_STANDARD = (0.5, 0.5, 0.5)
# transformers' per-class defaults for keys a config leaves out (resample, mean/std, size)
_CLASS_DEFAULTS = {
    "DPT": dict(resample=3, image_mean=IMAGENET_STANDARD, image_std=IMAGENET_STANDARD, height=384, width=384),
    "Blip": dict(resample=3, image_mean=(0.48145466, 0.4578275, 0.40821073),
                 image_std=(0.26862954, 0.26130258, 0.27577711), height=384, width=384),
    "ViT": dict(resample=2, image_mean=IMAGENET_STANDARD, image_std=IMAGENET_STANDARD, height=224, width=224),
}


class PreprocessConfigError(ValueError):
    """A preprocessor_config.json that cvtool cannot follow faithfully."""


def _multiple(val: float, multiple: int) -> int:
    """DPT's ``constrain_to_multiple_of``: the nearest multiple of ``multiple`` (where the
    reference would round a side to 0 and fail, one multiple)."""
    return int(max(multiple, round(val / multiple) * multiple))


@dataclass(frozen=True)
class HFPreprocess:
    processor: str = ""  # image_processor_type / feature_extractor_type of the config
    do_resize: bool = True
    height: int = 0  # size {"height", "width"}
    width: int = 0
    shortest_edge: int = 0  # size {"shortest_edge"[, "longest_edge"]}
    longest_edge: int = 0
    keep_aspect_ratio: bool = False  # DPT: scale as little as possible, keeping the aspect
    ensure_multiple_of: int = 1  # DPT: both sides rounded to a multiple of this
    resample: int = 3  # PIL enum as in the config: 2 bilinear, 3 bicubic, ...
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_STANDARD
    image_std: tuple[float, float, float] = IMAGENET_STANDARD
    do_center_crop: bool = False
    crop_height: int = 0
    crop_width: int = 0
    do_pad: bool = False  # DPT: centre-pad to a multiple of size_divisor
    size_divisor: int = 0
    backend: str = "torchvision"  # how the reference resizes: "torchvision" or "pil"
    source: str = FROM_CONFIG  # or FALLBACK
    kind: str = KIND

    # ---- what the pipeline and the model wrapper need ----------------------------------

    def _k(self) -> float:
        """``255 · rescale_factor``: 1 for the usual 1/255 (exactly, not 0.9999…)."""
        r = self.rescale_factor if self.do_rescale else 1.0
        return 1.0 if abs(r * 255.0 - 1.0) < 1e-12 else 255.0 * r

    @property
    def mean(self) -> tuple[float, float, float]:
        """Effective mean for :class:`~cvtool.models.wrap.Normalized`, which computes
        ``(x/255 - mean) / std``: the config's ``(x·rescale_factor - mean) / std`` rewritten."""
        m = self.image_mean if self.do_normalize else (0.0, 0.0, 0.0)
        return tuple(float(v) / self._k() for v in m)

    @property
    def std(self) -> tuple[float, float, float]:
        s = self.image_std if self.do_normalize else (1.0, 1.0, 1.0)
        return tuple(float(v) / self._k() for v in s)

    @property
    def interpolation(self) -> str:
        return RESAMPLE.get(int(self.resample), str(self.resample))

    @property
    def fixed_size(self) -> bool:
        """True when every picture gives the same network input size."""
        if self.do_center_crop:
            return True
        return self.do_resize and bool(self.height and self.width) and not self.keep_aspect_ratio \
            and not (self.do_pad and self.size_divisor > 1 and (self.height % self.size_divisor or
                                                                  self.width % self.size_divisor))

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input for a fixed-size model; the nominal target
        size otherwise (the actual one depends on the picture: :meth:`output_size`)."""
        if self.do_center_crop:
            return (self.crop_width, self.crop_height)
        if self.height and self.width:
            return (self.width, self.height)
        return (self.shortest_edge, self.shortest_edge)

    @property
    def crop(self) -> int:
        """The nominal square size (``Preprocess.crop``'s role: example export input, --imgsz)."""
        return int(self.input_size[1])

    resize = 0
    letterbox = False

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after the resize step, exactly as the reference computes it."""
        if not self.do_resize:
            return (width, height)
        if self.height and self.width:
            if self.keep_aspect_ratio or self.ensure_multiple_of > 1:
                sh, sw = self.height / height, self.width / width
                if self.keep_aspect_ratio:
                    if abs(1 - sw) < abs(1 - sh):
                        sh = sw
                    else:
                        sw = sh
                m = max(1, int(self.ensure_multiple_of))
                return (_multiple(sw * width, m), _multiple(sh * height, m))
            return (self.width, self.height)
        if self.shortest_edge:
            short, long = (width, height) if width <= height else (height, width)
            if self.longest_edge:  # transformers' get_size_with_aspect_ratio
                size = self.shortest_edge
                if long / short * size > self.longest_edge:
                    size = int(round(self.longest_edge * short / long))
                if (width <= height and width == size) or (height <= width and height == size):
                    return (width, height)
                if width < height:
                    return (size, int(size * height / width))
                return (int(size * width / height), size)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        raise PreprocessConfigError("size needs height and width, or shortest_edge")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of the network input for a ``width``×``height`` picture."""
        w, h = self.resized_size(width, height)
        if self.do_center_crop:
            w, h = self.crop_width, self.crop_height
        if self.do_pad and self.size_divisor > 1:
            d = self.size_divisor
            w, h = math.ceil(w / d) * d, math.ceil(h / d) * d
        return (int(w), int(h))

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """No reduced-size JPEG decode: the reference decodes the whole picture, and a DCT-
        scaled decode would change the network input by more than the stated tolerance."""
        return (int(width), int(height))

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the picture that reaches the network (all of it, unless centre-cropped)."""
        if not self.do_center_crop:
            return (0.0, 0.0, float(width), float(height))
        rw, rh = self.resized_size(width, height)
        sx, sy = width / rw, height / rh
        top, left = int((rh - self.crop_height) / 2.0), int((rw - self.crop_width) / 2.0)
        x0, y0 = max(0, left) * sx, max(0, top) * sy
        x1, y1 = min(rw, left + self.crop_width) * sx, min(rh, top + self.crop_height) * sy
        return (x0, y0, x1, y1)

    def with_size(self, n: int) -> "HFPreprocess":
        """The same processing with the target size ``n`` (``--imgsz``): height = width = n, or
        shortest_edge = n."""
        if self.do_center_crop:
            return replace(self, crop_height=n, crop_width=n)
        if self.height and self.width:
            return replace(self, height=n, width=n)
        return replace(self, shortest_edge=n)

    # ---- the pixels ---------------------------------------------------------------------

    def _resize(self, rgb: np.ndarray, w: int, h: int) -> np.ndarray:
        if self.backend == "pil":
            from PIL import Image

            return np.asarray(Image.fromarray(rgb).resize((w, h), resample=int(self.resample)))
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvF

        mode = {0: InterpolationMode.NEAREST_EXACT, 1: InterpolationMode.LANCZOS,
                2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC, 4: InterpolationMode.BOX,
                5: InterpolationMode.HAMMING}[int(self.resample)]
        ok = rgb.flags.writeable and rgb.flags.c_contiguous
        t = torch.from_numpy(rgb if ok else np.array(rgb)).permute(2, 0, 1)
        with torch.inference_mode():
            out = tvF.resize(t, [h, w], interpolation=mode, antialias=True)
        return out.permute(1, 2, 0).contiguous().numpy()

    def _fill(self) -> np.ndarray:
        """The uint8 colour nearest to the reference's padding value, 0 after normalisation."""
        m = np.array(self.image_mean if self.do_normalize else (0.0, 0.0, 0.0))
        m = m / (self.rescale_factor if self.do_rescale else 1.0)
        return np.clip(np.rint(m), 0, 255).astype(np.uint8)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → ``(h, w, 3)`` uint8 RGB network input."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB picture, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        out = rgb
        rw, rh = self.resized_size(w, h)
        if (rw, rh) != (w, h):
            out = self._resize(rgb, rw, rh)
        if self.do_center_crop:
            ch, cw = self.crop_height, self.crop_width
            if cw > rw or ch > rh:  # transformers pads with zeros (before normalisation) first
                pl, pt = max(0, (cw - rw) // 2), max(0, (ch - rh) // 2)
                pr, pb = max(0, (cw - rw + 1) // 2), max(0, (ch - rh + 1) // 2)
                out = np.pad(out, ((pt, pb), (pl, pr), (0, 0)))
                rh, rw = out.shape[:2]
            top, left = int((rh - ch) / 2.0), int((rw - cw) / 2.0)
            out = out[top:top + ch, left:left + cw]
        if self.do_pad and self.size_divisor > 1:
            hh, ww = out.shape[:2]
            d = self.size_divisor
            ph, pw = math.ceil(hh / d) * d - hh, math.ceil(ww / d) * d - ww
            if ph or pw:
                # the reference pads the normalised picture with 0 = the mean colour; the
                # nearest uint8 colour is at most half a grey level from it
                padded = np.empty((hh + ph, ww + pw, 3), np.uint8)
                padded[:] = self._fill()
                padded[ph // 2:ph // 2 + hh, pw // 2:pw // 2 + ww] = out
                out = padded
        return np.ascontiguousarray(out)

    # ---- serialisation -------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "HFPreprocess":
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("image_mean", "image_std"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> "HFPreprocess":
        return cls.from_dict(json.loads(s))

    def describe(self) -> dict:
        """A short account for records and ``models info``."""
        if self.keep_aspect_ratio:
            how = (f"keep aspect, scale as little as possible toward {self.width}x{self.height}, "
                   f"sides multiples of {self.ensure_multiple_of}")
        elif self.height and self.width:
            how = f"stretch to {self.width}x{self.height}"
        else:
            how = f"shorter side to {self.shortest_edge}"
        if self.do_center_crop:
            how += f", centre crop {self.crop_width}x{self.crop_height}"
        if self.do_pad and self.size_divisor > 1:
            how += f", pad to multiples of {self.size_divisor}"
        return {"from": self.source, "processor": self.processor or None,
                "resize": f"{how} ({self.interpolation}, {self.backend})" if self.do_resize else "none",
                "mean": list(self.image_mean), "std": list(self.image_std)}

    # ---- reading preprocessor_config.json -------------------------------------------------

    @classmethod
    def from_config(cls, cfg: dict, source: str = FROM_CONFIG, backend: str = "torchvision") -> "HFPreprocess":
        """Parse a preprocessor_config.json dict the way transformers does (its per-class
        defaults for missing keys)."""
        if not isinstance(cfg, dict):
            raise PreprocessConfigError("not a JSON object")
        proc = str(cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or "")
        family = next((f for f in _CLASS_DEFAULTS if proc.startswith(f)), None)
        dflt = dict(_CLASS_DEFAULTS.get(family or "ViT"))
        size = cfg.get("size", {"height": dflt["height"], "width": dflt["width"]})
        kw: dict = {}
        if isinstance(size, (int, float)):  # old configs: an int means a square (height = width)
            kw.update(height=int(size), width=int(size))
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            kw.update(height=int(size[0]), width=int(size[1]))
        elif isinstance(size, dict):
            if size.get("height") and size.get("width"):
                kw.update(height=int(size["height"]), width=int(size["width"]))
            elif size.get("shortest_edge"):
                kw.update(shortest_edge=int(size["shortest_edge"]), longest_edge=int(size.get("longest_edge") or 0))
            else:
                raise PreprocessConfigError(f"size {size!r}: cvtool follows height/width or shortest_edge")
        else:
            raise PreprocessConfigError(f"size {size!r} is not understood")
        resample = cfg.get("resample", dflt["resample"])
        if int(resample) not in RESAMPLE:
            raise PreprocessConfigError(f"resample {resample!r} is not a PIL resampling filter")

        def triple(v):
            v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3)]
            if len(v) != 3:
                raise PreprocessConfigError(f"mean/std {v!r}: expected 3 values (RGB)")
            return tuple(v)

        crop = cfg.get("crop_size")
        do_crop = bool(cfg.get("do_center_crop", False)) and crop is not None
        if do_crop:
            if isinstance(crop, (int, float)):
                kw.update(crop_height=int(crop), crop_width=int(crop))
            else:
                kw.update(crop_height=int(crop["height"]), crop_width=int(crop["width"]))
        pad = bool(cfg.get("do_pad", False))
        divisor = cfg.get("size_divisor") or 0
        if pad and not divisor:
            if cfg.get("pad_size"):
                raise PreprocessConfigError("do_pad with pad_size is not supported by cvtool")
            pad = False  # nothing to pad to
        return cls(processor=proc, do_resize=bool(cfg.get("do_resize", True)),
                   keep_aspect_ratio=bool(cfg.get("keep_aspect_ratio", False)),
                   ensure_multiple_of=int(cfg.get("ensure_multiple_of") or 1), resample=int(resample),
                   do_rescale=bool(cfg.get("do_rescale", True)),
                   rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
                   do_normalize=bool(cfg.get("do_normalize", True)),
                   image_mean=triple(cfg.get("image_mean", dflt["image_mean"])),
                   image_std=triple(cfg.get("image_std", dflt["image_std"])),
                   do_center_crop=do_crop, do_pad=pad, size_divisor=int(divisor), backend=backend,
                   source=source, **kw)

    @property
    def note(self) -> str | None:
        """One line for stderr when the built-in fallback is in use, else None."""
        if self.source == FROM_CONFIG:
            return None
        return (f"no {CONFIG_FILE} in the weights folder: using cvtool's built-in preprocessing for "
                f"this model ({self.describe()['resize']}), typed from its model card")


def from_folder(folder: str | Path, fallback: HFPreprocess) -> HFPreprocess:
    """The preprocessing in ``folder/preprocessor_config.json``, or ``fallback`` marked as such
    when the folder has none. A file that cannot be followed raises PreprocessConfigError."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return replace(fallback, source=FALLBACK)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PreprocessConfigError(f"{path}: cannot read it ({e})") from None
    try:
        return HFPreprocess.from_config(cfg, backend=fallback.backend)
    except (PreprocessConfigError, TypeError, ValueError, KeyError) as e:
        raise PreprocessConfigError(f"{path}: {e}") from None


def preprocess_from_dict(d: dict):
    """A preprocessing description from ONNX metadata or a checkpoint: an :class:`HFPreprocess`
    when it says ``kind: hf_image_processor``, else a plain ``Preprocess``."""
    if d.get("kind") == KIND:
        return HFPreprocess.from_dict(d)
    from cvtool.models.preprocess import Preprocess

    return Preprocess.from_dict(d)
