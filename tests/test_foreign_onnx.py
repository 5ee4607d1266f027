"""ONNX files from other exporters (issue 15): Ultralytics layouts and plain described files.

Every file here is built with ``onnx.helper`` with the input/output names, shapes and metadata
keys the real exporters write (Ultralytics: input ``images`` float (B, 3, H, W), outputs
``output0`` and, for segment models, ``output1``; metadata values are ``str()`` of Python
values). Their outputs are constants (or a simple function of the picture), so the right answer
is computed by hand here: boxes through Ultralytics' letterbox geometry, masks from known
coefficients and prototypes, class scores from channel means computed with torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, jsonl

COFFEE = SAMPLES / "coffee.jpg"  # 600×400: at imgsz 640, r = 16/15, resized to 640×427, top pad 106
R = 16 / 15
TOP = 106
NAMES3 = {0: "person", 1: "bicycle", 2: "car"}


def ultra_meta(task: str, names: dict, imgsz=(640, 640), batch: int = 1, **extra) -> dict:
    """Metadata as Ultralytics' exporter writes it (values are str() of Python objects)."""
    meta = {"description": f"Ultralytics YOLO11n-{task} model", "author": "Ultralytics",
            "date": "2025-01-01T00:00:00", "version": "8.3.40", "license": "AGPL-3.0 License",
            "docs": "https://docs.ultralytics.com", "stride": 32, "task": task, "batch": batch,
            "imgsz": list(imgsz), "names": names,
            "args": {"batch": batch, "half": False, "dynamic": False, "simplify": True, "opset": None,
                     "nms": False}, "channels": 3}
    meta.update(extra)
    return {k: str(v) for k, v in meta.items()}


def const_graph(path: Path, outputs: dict[str, np.ndarray], meta: dict | None, input_name: str = "images",
                input_shape=(1, 3, 640, 640), nhwc: bool = False) -> Path:
    """A graph whose outputs are the given batch-1 constants, repeated over the batch; the
    picture enters as ``0 * mean(picture)`` so that the input is really consumed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    axes = [1, 2, 3]
    nodes = [helper.make_node("ReduceMean", [input_name, "axes"], ["m"], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.array(axes, np.int64), "axes"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for k, (name, value) in enumerate(outputs.items()):
        value = np.asarray(value, np.float32)
        inits.append(numpy_helper.from_array(value, f"c{k}"))
        inits.append(numpy_helper.from_array(np.array([-1] + [1] * (value.ndim - 1), np.int64), f"s{k}"))
        nodes += [helper.make_node("Reshape", ["z", f"s{k}"], [f"z{k}"]),
                  helper.make_node("Add", [f"c{k}", f"z{k}"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                  [input_shape[0], *value.shape[1:]]))
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(nodes, "g", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def cxcywh(x1, y1, x2, y2):
    """A picture box (coffee.jpg) → the centre box in network-input pixels, by hand: ×16/15, +106 on y."""
    X1, Y1, X2, Y2 = x1 * R, y1 * R + TOP, x2 * R, y2 * R + TOP
    return [(X1 + X2) / 2, (Y1 + Y2) / 2, X2 - X1, Y2 - Y1]


def detect_output() -> np.ndarray:
    """(1, 4+3, 6) candidates with known fates."""
    cols = [
        (cxcywh(150, 60, 450, 300), [0.9, 0.0, 0.0]),  # 0 person: kept
        (cxcywh(152, 62, 452, 302), [0.8, 0.0, 0.0]),  # 1 person, IoU 0.97 with 0: suppressed
        (cxcywh(151, 61, 451, 301), [0.0, 0.0, 0.85]),  # 2 car on the same spot: kept, unless agnostic
        (cxcywh(500, 320, 560, 380), [0.0, 0.5, 0.1]),  # 3 bicycle: kept
        (cxcywh(10, 10, 50, 50), [0.2, 0.0, 0.0]),  # 4 under --conf 0.3: dropped
        ([40.0, 150.0, 100.0, 100.0], [0.0, 0.0, 0.7]),  # 5 car reaching past the picture's top-left: clipped
    ]
    out = np.zeros((1, 7, len(cols)), np.float32)
    for i, (box, sc) in enumerate(cols):
        out[0, :4, i] = box
        out[0, 4:, i] = sc
    return out


@pytest.fixture
def det_file(tmp_path) -> Path:
    return const_graph(tmp_path / "yolo11n.onnx", {"output0": detect_output()}, ultra_meta("detect", NAMES3))


def run_detect(cli, *args):
    res = cli("detect", *args, "-f", "jsonl", "-q")
    return res, jsonl(res.stdout)


def boxes_of(rec):
    return [(d["label"], d["box"], d["score"]) for d in rec["detections"]]


def test_ultralytics_detect_decodes_exactly(cli, det_file):
    res, recs = run_detect(cli, COFFEE, "--model", det_file)
    assert res.exit_code == 0, res.stderr
    (rec,) = recs
    assert rec["ok"] and rec["image_size"] == {"width": 600, "height": 400}
    # candidate 5: centre (40, 150), 100×100 in the input → (−10, 100, 90, 200) → picture
    # x: −10·15/16 → 0 (clipped), 90·15/16 = 84.375; y: (100 − 106)·15/16 → 0, (200 − 106)·15/16 = 88.125
    assert boxes_of(rec) == [
        ("person", [150.0, 60.0, 450.0, 300.0], 0.9),
        ("car", [151.0, 61.0, 451.0, 301.0], 0.85),
        ("car", [0.0, 0.0, 84.38, 88.12], 0.7),
        ("bicycle", [500.0, 320.0, 560.0, 380.0], 0.5),
    ]
    assert [d["class_id"] for d in rec["detections"]] == [0, 2, 2, 1]


def test_ultralytics_detect_options(cli, det_file):
    _, (rec,) = run_detect(cli, COFFEE, "--model", det_file, "--agnostic-nms")
    assert [d["score"] for d in rec["detections"]] == [0.9, 0.7, 0.5]  # the car on the person goes
    _, (rec,) = run_detect(cli, COFFEE, "--model", det_file, "--classes", "car,1")
    assert [d["label"] for d in rec["detections"]] == ["car", "car", "bicycle"]
    _, (rec,) = run_detect(cli, COFFEE, "--model", det_file, "--classes", "0")
    assert [d["label"] for d in rec["detections"]] == ["person"]
    _, (rec,) = run_detect(cli, COFFEE, "--model", det_file, "--conf", "0.8", "--max-det", "1")
    assert boxes_of(rec) == [("person", [150.0, 60.0, 450.0, 300.0], 0.9)]
    _, (rec,) = run_detect(cli, COFFEE, "--model", det_file, "--conf", "0.1", "--iou", "0.99")
    assert [d["score"] for d in rec["detections"]] == [0.9, 0.85, 0.8, 0.7, 0.5, 0.2]


def test_letterbox_matches_ultralytics_geometry():
    """Ultralytics' LetterBox on a 600×400 picture at 640: r = 640/600, new size round(426.67) = 427,
    dh = 213/2 → top = round(106.4) = 106, bottom 107; 114 grey around it."""
    from cvtool.io.decode import decode_image
    from cvtool.models.foreign import LetterBox

    rgb = decode_image(str(COFFEE)).rgb
    lb = LetterBox(640, 640)
    assert lb.geometry(600, 400) == (640 / 600, 640, 427, 0, 106)
    out = lb(rgb)
    assert out.shape == (640, 640, 3) and out.dtype == np.uint8
    assert (out[:106] == 114).all() and (out[106 + 427:] == 114).all()
    import cv2

    np.testing.assert_array_equal(out[106:533], cv2.resize(rgb, (640, 427), interpolation=cv2.INTER_LINEAR))
    # a tall picture pads left and right: 300×451 at 320 → r = 320/451, 213×320, dw = 53.5 → left 53
    assert LetterBox(320, 320).geometry(300, 451)[1:] == (213, 320, 53, 0)
    assert lb.draft_size(600, 400) == (600, 400)  # the full picture is decoded, as Ultralytics does


def test_end2end_layout(cli, tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    X1, Y1, X2, Y2 = 150 * R, 60 * R + TOP, 450 * R, 300 * R + TOP
    rows[0, 0] = [X1, Y1, X2, Y2, 0.8, 2]
    rows[0, 1] = [0, TOP, 30 * R, 30 * R + TOP, 0.6, 0]
    meta = ultra_meta("detect", NAMES3)
    meta["args"] = str({"batch": 1, "nms": True})
    f = const_graph(tmp_path / "yolo11n-nms.onnx", {"output0": rows}, meta)
    res, (rec,) = run_detect(cli, COFFEE, "--model", f)
    assert res.exit_code == 0, res.stderr
    assert boxes_of(rec) == [("car", [150.0, 60.0, 450.0, 300.0], 0.8), ("person", [0.0, 0.0, 30.0, 30.0], 0.6)]
    _, (rec,) = run_detect(cli, COFFEE, "--model", f, "--classes", "person")
    assert [d["label"] for d in rec["detections"]] == ["person"]


def test_pose_keypoints(cli, tmp_path):
    kpt = np.zeros((17, 3), np.float32)
    kpt[:, 0] = np.arange(17) * 15 * R + 60 * R  # picture x = 60, 75, ...
    kpt[:, 1] = 100 * R + TOP  # picture y = 100
    kpt[:, 2] = 0.9
    kpt[3, 2] = 0.1
    out = np.zeros((1, 4 + 1 + 51, 2), np.float32)
    out[0, :4, 0] = cxcywh(50, 50, 400, 300)
    out[0, 4, 0] = 0.95
    out[0, 5:, 0] = kpt.ravel()
    out[0, 4, 1] = 0.05
    f = const_graph(tmp_path / "yolo11n-pose.onnx", {"output0": out},
                    ultra_meta("pose", {0: "person"}, kpt_shape=[17, 3]))
    save = tmp_path / "drawn"
    res, (rec,) = run_detect(cli, COFFEE, "--model", f, "--save", save)
    assert res.exit_code == 0, res.stderr
    (det,) = rec["detections"]
    assert det["box"] == [50.0, 50.0, 400.0, 300.0] and det["label"] == "person"
    assert len(det["keypoints"]) == 17
    np.testing.assert_allclose([k[0] for k in det["keypoints"]], 60 + 15 * np.arange(17), atol=0.01)
    assert {k[1] for k in det["keypoints"]} == {100.0}
    assert det["keypoints"][3][2] == pytest.approx(0.1) and det["keypoints"][0][2] == pytest.approx(0.9)
    assert (save / "coffee.jpg").is_file() or any(save.iterdir())


def test_segment_masks_from_known_coefficients(cli, tmp_path):
    """Prototypes: channel 0 all ones, channel 1 +1 on grid columns < 80 and −1 after.
    Object A has coefficients (4, 0, ...): logit 4 everywhere, so its mask is its box's pixels
    exactly (columns ⌈x1⌉ .. ⌈x2⌉−1). Object B has (0, 3, ...): positive where the grid column
    is below 79.5, i.e. input x' < 320, i.e. picture x + 0.5 < 300: columns up to 299."""
    from cvtool.io.masks import rle_decode

    protos = np.zeros((1, 32, 160, 160), np.float32)
    protos[0, 0] = 1.0
    protos[0, 1, :, :80] = 1.0
    protos[0, 1, :, 80:] = -1.0
    out = np.zeros((1, 4 + 1 + 32, 2), np.float32)
    out[0, :4, 0] = cxcywh(50, 50, 200.5, 150.25)
    out[0, 4, 0] = 0.9
    out[0, 5, 0] = 4.0
    out[0, :4, 1] = cxcywh(250, 100, 350, 200)
    out[0, 4, 1] = 0.8
    out[0, 6, 1] = 3.0
    f = const_graph(tmp_path / "yolo11n-seg.onnx", {"output0": out, "output1": protos},
                    ultra_meta("segment", {0: "person"}))
    save = tmp_path / "masks"
    res = cli("segment", COFFEE, "--model", f, "-f", "jsonl", "-q", "--save", save)
    assert res.exit_code == 0, res.stderr
    (rec,) = jsonl(res.stdout)
    assert rec["mode"] == "instance" and rec["count"] == 2
    a, b = rec["instances"]
    assert a["box"] == [50.0, 50.0, 200.5, 150.25] and b["box"] == [250.0, 100.0, 350.0, 200.0]
    want_a = np.zeros((400, 600), bool)
    want_a[50:151, 50:201] = True
    want_b = np.zeros((400, 600), bool)
    want_b[100:200, 250:300] = True
    np.testing.assert_array_equal(rle_decode(a["rle"]), want_a)
    np.testing.assert_array_equal(rle_decode(b["rle"]), want_b)
    assert a["area"] == 101 * 151 and b["area"] == 100 * 50
    assert len(list(save.iterdir())) >= 2


def test_ultralytics_classify_probabilities(cli, tmp_path):
    names = {0: "tabby", 1: "espresso", 2: "rocket"}
    f = const_graph(tmp_path / "yolo11n-cls.onnx", {"output0": np.array([[0.1, 0.7, 0.2]], np.float32)},
                    ultra_meta("classify", names, imgsz=(224, 224)), input_shape=(1, 3, 224, 224))
    res = cli("classify", COFFEE, "--model", f, "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.stderr
    (rec,) = jsonl(res.stdout)
    # the graph ends in a softmax: its probabilities are reported as they are, not softmaxed again
    assert [(t["label"], t["score"]) for t in rec["topk"]] == [("espresso", 0.7), ("rocket", 0.2), ("tabby", 0.1)]


def channel_mean_classifier(path: Path, nhwc: bool = False, meta: dict | None = None,
                            names=("input", "logits")) -> Path:
    """A classifier whose scores are the per-channel means of its input, (B, 3)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    axes = [1, 2] if nhwc else [2, 3]
    shape = [None, 224, 224, 3] if nhwc else [None, 3, 224, 224]
    nodes = [helper.make_node("ReduceMean", [names[0], "axes"], [names[1]], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(names[0], TensorProto.FLOAT,
                                                                         ["batch" if d is None else d for d in shape])],
                              [helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def torchvision_channel_means(path: Path, mean, std) -> np.ndarray:
    """The reference input pipeline (torchvision): Resize(256), CenterCrop(224), ToTensor, Normalize."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean, std)])
    with Image.open(path) as im:
        x = tf(im.convert("RGB"))
    return x.mean(dim=(1, 2)).double().numpy()


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_import_plain_classifier_and_run_by_name(cli, tmp_path, cvtool_home):
    f = channel_mean_classifier(tmp_path / "r50.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    res = cli("models", "import", "my_means", f, "--task", "classify", "--labels", labels, "--resize", "256",
              "--crop", "224", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)))
    assert res.exit_code == 0, res.stderr
    dest = Path(res.stdout.strip())
    assert dest.is_file() and Path(str(dest) + ".json").is_file()
    res = cli("classify", COFFEE, SAMPLES / "cat.jpg", "--model", "my_means", "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.stderr
    for rec, photo in zip(jsonl(res.stdout), (COFFEE, SAMPLES / "cat.jpg")):
        ref = torchvision_channel_means(photo, MEAN, STD)
        want = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
        got = {t["label"]: t["score"] for t in rec["topk"]}
        np.testing.assert_allclose([got["red"], got["green"], got["blue"]], want, atol=5e-3)
        assert rec["model"] == "my_means"
    listed = jsonl(cli("models", "list", "--task", "classify", "-f", "jsonl").stdout)
    assert {"name": "my_means", "task": "classify", "weights": "imported"}.items() <= \
        next(r for r in listed if r["name"] == "my_means").items()
    info = cli("models", "info", "my_means")
    assert info.exit_code == 0, info.stderr
    d = json.loads(info.stdout)
    assert d["task"] == "classify" and d["format"] == "sidecar" and d["num_classes"] == 3
    assert d["input"]["mean"] == list(MEAN) and d["sources"]["labels"] == "my_means.onnx.json"
    again = cli("models", "import", "my_means", f, "--task", "classify", "--labels", labels)
    assert again.exit_code == 2 and "--force" in again.stderr


def test_sidecar_next_to_file_nhwc(cli, tmp_path):
    f = channel_mean_classifier(tmp_path / "tf.onnx", nhwc=True)
    Path(str(f) + ".json").write_text(json.dumps({"task": "classify", "labels": ["r", "g", "b"], "resize": 256,
                                                  "crop": 224, "scale": 1}))
    res = cli("classify", COFFEE, "--model", f, "-f", "jsonl", "-q", "--topk", "3")
    assert res.exit_code == 0, res.stderr
    (rec,) = jsonl(res.stdout)
    ref = torchvision_channel_means(COFFEE, (0, 0, 0), (1 / 255,) * 3)  # 0..255 values, as scale 1 feeds
    got = {t["label"]: t["score"] for t in rec["topk"]}
    want = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
    np.testing.assert_allclose([got["r"], got["g"], got["b"]], want, atol=0.05)


def test_models_info_says_where_facts_came_from(cli, det_file):
    res = cli("models", "info", det_file)
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["format"] == "ultralytics" and d["task"] == "detect" and d["layout"] == "yolo"
    assert d["num_classes"] == 3 and d["labels_head"] == ["person", "bicycle", "car"]
    assert d["input"]["name"] == "images" and d["input"]["shape"] == [1, 3, 640, 640]
    assert d["imgsz"] == {"height": 640, "width": 640} and d["dynamic_size"] is False
    assert d["sources"]["labels"] == "metadata:names" and d["sources"]["imgsz"] == "input shape"
    assert d["preprocess"]["kind"] == "letterbox-center"


def test_dynamic_input_takes_imgsz(cli, tmp_path):
    """A file exported with dynamic=True runs at --imgsz: at 320 the same picture box maps through
    r = 320/600 and top = round((320 − 213)/2 − 0.1) = 53."""
    r, top = 320 / 600, 53
    out = np.zeros((1, 7, 1), np.float32)
    x1, y1, x2, y2 = 150 * r, 60 * r + top, 450 * r, 300 * r + top
    out[0, :4, 0] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    out[0, 4, 0] = 0.9
    f = const_graph(tmp_path / "dyn.onnx", {"output0": out}, ultra_meta("detect", NAMES3),
                    input_shape=("batch", 3, "height", "width"))
    res, (rec,) = run_detect(cli, COFFEE, "--model", f, "--imgsz", "320")
    assert res.exit_code == 0, res.stderr
    np.testing.assert_allclose(rec["detections"][0]["box"], [150, 60, 450, 300], atol=0.01)
    # the fixed-size file refuses another size, naming it
    fixed = const_graph(tmp_path / "fixed.onnx", {"output0": out}, ultra_meta("detect", NAMES3))
    res = cli("detect", COFFEE, "--model", fixed, "--imgsz", "320", "-q")
    assert res.exit_code == 2 and "fixed input of 640x640" in res.stderr


def test_batch_and_bad_picture(cli, det_file, tmp_path):
    """A fixed batch-1 file gets the batch one picture at a time; a broken picture gets its own
    error record and exit code 1, the others their results."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8not a jpeg")
    res = cli("detect", COFFEE, bad, SAMPLES / "cat.jpg", "--model", det_file, "-f", "jsonl", "-q", "--batch", "4")
    assert res.exit_code == 1
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [True, False, True]
    assert recs[0]["count"] == 4 and "broken.jpg" in recs[1]["source"]
    # cat.jpg 451×300 at 640: r = 640/451, so the same input boxes land elsewhere, clipped inside it
    assert all(0 <= d["box"][2] <= 451 and 0 <= d["box"][3] <= 300 for d in recs[2]["detections"])


@pytest.mark.parametrize("case, needle", [
    ("no_metadata", "no cvtool metadata, no Ultralytics metadata and no sidecar no_metadata.onnx.json"),
    ("wrong_classes", "has shape (1, 10, 50); with 3 classes"),
    ("not_onnx", "not a readable ONNX file"),
    ("grey_input", "has shape (1, 1, 28, 28)"),
    ("bad_names", "not a Python literal"),
    ("seg_without_protos", "second output of mask prototypes"),
])
def test_bad_files_refused_in_one_line(cli, tmp_path, case, needle):
    f = tmp_path / f"{case}.onnx"
    if case == "no_metadata":
        const_graph(f, {"output0": detect_output()}, None)
    elif case == "wrong_classes":
        const_graph(f, {"output0": np.zeros((1, 10, 50), np.float32)}, ultra_meta("detect", NAMES3))
    elif case == "not_onnx":
        f.write_bytes(b"this is not a protobuf")
    elif case == "grey_input":
        const_graph(f, {"output0": detect_output()}, ultra_meta("detect", NAMES3), input_shape=(1, 1, 28, 28))
    elif case == "bad_names":
        meta = ultra_meta("detect", NAMES3)
        meta["names"] = "{0: __import__('os').getcwd()}"
        const_graph(f, {"output0": detect_output()}, meta)
    elif case == "seg_without_protos":
        const_graph(f, {"output0": np.zeros((1, 4 + 3 + 32, 6), np.float32)}, ultra_meta("segment", NAMES3))
    cmd = "segment" if case == "seg_without_protos" else "detect"
    res = cli(cmd, COFFEE, "--model", f, "-q")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_import_refuses_shape_that_does_not_fit(cli, tmp_path):
    f = channel_mean_classifier(tmp_path / "three.onnx")
    res = cli("models", "import", "wrong", f, "--task", "classify", "--labels", "imagenet")
    assert res.exit_code == 2
    assert "output 'logits' has shape (batch, 3)" in res.stderr and "1000 classes" in res.stderr
    res = cli("models", "import", "efficientnet_lite0", f, "--task", "classify", "--labels", "imagenet")
    assert res.exit_code == 2 and "registered model" in res.stderr


def test_real_process_pipe(tmp_path, det_file):
    """Through a real process (stdout a pipe): JSON Lines, nothing else on stdout."""
    from conftest import run_cvtool

    p = run_cvtool("detect", COFFEE, "--model", det_file, "-q")
    assert p.returncode == 0, p.stderr
    (rec,) = jsonl(p.stdout)
    assert rec["count"] == 4 and rec["backend"] == "onnxruntime"


@pytest.mark.parametrize("seed, iou, limit", [(0, 0.5, None), (1, 0.7, None), (2, 0.3, 50), (3, 0.6, 7)])
def test_nms_matches_torchvision(seed, iou, limit):
    """cvtool's blocked NMS keeps what torchvision's batched_nms / nms keep, in the same order,
    on crowded random boxes (several blocks, many overlaps, 5 classes)."""
    import torch
    from torchvision.ops import batched_nms
    from torchvision.ops import nms as tv_nms

    from cvtool.tasks.detect import nms

    rng = np.random.default_rng(seed)
    n = 700
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (n, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    cls = rng.integers(0, 5, n)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    want = batched_nms(tb, ts, torch.from_numpy(cls), iou).numpy()
    got = nms(boxes, scores, iou, limit=limit, classes=cls)
    np.testing.assert_array_equal(got, want[:limit])
    want = tv_nms(tb, ts, iou).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, iou, limit=limit), want[:limit])


def _example(name: str):
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_real_weights_in_ultralytics_layout_match_bundled_detector(cli, tmp_path):
    """The bundled SSD's own weights written in Ultralytics' layout (docs/examples/ssd_as_yolo_onnx.py).
    On a square photo the letterbox adds no padding, so the network sees what the bundled pipeline
    feeds it; the reference is the bundled path (NMS inside its ONNX graph, boxes from normalised
    corners): the same objects, boxes and scores."""
    f = _example("ssd_as_yolo_onnx").build(str(tmp_path / "ssd_yolo.onnx"))
    photo = SAMPLES / "astronaut.jpg"  # 512×512
    _, (ours,) = run_detect(cli, photo, "--model", f, "--conf", "0.3")
    _, (ref,) = run_detect(cli, photo, "--conf", "0.3")
    assert ours["count"] == ref["count"] >= 1
    for a, b in zip(ours["detections"], ref["detections"]):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=2e-4)
        np.testing.assert_allclose(a["box"], b["box"], atol=0.05)


def test_plain_classifier_matches_bundled_pipeline(cli, tmp_path):
    """The bundled EfficientNet-Lite0 exported bare (float NCHW, no normalisation, no metadata; as
    timm/torchvision users export) and imported with its mean/std ((x - 127) / 128) gives the
    bundled model's answers. The import describes a torchvision-style input (antialiased resize),
    the bundled model TensorFlow's (bilinear without antialiasing), so the pictures differ by a
    grey level or two, which moves the close cat classes by up to 0.04 (measured 0.036): the same
    five labels, scores within 0.05."""
    f = _example("plain_onnx_classifier")
    path = tmp_path / "lite0_plain.onnx"
    f.main(str(path))
    mean, std = ",".join([str(127 / 255)] * 3), ",".join([str(128 / 255)] * 3)
    res = cli("models", "import", "lite0_plain", path, "--task", "classify", "--labels", "imagenet",
              "--resize", "256", "--crop", "224", "--mean", mean, "--std", std)
    assert res.exit_code == 0, res.stderr
    photos = [SAMPLES / "cat.jpg", SAMPLES / "coffee.jpg"]
    ours = jsonl(cli("classify", *photos, "--model", "lite0_plain", "-f", "jsonl", "-q").stdout)
    ref = jsonl(cli("classify", *photos, "-f", "jsonl", "-q").stdout)
    for a, b in zip(ours, ref):
        scores = {t["label"]: t["score"] for t in a["topk"]}
        assert set(scores) == {t["label"] for t in b["topk"]}
        for t in b["topk"]:
            assert abs(scores[t["label"]] - t["score"]) < 0.05, (a["topk"], b["topk"])


def test_import_plain_detector_with_coco_names(cli, tmp_path):
    """A YOLO-layout detector without metadata (80 classes): `--labels coco` means the 80 names in
    YOLO order, so class 2 is car and class 79 toothbrush."""
    out = np.zeros((1, 84, 3), np.float32)
    out[0, :4, 0] = cxcywh(150, 60, 450, 300)
    out[0, 4 + 2, 0] = 0.9
    out[0, :4, 1] = cxcywh(10, 20, 110, 120)
    out[0, 4 + 79, 1] = 0.6
    f = const_graph(tmp_path / "det80.onnx", {"output0": out}, None)
    res = cli("models", "import", "det80", f, "--task", "detect", "--labels", "coco")
    assert res.exit_code == 0, res.stderr
    res, (rec,) = run_detect(cli, COFFEE, "--model", "det80")
    assert res.exit_code == 0, res.stderr
    assert boxes_of(rec) == [("car", [150.0, 60.0, 450.0, 300.0], 0.9), ("toothbrush", [10.0, 20.0, 110.0, 120.0], 0.6)]
    assert [d["class_id"] for d in rec["detections"]] == [2, 79]


def test_models_bench_runs_a_foreign_file(cli, det_file):
    res = cli("models", "bench", det_file, "--batches", "1,2", "--seconds", "0.05", "-f", "jsonl")
    assert res.exit_code == 0, res.stderr
    (row,) = jsonl(res.stdout)
    assert row["backend"] == "onnxruntime" and row["throughput_img_s"] > 0 and "error" not in row


def test_ultralytics_classify_preprocessing_matches_its_transforms(cli, tmp_path):
    """Ultralytics' classify_transforms for an exported file: torchvision Resize(imgsz) on the
    shorter side, CenterCrop(imgsz), ToTensor (/255), no mean/std; the graph's outputs are taken
    as probabilities. With per-channel means as "probabilities", cvtool must report those means."""
    f = channel_mean_classifier(tmp_path / "cls.onnx", names=("images", "output0"),
                                meta=ultra_meta("classify", {0: "r", 1: "g", 2: "b"}, imgsz=(224, 224)))
    res = cli("classify", SAMPLES / "cat.jpg", COFFEE, "--model", f, "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.stderr
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    for rec, photo in zip(jsonl(res.stdout), (SAMPLES / "cat.jpg", COFFEE)):
        with Image.open(photo) as im:
            want = tf(im.convert("RGB")).mean(dim=(1, 2)).numpy()
        got = {t["label"]: t["score"] for t in rec["topk"]}
        np.testing.assert_allclose([got["r"], got["g"], got["b"]], want, atol=2e-3)


def test_pose_save_draws_keypoints(cli, tmp_path):
    """--save draws each visible keypoint: a white dot where the photo is dark, and nothing far
    away from every keypoint and box."""
    from cvtool.io.decode import decode_image

    out = np.zeros((1, 4 + 1 + 51, 1), np.float32)
    out[0, :4, 0] = cxcywh(100, 100, 300, 300)
    out[0, 4, 0] = 0.9
    kpt = np.zeros((17, 3), np.float32)
    kpt[:, 0] = (120 + 10 * np.arange(17)) * R
    kpt[:, 1] = 300 * R + TOP  # row 300 of coffee.jpg: the dark wood under the cup
    kpt[:, 2] = 0.9
    out[0, 5:, 0] = kpt.ravel()
    f = const_graph(tmp_path / "pose.onnx", {"output0": out}, ultra_meta("pose", {0: "person"}, kpt_shape=[17, 3]))
    save = tmp_path / "drawn"
    res = cli("detect", COFFEE, "--model", f, "--save", save, "-q", "-f", "jsonl")
    assert res.exit_code == 0, res.stderr
    (saved,) = list(save.iterdir())
    drawn = decode_image(str(saved)).rgb.astype(int)
    photo = decode_image(str(COFFEE)).rgb.astype(int)
    for x in 120 + 10 * np.arange(17):
        assert photo[300, x].sum() < 650 and drawn[300, x].sum() > 700  # a white dot on each keypoint
    assert np.abs(drawn[350:, 450:] - photo[350:, 450:]).mean() < 3  # far away: only JPEG noise


def test_export_validate_points_to_models_info(cli, det_file):
    res = cli("export", "--validate", det_file)
    assert res.exit_code == 1 and "models info" in res.stderr and "Traceback" not in res.stderr


def test_coco_json_and_eval_use_coco_category_ids(cli, det_file, tmp_path):
    """A YOLO file's class ids (person 0, bicycle 1, car 2) become COCO category ids by name
    (1, 2, 3) in --coco-json and --eval. Hand-made ground truth with the boxes the constant
    file emits: every detection matches, so mAP is 1 only if the ids were mapped."""
    pytest.importorskip("pycocotools")
    res = cli("detect", COFFEE, "--model", det_file, "--coco-json", tmp_path / "res.json", "-q", "-f", "jsonl")
    assert res.exit_code == 0, res.stderr
    results = json.loads((tmp_path / "res.json").read_text())
    assert [r["category_id"] for r in results] == [1, 3, 3, 2]
    boxes = [(1, [150, 60, 300, 240]), (3, [151, 61, 300, 240]), (3, [0, 0, 84.38, 88.12]), (2, [500, 320, 60, 60])]
    gt = {"images": [{"id": 7, "file_name": "coffee.jpg", "width": 600, "height": 400}],
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}],
          "annotations": [{"id": k + 1, "image_id": 7, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                          for k, (c, b) in enumerate(boxes)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = cli("detect", COFFEE, "--model", det_file, "--eval", tmp_path / "gt.json", "--conf", "0.3", "-q",
              "-f", "jsonl")
    assert res.exit_code == 0, res.stderr
    assert "all (mAP)" in res.stderr and "1.000" in res.stderr.split("all (mAP)")[1].splitlines()[0]


def test_rectangular_input(cli, tmp_path):
    """imgsz [480, 640] (height, width), as `yolo export imgsz=480,640` writes: coffee.jpg 600×400 →
    r = min(480/400, 640/600) = 16/15, 640×427, dh = 53/2 → top = round(26.4) = 26, left 0."""
    out = np.zeros((1, 7, 1), np.float32)
    x1, y1, x2, y2 = 150 * R, 60 * R + 26, 450 * R, 300 * R + 26
    out[0, :4, 0] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    out[0, 4, 0] = 0.9
    f = const_graph(tmp_path / "rect.onnx", {"output0": out}, ultra_meta("detect", NAMES3, imgsz=(480, 640)),
                    input_shape=(1, 3, 480, 640))
    res, (rec,) = run_detect(cli, COFFEE, "--model", f)
    assert res.exit_code == 0, res.stderr
    assert boxes_of(rec) == [("person", [150.0, 60.0, 450.0, 300.0], 0.9)]


@pytest.fixture(scope="module")
def ssd_export(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    out = tmp_path_factory.mktemp("ssd") / "x.onnx"
    res = CliRunner().invoke(app, ["export", "ssd_mobilenet_v2_coco", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    return out


def test_import_of_cvtools_own_export_copies_it_as_it_is(cli, ssd_export, cvtool_home):
    res = cli("models", "import", "my_ssd", ssd_export)
    assert res.exit_code == 0, res.stderr
    dest = Path(res.stdout.strip())
    assert dest.read_bytes() == ssd_export.read_bytes() and not Path(str(dest) + ".json").exists()
    res = cli("detect", SAMPLES / "cat.jpg", "--model", "my_ssd", "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.stderr
    want = cli("detect", SAMPLES / "cat.jpg", "--model", ssd_export, "-f", "jsonl", "-q")
    got, ref = jsonl(res.stdout)[0], jsonl(want.stdout)[0]
    assert got["model"] == "my_ssd" and got["detections"] == ref["detections"]


def test_import_of_cvtools_own_export_refuses_options(cli, ssd_export, cvtool_home):
    res = cli("models", "import", "my_ssd2", ssd_export, "--task", "detect")
    assert res.exit_code == 2 and "exported by cvtool and describes itself" in res.stderr
