"""Every subcommand once, through the real CLI (``python -m cvtool`` as a process), on the sample
photos and the bundled models (tiny stand-ins built here where no weights ship). `.ci/deps` runs
this file under the lowest versions pyproject.toml allows, so each test touches the dependency
APIs its command leans on, and checks something that does not come from cvtool's own code: the
top label of the cat photo is a cat class, the detector finds a cat (COCO id 17) in it, the
saved files have the photo's size, pycocotools scores a perfect result 1.0, and so on.
The thorough tests are in the other files; this one is meant to be fast (under two minutes)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import SAMPLES, jsonl, run_cvtool

CAT, COFFEE = SAMPLES / "cat.jpg", SAMPLES / "coffee.jpg"
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}
COCO_CAT, COCO_CUP = 17, 47


def _ok(proc, code: int = 0):
    assert proc.returncode == code, proc.stderr[-3000:]
    return jsonl(proc.stdout)


def _by_name(recs):
    return {r["source"].rsplit("/", 1)[1]: r for r in recs}


def _size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def detections(tmp_path_factory):
    """detect on the cat and coffee photos (the SSD converted from the packaged TF graph, then
    exported to ONNX), also written as JSONL for `report`."""
    out = tmp_path_factory.mktemp("smoke-detect") / "detect.jsonl"
    recs = _ok(run_cvtool("detect", CAT, COFFEE, "--output", out, "-q"))  # --output: stdout stays empty
    return _by_name(jsonl(out.read_text())), out, recs


def _commands():
    """Every command path of the app: ("classify",), ("models", "list"), ..."""
    import typer.main

    from cvtool.cli.app import app

    def walk(cmd, path):
        yield path
        for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):  # a group
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def test_help_of_every_command():
    """typer renders the help through click and rich: the first thing to break when they drift."""
    paths = _commands()
    assert {("classify",), ("detect",), ("models", "list"), ("doctor",)} <= set(paths)
    for path in paths:
        proc = run_cvtool(*path, "--help", env={"COLUMNS": "100"})
        assert proc.returncode == 0 and "Usage:" in proc.stdout, (path, proc.stderr[-2000:])


def test_classify(tmp_path):
    recs = _by_name(_ok(run_cvtool("classify", CAT, COFFEE, "--topk", "3")))
    cat, coffee = recs["cat.jpg"], recs["coffee.jpg"]
    assert cat["label"] in CAT_CLASSES and cat["score"] > 0.3, cat
    assert coffee["label"] in COFFEE_CLASSES and coffee["score"] > 0.5, coffee
    assert cat["backend"] == "onnxruntime" and cat["provider"] == "CPUExecutionProvider"
    assert cat["image_size"] == dict(zip(("width", "height"), _size(CAT)))


def test_detect_and_coco_eval(detections, tmp_path):
    recs, _, stdout = detections
    assert stdout == []
    cat = [d for d in recs["cat.jpg"]["detections"] if d["class_id"] == COCO_CAT and d["score"] > 0.5]
    assert cat and cat[0]["label"] == "cat", recs["cat.jpg"]
    assert any(d["class_id"] == COCO_CUP and d["score"] > 0.5 for d in recs["coffee.jpg"]["detections"])
    w, h = _size(CAT)
    x1, y1, x2, y2 = cat[0]["box"]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1) * (y2 - y1) > 0.3 * w * h  # the cat fills the photo
    # pycocotools: ground truth made of these very boxes scores mAP 1.0.
    images, anns = [], []
    for i, name in enumerate(sorted(recs), 1):
        w, h = _size(SAMPLES / name)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for d in recs[name]["detections"]:
            x1, y1, x2, y2 = d["box"]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": d["class_id"], "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    cats = sorted({a["category_id"] for a in anns})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": c, "name": str(c)} for c in cats]}))
    proc = run_cvtool("detect", CAT, COFFEE, "--eval", gt, "--conf", "0.3", "-q")
    _ok(proc)
    assert "all (mAP)" in proc.stderr and "1.000" in proc.stderr, proc.stderr


def test_segment(tmp_path):
    """LR-ASPP (torchvision's architecture, random weights as a state_dict), exported to ONNX."""
    import torch

    from conftest import random_lraspp

    torch.save(random_lraspp().state_dict(), tmp_path / "lraspp.pth")
    rec, = _ok(run_cvtool("segment", CAT, "--model", "lraspp_mobilenet_v3_large", "--weights",
                          tmp_path / "lraspp.pth", "--save", tmp_path / "out"))
    assert rec["ok"] and rec["backend"] == "onnxruntime", rec
    from PIL import Image

    masks = [p for p in (tmp_path / "out").rglob("*.png") if "overlay" not in p.name]
    assert masks, list((tmp_path / "out").rglob("*"))
    with Image.open(masks[0]) as im:
        mask = np.asarray(im)
    assert mask.shape == _size(CAT)[::-1] and mask.max() <= 20 and len(np.unique(mask)) > 1


def test_depth(tmp_path):
    """A tiny Depth Anything built with transformers (save_pretrained), exported to ONNX."""
    from test_depth import make_tiny_depth_anything

    tiny = make_tiny_depth_anything(tmp_path / "tiny")
    rec, = _ok(run_cvtool("depth", CAT, "--weights", tiny, "--save", tmp_path / "out", "--npy"))
    assert rec["ok"] and rec["backend"] == "onnxruntime", rec
    arr = np.load(next((tmp_path / "out").rglob("*.npy")))
    assert arr.shape == _size(CAT)[::-1] and np.isfinite(arr).all() and arr.std() > 0


def test_caption_labels_and_tiny_blip(tmp_path):
    rec, = _ok(run_cvtool("caption", CAT, "--model", "labels"))
    assert rec["kind"] == "labels" and "cat" in rec["caption"], rec
    # transformers' BLIP (tiny, random: the words are gibberish), through cvtool's own greedy loop.
    from test_caption import make_tiny_blip

    blip = make_tiny_blip(tmp_path / "blip")
    rec, = _ok(run_cvtool("caption", CAT, "--model", "blip_base", "--weights", blip, "--max-tokens", "5"))
    assert rec["kind"] == "neural" and rec["ok"] and isinstance(rec["caption"], str) and rec["tokens"], rec


def test_visualize(tmp_path):
    rec, = _ok(run_cvtool("visualize", "gradcam", CAT, "--save", tmp_path))
    assert rec["target"]["label"] in CAT_CLASSES and rec["target"]["class_id"] == rec["prediction"]["class_id"]
    assert np.load(rec["saved"]["array"]).max() > 0
    # The cat's face (eyes ~(175, 115), (320, 135), nose ~(265, 240), marked by hand).
    assert 120 <= rec["peak"]["x"] <= 350 and 70 <= rec["peak"]["y"] <= 290, rec["peak"]


def test_attack(tmp_path):
    rec, = _ok(run_cvtool("attack", "fgsm", CAT, "--eps", "4/255", "--resolution", "network", "--save", tmp_path))
    assert rec["clean"]["label"] in CAT_CLASSES and rec["success_8bit"], rec
    import cv2

    adv = cv2.imread(rec["saved"]["adv"])
    assert adv.shape == (224, 224, 3) and rec["norms"]["linf_255"] == 4


def test_train_digits(tmp_path):
    """scikit-learn's 8x8 digits, a small CNN, one epoch; the checkpoint loads with weights_only."""
    rec, = _ok(run_cvtool("train", "digits", "--model", "cnn", "--epochs", "2", "--runs-dir", tmp_path,
                          "--name", "d", "--threads", "1"))
    assert rec["test_acc"] > 0.5, rec  # chance is 0.1
    import torch

    ckpt = torch.load(tmp_path / "d" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["cvtool"]["labels"] == [str(i) for i in range(10)]


def test_export_simplified_and_run_in_plain_onnxruntime(tmp_path):
    out = tmp_path / "lite0.onnx"
    proc = run_cvtool("export", "efficientnet_lite0", "-o", out, "--simplify")
    rep = _ok(proc)[-1]
    assert rep["parity"]["ok"] and rep["simplified"], rep
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(out)))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    from cvtool.io.decode import decode_image
    from cvtool.models.registry import get

    x = get("efficientnet_lite0").weights.preprocess(decode_image(str(CAT)).rgb)[None]
    probs = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.uint8)})[0][0]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    labels = json.loads(meta["cvtool.labels"])
    assert labels[int(np.argmax(probs))] in CAT_CLASSES


def test_models():
    listed = {r["name"]: r for r in _ok(run_cvtool("models", "list", "-f", "jsonl"))}
    assert listed["efficientnet_lite0"]["weights"] == "package" and "ssd_mobilenet_v2_coco" in listed
    info = json.loads(run_cvtool("models", "info", "efficientnet_lite0").stdout)
    assert info["weights"]["in_package"] and info["weights"]["license"] == "Apache-2.0"


def test_doctor(detections):
    """Every check passes on this install, the bundled models included (cached by the runs above)."""
    proc = run_cvtool("doctor", "-f", "json", "-q")
    rep = json.loads(proc.stdout)
    assert proc.returncode == 0 and rep["ok"], [c for c in rep["checks"] if not c["ok"]]
    checks = {c["name"]: c for c in rep["checks"]}
    assert {"opencv", "onnxruntime", "ssd_mobilenet_v2_coco run onnxruntime"} <= set(checks)


def test_report(detections, tmp_path):
    recs, records_file, _ = detections
    page = tmp_path / "page.html"
    _ok(run_cvtool("report", records_file, "-o", page, "-q"))
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert "cat.jpg" in html and "coffee.jpg" in html


def test_classify_on_ray_writes_parquet(tmp_path):
    if importlib.util.find_spec("ray") is None:  # installed but broken is a failure, not a skip
        pytest.skip("Ray is not installed (pip install '.[ray]')")
    import pyarrow.parquet as pq
    import ray.data  # noqa: F401

    _ok(run_cvtool("classify", CAT, COFFEE, "--engine", "ray", "--output-dir", tmp_path / "out",
                   "--output-format", "parquet", "--workers", "1"))
    rows = [r for p in sorted((tmp_path / "out").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    got = {r["source"].rsplit("/", 1)[1]: r["label"] for r in rows}
    assert got.keys() == {"cat.jpg", "coffee.jpg"} and got["cat.jpg"] in CAT_CLASSES, got
