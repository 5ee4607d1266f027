"""ONNX files that other tools exported: what they are, how to feed them, how to read them.

cvtool's own ONNX files carry ``cvtool.*`` metadata (task, labels, preprocessing). Files from
other exporters do not, but many describe themselves in their own way, and the rest can be
described once by the user. :func:`describe` reads a file's metadata, inputs and outputs and
returns a :class:`Description`: the task, the class names, the input size and layout, the
output layout, and for every fact where it came from (``"metadata:names"``, ``"input shape"``,
``"sidecar model.onnx.json"``, ``"default"``...). It refuses, in one line that names the shape
it found, a file whose input or output does not fit the task.

Recognised:

* **Ultralytics** exports (YOLOv5u, v8, 11 and later; ``yolo export format=onnx``). The exporter
  writes ``metadata_props`` as ``str()`` of Python values: ``task`` (detect, segment, classify,
  pose), ``names`` (a dict literal ``{0: 'person', ...}``), ``imgsz`` (``[640, 640]``),
  ``stride``, ``batch``, ``kpt_shape`` (pose, ``[17, 3]``), ``args`` (``{'nms': False, ...}``),
  ``end2end`` (models without NMS in post-processing). Values are parsed with
  :func:`ast.literal_eval`, never evaluated. The input is ``images`` float ``(B, 3, H, W)``,
  RGB scaled to [0, 1]; outputs are

  - detect ``output0`` ``(B, 4+nc, N)``: centre x, y, width, height and one score per class;
  - segment: the same plus 32 mask coefficients, and ``output1`` prototypes ``(B, 32, mh, mw)``;
  - pose: ``(B, 4+nc+K*3, N)``, keypoints as (x, y, visibility) triples;
  - NMS inside the graph / end-to-end models: ``(B, K, 6 [+32 | +K*3])`` rows
    ``x1, y1, x2, y2, score, class``;
  - classify ``(B, nc)`` probabilities (the export ends in a softmax).

* **Any other classifier or detector** described by a *sidecar* JSON file next to it,
  ``model.onnx.json`` (``cvtool models import`` writes one), e.g.
  ``{"task": "classify", "labels": "imagenet", "resize": 256, "crop": 224, "mean": [...],
  "std": [...]}``; see :data:`SIDECAR_KEYS`.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIDECAR_SUFFIX = ".json"  # model.onnx → model.onnx.json
SIDECAR_KEYS = {
    "task": "classify | detect | segment | pose",
    "labels": "a bundled list name (imagenet, coco, voc; for box models coco is the 80 names in YOLO "
              "order), a list of names, or a text file (one per line)",
    "resize": "classify: shorter side after resizing (default: crop, or 0 to stretch to the crop)",
    "crop": "classify: square centre crop (default: the input's fixed size)",
    "imgsz": "detect/segment/pose: letterbox size (default: the input's fixed size, else 640)",
    "mean": "per-channel mean of the [0, 1] picture (default 0, 0, 0)",
    "std": "per-channel std (default 1, 1, 1)",
    "scale": "divide pixel values by this before mean/std (default 255; 1 for 0..255 inputs)",
    "bgr": "true if the network expects BGR channel order (default false)",
    "layout": "detect: yolo ((B, 4+nc, N) centre boxes) or end2end ((B, K, 6) corner boxes, NMS done); "
              "classify: logits or probabilities",
}
ULTRALYTICS_TASKS = ("detect", "segment", "classify", "pose")


class ForeignError(ValueError):
    """The file cannot be used as described; the message is one line and names the file."""


# ---------------------------------------------------------------------------------------------
# Preprocessing: Ultralytics' centred letterbox


@dataclass(frozen=True)
class LetterBox:
    """Ultralytics' ``LetterBox`` for exported files (``auto=False``, ``center=True``): scale the
    picture by ``r = min(H/h, W/w)`` (bilinear), round the new size, pad the rest with grey 114,
    half on each side (``top = round(dh/2 - 0.1)``, ``left = round(dw/2 - 0.1)``).

    Same interface as :class:`cvtool.models.preprocess.Preprocess`: ``__call__(rgb)`` gives the
    uint8 ``(H, W, 3)`` network input; :meth:`geometry` gives the exact scale and offsets used,
    which map boxes back to the picture. The network saw the whole picture, so JPEG draft
    decoding is off (``draft_size`` keeps the full size), matching Ultralytics' full decode.
    """

    height: int = 640
    width: int = 640
    kind: str = "letterbox-center"
    pad_value: int = 114

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input."""
        return (self.width, self.height)

    @property
    def crop(self) -> int:  # the square size, for code that asks a Preprocess for it
        return max(self.width, self.height)

    def geometry(self, width: int, height: int) -> tuple[float, int, int, int, int]:
        """``(r, new_w, new_h, left, top)`` for a ``width``×``height`` picture."""
        r = min(self.height / height, self.width / width)
        nw, nh = int(round(width * r)), int(round(height * r))
        dw, dh = (self.width - nw) / 2, (self.height - nh) / 2
        return r, nw, nh, int(round(dw - 0.1)), int(round(dh - 0.1))

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        return (width, height)

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        return (0.0, 0.0, float(width), float(height))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        r, nw, nh, left, top = self.geometry(w, h)
        out = np.full((self.height, self.width, 3), self.pad_value, np.uint8)
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else rgb
        out[top:top + nh, left:left + nw] = resized[: self.height - top, : self.width - left]
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "height": self.height, "width": self.width,
                           "pad_value": self.pad_value}, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "LetterBox":
        return cls(height=int(d["height"]), width=int(d["width"]), pad_value=int(d.get("pad_value", 114)))


# ---------------------------------------------------------------------------------------------
# Feeding: uint8 (B, H, W, 3) pictures → the tensor the file wants


@dataclass(frozen=True)
class Feed:
    """How a foreign graph takes pictures: ``(x / scale - mean) / std`` in ``dtype``, NCHW or
    NHWC, RGB or BGR."""

    layout: str = "NCHW"
    dtype: str = "float32"
    scale: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = batch[..., ::-1] if self.bgr else batch
        if self.dtype == "uint8":
            out = x
        else:
            out = x.astype(np.float32) * np.float32(1.0 / self.scale)
            if any(self.mean) or any(s != 1 for s in self.std):
                out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            if self.dtype == "float16":
                out = out.astype(np.float16)
        if self.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)


class ForeignRunner:
    """Wraps an :class:`~cvtool.runtime.onnx.OnnxRunner`: feeds it the file's own input tensor
    and returns every output (one array, or a list when the graph has several), float32. A file
    with a fixed batch size gets the batch in chunks of that size (the last one padded)."""

    def __init__(self, runner, feed: Feed):
        self.inner, self.feed = runner, feed
        self.backend, self.provider, self.device = runner.backend, runner.provider, runner.device
        self.note = getattr(runner, "note", None)

    def __call__(self, batch: np.ndarray, extra: dict | None = None):
        x = self.feed(batch)
        fixed = self.inner.fixed_batch
        if not fixed or fixed == x.shape[0]:
            outs = self.inner.run_all(x)
        else:
            parts = []
            for i in range(0, x.shape[0], fixed):
                chunk = x[i:i + fixed]
                n = chunk.shape[0]
                if n < fixed:
                    chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
                parts.append([o[:n] for o in self.inner.run_all(chunk)])
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        outs = [np.asarray(o, np.float32) for o in outs]
        return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------------------------------------
# Description


@dataclass
class Description:
    """What cvtool recognised in a foreign ONNX file; ``sources[fact]`` says where each came from."""

    path: str
    format: str  # "ultralytics" | "sidecar"
    task: str  # cvtool's task: classify | detect | segment (pose is detect with keypoints)
    kind: str  # detect | segment | classify | pose (the file's own task)
    labels: tuple[str, ...]
    layout: str  # yolo | end2end | probabilities | logits
    input_name: str
    input_shape: list
    input_dtype: str
    imgsz: tuple[int, int]  # (height, width) the file runs at by default
    dynamic_size: bool
    outputs: list[tuple[str, list]]
    preprocess: object  # LetterBox or cvtool.models.preprocess.Preprocess
    feed: Feed
    kpt_shape: tuple[int, int] | None = None
    num_masks: int = 0
    metadata: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def to_dict(self) -> dict:
        d = {"file": self.path, "format": self.format, "task": self.task, "kind": self.kind,
             "layout": self.layout, "num_classes": len(self.labels), "labels_head": list(self.labels[:5]),
             "input": {"name": self.input_name, "shape": self.input_shape, "dtype": self.input_dtype,
                       "layout": f"{self.feed.layout} {self.feed.dtype} {'BGR' if self.feed.bgr else 'RGB'}"
                                 f" (x/{self.feed.scale:g} - mean)/std",
                       "mean": list(self.feed.mean), "std": list(self.feed.std)},
             "imgsz": {"height": self.imgsz[0], "width": self.imgsz[1]}, "dynamic_size": self.dynamic_size,
             "outputs": [{"name": n, "shape": s} for n, s in self.outputs],
             "preprocess": json.loads(self.preprocess.to_json())}
        if self.kpt_shape:
            d["kpt_shape"] = list(self.kpt_shape)
        if self.num_masks:
            d["num_masks"] = self.num_masks
        d["sources"] = dict(self.sources)
        return d


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def _dims(value_info) -> list:
    """An ONNX tensor's shape: ints for fixed axes, the axis name (or None) for free ones."""
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 11: "float64"}


def _literal(text: str, key: str, where: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ForeignError(f"{where}: metadata {key!r} is not a Python literal ({text[:60]!r})") from None


def _names(value, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise ForeignError(f"{where}: {key} keys must be class ids, found {list(value)[:3]}") from None
        if ids != list(range(len(ids))):
            raise ForeignError(f"{where}: {key} ids must run 0..{len(ids) - 1}")
        by = {int(k): str(v) for k, v in value.items()}
        return tuple(by[i] for i in ids)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ForeignError(f"{where}: {key} must be a dict of id → name or a list of names")


def read_graph(path: str | os.PathLike):
    """``(metadata, inputs, outputs)`` of an ONNX file without loading its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ForeignError(f"{path}: not a readable ONNX file ({first[:200]})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    init = {i.name for i in model.graph.initializer}
    inputs = [(i.name, _dims(i), _DTYPES.get(i.type.tensor_type.elem_type, str(i.type.tensor_type.elem_type)))
              for i in model.graph.input if i.name not in init]
    outputs = [(o.name, _dims(o)) for o in model.graph.output]
    return meta, inputs, outputs


def is_ultralytics(meta: dict) -> bool:
    return "names" in meta and (meta.get("task") in ULTRALYTICS_TASKS or "Ultralytics" in meta.get("author", ""))


def describe(path: str | os.PathLike, sidecar: dict | None = None, sidecar_name: str | None = None,
             imgsz: int | None = None) -> Description:
    """Recognise a foreign ONNX file. ``sidecar`` (a dict, e.g. from ``models import`` options)
    overrides the sidecar file; without either, the file's own metadata must say what it is."""
    path = str(path)
    if not os.path.isfile(path):
        raise ForeignError(f"{path}: no such file")
    meta, inputs, outputs = read_graph(path)
    if sidecar is None and sidecar_path(path).is_file():
        sidecar_name = sidecar_path(path).name
        try:
            sidecar = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError) as e:
            raise ForeignError(f"{sidecar_path(path)}: not a readable JSON file ({str(e)[:120]})") from None
        if not isinstance(sidecar, dict):
            raise ForeignError(f"{sidecar_path(path)}: expected a JSON object")
    if not inputs:
        raise ForeignError(f"{path}: the graph has no inputs")
    if len(inputs) > 1:
        raise ForeignError(f"{path}: the graph takes {len(inputs)} inputs "
                           f"({', '.join(n for n, _, _ in inputs)}); cvtool feeds one picture tensor")
    if sidecar is not None:
        return _from_sidecar(path, meta, inputs[0], outputs, sidecar, sidecar_name or "options", imgsz)
    if is_ultralytics(meta):
        return _from_ultralytics(path, meta, inputs[0], outputs, imgsz)
    raise ForeignError(
        f"{path}: this ONNX file has no cvtool metadata, no Ultralytics metadata and no sidecar "
        f"{sidecar_path(path).name}; describe it once with `cvtool models import NAME {path} --task "
        "classify|detect ...`")


def _input_layout(path: str, name: str, shape: list, dtype: str) -> tuple[str, tuple[int | None, int | None]]:
    """``("NCHW" | "NHWC", (H, W))`` from the input shape, or a refusal naming it."""
    if len(shape) == 4 and shape[1] == 3:
        layout, hw = "NCHW", shape[2:4]
    elif len(shape) == 4 and shape[3] == 3:
        layout, hw = "NHWC", shape[1:3]
    else:
        raise ForeignError(f"{path}: input {name!r} has shape {_fmt(shape)}; cvtool feeds RGB pictures as "
                           "(B, 3, H, W) or (B, H, W, 3)")
    if dtype not in ("float32", "float16", "uint8"):
        raise ForeignError(f"{path}: input {name!r} is {dtype}; cvtool feeds float32, float16 or uint8")
    return layout, tuple(d if isinstance(d, int) else None for d in hw)


def _fmt(shape: list) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


def _size_fact(hw, declared, declared_src: str, imgsz: int | None, path: str) -> tuple[tuple[int, int], bool, str]:
    """The input size to use and whether the file takes other sizes."""
    fixed = all(isinstance(d, int) for d in hw)
    if imgsz is not None:
        if fixed and tuple(hw) != (imgsz, imgsz):
            raise ForeignError(f"--imgsz {imgsz}: {path} has a fixed input of {hw[0]}x{hw[1]}; "
                               "it runs at that size only")
        return (imgsz, imgsz), not fixed, "--imgsz"
    if fixed:
        return (int(hw[0]), int(hw[1])), False, "input shape"
    if declared is not None:
        return declared, True, declared_src
    return (640, 640), True, "default (dynamic input)"


def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], int):
        return (int(v[0]), int(v[0]))
    return None


def _from_ultralytics(path: str, meta: dict, inp, outputs, imgsz: int | None) -> Description:
    iname, ishape, idtype = inp
    layout, hw = _input_layout(path, iname, ishape, idtype)
    src = {"format": "metadata (author/task/names: Ultralytics export)"}
    kind = meta.get("task", "detect")
    if kind not in ULTRALYTICS_TASKS:
        raise ForeignError(f"{path}: Ultralytics task {kind!r} is not supported (detect, segment, classify, pose)")
    src["task"] = "metadata:task" if "task" in meta else "default"
    labels = _names(_literal(meta["names"], "names", path), path, "names")
    src["labels"] = "metadata:names"
    declared = _pair(_literal(meta["imgsz"], "imgsz", path)) if "imgsz" in meta else None
    size, dynamic, src["imgsz"] = _size_fact(hw, declared, "metadata:imgsz", imgsz, path)
    args = _literal(meta["args"], "args", path) if "args" in meta else {}
    args = args if isinstance(args, dict) else {}
    end2end = bool(args.get("nms")) or str(meta.get("end2end", "")).lower() == "true"
    kpt = None
    if kind == "pose":
        kpt = tuple(_literal(meta.get("kpt_shape", "[17, 3]"), "kpt_shape", path))
        src["kpt_shape"] = "metadata:kpt_shape" if "kpt_shape" in meta else "default [17, 3]"
    feed = Feed(layout=layout, dtype=idtype if idtype != "uint8" else "uint8")
    src["input"] = "input shape/dtype; Ultralytics feeds RGB/255, no mean/std"
    nc = len(labels)
    if kind == "classify":
        from cvtool.models.preprocess import Preprocess

        pre = Preprocess(resize=size[0], crop=size[0], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        src["preprocess"] = "Ultralytics classify_transforms: shorter side to imgsz, centre crop, /255"
        _check_classify(path, outputs, nc)
        return Description(path, "ultralytics", "classify", kind, labels, "probabilities", iname, ishape, idtype,
                           size, dynamic, outputs, pre, feed, metadata=meta,
                           sources={**src, "layout": "Ultralytics classify head ends in softmax"})
    extra = {"detect": 0, "segment": 32, "pose": (kpt[0] * kpt[1]) if kpt else 0}[kind]
    layout_name = _check_boxes(path, outputs, nc, extra, kind, end2end)
    src["layout"] = ("metadata:args nms/end2end" if end2end else "output shape") + f" → {layout_name}"
    pre = LetterBox(size[0], size[1])
    src["preprocess"] = "Ultralytics LetterBox (centred, pad 114)"
    return Description(path, "ultralytics", "segment" if kind == "segment" else "detect", kind, labels, layout_name,
                       iname, ishape, idtype, size, dynamic, outputs, pre, feed, kpt_shape=kpt,
                       num_masks=32 if kind == "segment" else 0, metadata=meta, sources=src)


def _check_classify(path: str, outputs, nc: int) -> None:
    name, shape = outputs[0]
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != nc):
        raise ForeignError(f"{path}: output {name!r} has shape {_fmt(shape)}; a classifier with {nc} classes "
                           f"gives (B, {nc})")


def _check_boxes(path: str, outputs, nc: int, extra: int, kind: str, end2end: bool) -> str:
    """``"yolo"`` or ``"end2end"``, from the first output's shape; refuse what fits neither."""
    name, shape = outputs[0]
    want = 4 + nc + extra
    if len(shape) != 3:
        raise ForeignError(f"{path}: output {name!r} has shape {_fmt(shape)}; a {kind} model gives "
                           f"(B, {want}, N) or (B, K, {6 + extra})")
    if kind == "segment":
        if len(outputs) < 2 or len(outputs[1][1]) != 4 or outputs[1][1][1] not in (32, None):
            got = _fmt(outputs[1][1]) if len(outputs) > 1 else "nothing"
            raise ForeignError(f"{path}: a segment model needs a second output of mask prototypes (B, 32, mh, mw); "
                               f"found {got}")
    if end2end or (shape[2] == 6 + extra and shape[1] != want):
        if shape[2] not in (6 + extra, None):
            raise ForeignError(f"{path}: output {name!r} has shape {_fmt(shape)}; an end-to-end {kind} model "
                               f"gives (B, K, {6 + extra})")
        return "end2end"
    if shape[1] not in (want, None):
        raise ForeignError(f"{path}: output {name!r} has shape {_fmt(shape)}; with {nc} classes a {kind} model "
                           f"gives (B, {want}, N) (4 box values + {nc} scores"
                           + (f" + {extra} extra" if extra else "") + ") or (B, K, " + str(6 + extra) + ")")
    return "yolo"


def _labels_from(value, where: str, boxes: bool = False) -> tuple[str, ...]:
    """Class names from a sidecar/option. For box models (``boxes``), ``coco`` means the 80
    names in the contiguous order YOLO-style detectors use (the bundled list is COCO's 90-id
    numbering with gaps and a background entry)."""
    from cvtool.models.labels import load_labels

    if boxes and value == "coco":
        return tuple(n for n in load_labels("coco") if n and not n.startswith("__"))

    if isinstance(value, (list, tuple, dict)):
        return _names(value, where, "labels")
    if isinstance(value, str):
        if Path(value).is_file():
            return tuple(line.rstrip("\n") for line in Path(value).read_text(encoding="utf-8").splitlines()
                         if line.strip())
        try:
            return load_labels(value)
        except OSError:
            raise ForeignError(f"{where}: labels {value!r} is neither a bundled list (imagenet, coco, voc) "
                               "nor a file") from None
    raise ForeignError(f"{where}: labels must be a list name, a file or a list of names")


def _triple(v, key: str, where: str) -> tuple[float, float, float]:
    try:
        t = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else str(v).replace(",", " ").split()))
    except ValueError:
        t = ()
    if len(t) == 1:
        t = t * 3
    if len(t) != 3 or any(not math.isfinite(x) for x in t) or (key == "std" and min(t) <= 0):
        rule = ", all > 0" if key == "std" else ""
        raise ForeignError(f"{where}: {key} must be three numbers (one per channel){rule}")
    return t


def _from_sidecar(path: str, meta: dict, inp, outputs, side: dict, side_name: str, imgsz: int | None) -> Description:
    from cvtool.models.preprocess import Preprocess

    where = f"{path} ({side_name})"
    unknown = sorted(set(side) - set(SIDECAR_KEYS))
    if unknown:
        raise ForeignError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SIDECAR_KEYS)})")
    src = {"format": side_name}
    kind = side.get("task")
    if kind not in ULTRALYTICS_TASKS:
        raise ForeignError(f"{where}: task must be one of {', '.join(ULTRALYTICS_TASKS)} (found {kind!r})")
    src["task"] = side_name
    iname, ishape, idtype = inp
    layout, hw = _input_layout(path, iname, ishape, idtype)
    if "labels" in side:
        labels, src["labels"] = _labels_from(side["labels"], where, boxes=kind != "classify"), side_name
    elif "names" in meta:
        labels, src["labels"] = _names(_literal(meta["names"], "names", path), path, "names"), "metadata:names"
    else:
        raise ForeignError(f"{where}: no class names (give labels: imagenet, coco, a file or a list)")
    scale = float(side.get("scale", 255.0))
    mean = _triple(side.get("mean", 0.0), "mean", where)
    std = _triple(side.get("std", 1.0), "std", where)
    feed = Feed(layout=layout, dtype=idtype, scale=scale, mean=mean, std=std, bgr=bool(side.get("bgr", False)))
    src["input"] = f"input shape/dtype; scale/mean/std/bgr from {side_name}"
    nc = len(labels)
    if kind == "classify":
        crop = int(side.get("crop") or (imgsz or (hw[0] if hw[0] else 224)))
        if all(isinstance(d, int) for d in hw) and tuple(hw) != (crop, crop):
            raise ForeignError(f"{where}: crop {crop} does not fit the input {iname!r} of shape {_fmt(ishape)}")
        resize = int(side.get("resize", crop))
        pre = Preprocess(resize=resize, crop=crop, mean=mean, std=std)
        src["preprocess"] = f"{side_name}: resize {resize}, crop {crop}"
        _check_classify(path, outputs, nc)
        out_layout = side.get("layout", "logits")
        if out_layout not in ("logits", "probabilities"):
            raise ForeignError(f"{where}: classify layout must be logits or probabilities")
        src["layout"] = side_name if "layout" in side else "default (logits)"
        return Description(path, "sidecar", "classify", kind, labels, out_layout, iname, ishape, idtype,
                           (crop, crop), not all(isinstance(d, int) for d in hw), outputs, pre, feed,
                           metadata=meta, sources=src)
    declared = _pair(side.get("imgsz")) if "imgsz" in side else None
    size, dynamic, src["imgsz"] = _size_fact(hw, declared, side_name, imgsz, path)
    kpt = tuple(side.get("kpt_shape", (17, 3))) if kind == "pose" else None
    extra = {"detect": 0, "segment": 32, "pose": (kpt[0] * kpt[1]) if kpt else 0}[kind]
    want = side.get("layout")
    if want not in (None, "yolo", "end2end"):
        raise ForeignError(f"{where}: {kind} layout must be yolo or end2end")
    layout_name = _check_boxes(path, outputs, nc, extra, kind, want == "end2end")
    if want == "yolo" and layout_name != "yolo":
        raise ForeignError(f"{where}: output {outputs[0][0]!r} has shape {_fmt(outputs[0][1])}, not the yolo "
                           f"layout (B, {4 + nc + extra}, N)")
    src["layout"] = (side_name if want else "output shape") + f" → {layout_name}"
    src["preprocess"] = "letterbox (centred, pad 114), as Ultralytics"
    return Description(path, "sidecar", "segment" if kind == "segment" else "detect", kind, labels, layout_name,
                       iname, ishape, idtype, size, dynamic, outputs, LetterBox(size[0], size[1]), feed,
                       kpt_shape=kpt, num_masks=32 if kind == "segment" else 0, metadata=meta, sources=src)


def _cvtool_metadata(path: str) -> dict:
    """The metadata of an ONNX file cvtool exported (task, labels and preprocessing, as
    ``--model FILE.onnx`` reads them), or {} for any other file."""
    from cvtool.runtime.onnx import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:
        return {}
    return meta if all(k in meta for k in ("task", "labels", "preprocess")) else {}


def import_onnx(name: str, path: str, sidecar: dict | None, force: bool = False) -> Path:
    """``cvtool models import NAME FILE.onnx [--task ...]``: check that cvtool can run the file as
    described (``sidecar``: the options given; None: the file's own metadata), then copy it to
    ``$CVTOOL_HOME/imported/NAME.onnx`` with the description beside it as ``NAME.onnx.json``."""
    import re
    import shutil
    import tempfile

    from cvtool.models import registry
    from cvtool.models.loader import imported_dir

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.lower().endswith(".onnx"):
        raise ForeignError(f"{name!r}: a model name is letters, digits, '_', '-' and '.', without .onnx")
    if registry.is_registered(name):
        raise ForeignError(f"{name!r} is a registered model; choose another name for this ONNX file")
    own = _cvtool_metadata(path)
    if own and sidecar:
        raise ForeignError(f"{path} was exported by cvtool and describes itself ({own['task']}, "
                           f"{own.get('model', '?')}); import it without options")
    if own:  # cvtool's own export: already self-describing, so it is copied as it is, with no sidecar
        sidecar = None
    elif sidecar is None and sidecar_path(path).is_file():  # the file's own sidecar travels with it
        try:
            sidecar = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError) as e:
            raise ForeignError(f"{sidecar_path(path)}: not a readable JSON file ({str(e)[:120]})") from None
    if sidecar is not None:
        if "mean" in sidecar:
            sidecar["mean"] = list(_triple(sidecar["mean"], "--mean", path))
        if "std" in sidecar:
            sidecar["std"] = list(_triple(sidecar["std"], "--std", path))
        if isinstance(sidecar.get("labels"), str) and Path(sidecar["labels"]).is_file():
            sidecar["labels"] = list(_labels_from(sidecar["labels"], path))  # travels with the copy
        if "task" not in sidecar:
            raise ForeignError(f"{path}: --task is needed to describe an ONNX file")
    if not own:
        describe(path, sidecar=sidecar, sidecar_name="options")  # refuses what cvtool cannot run
    folder = imported_dir()
    dest = folder / f"{name}.onnx"
    if dest.exists() and not force:
        raise ForeignError(f"{name!r} is already imported ({dest}); pass --force to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    side_dest = sidecar_path(dest)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".import-", suffix=".onnx")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o644)
        if sidecar is not None:
            side_dest.write_text(json.dumps(sidecar, indent=2) + "\n")
        elif side_dest.exists():
            side_dest.unlink()
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
