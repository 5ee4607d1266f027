"""`cvtool detect` on the ported SSD-MobileNet-v2 and real photos; sinks, NMS, export, mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def ssd():
    from cvtool.models.loader import load

    return load("ssd_mobilenet_v2_coco")


def _by_name(recs):
    return {r["source"].rsplit("/", 1)[1]: r for r in recs}


def _labels(rec, conf=0.5):
    return {d["label"] for d in rec["detections"] if d["score"] >= conf}


def test_photos_yield_the_expected_objects(samples):
    proc = run_cvtool("detect", samples)
    assert proc.returncode == 0, proc.stderr
    recs = _by_name(jsonl(proc.stdout))
    assert "cup" in _labels(recs["coffee.jpg"]) and "cat" in _labels(recs["cat.jpg"])
    assert "person" in _labels(recs["astronaut.jpg"])
    r = recs["coffee.jpg"]
    assert r["backend"] == "onnxruntime" and r["task"] == "detect" and r["model"] == "ssd_mobilenet_v2_coco"
    w, h = r["image_size"]["width"], r["image_size"]["height"]
    cup = next(d for d in r["detections"] if d["label"] == "cup")
    x1, y1, x2, y2 = cup["box"]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and cup["class_id"] == 47
    assert r["count"] == len(r["detections"]) and all(d["score"] >= 0.3 for d in r["detections"])
    scores = [d["score"] for d in r["detections"]]
    assert scores == sorted(scores, reverse=True)


def test_torch_and_onnx_give_the_same_detections(cli, samples):
    a = jsonl(cli("detect", samples, "--conf", "0.1").stdout)
    b = jsonl(cli("detect", samples, "--conf", "0.1", "--backend", "torch").stdout)
    assert [r["backend"] for r in a][:1] == ["onnxruntime"] and b[0]["backend"] == "torch"
    for ra, rb in zip(a, b):
        assert [d["class_id"] for d in ra["detections"]] == [d["class_id"] for d in rb["detections"]]
        for da, db in zip(ra["detections"], rb["detections"]):
            assert abs(da["score"] - db["score"]) < 1e-3
            assert np.abs(np.array(da["box"]) - np.array(db["box"])).max() < 0.5


def test_filters_classes_max_det_conf_and_agnostic_nms(cli, samples):
    coffee = samples / "coffee.jpg"
    base = jsonl(cli("detect", coffee, "--conf", "0.2").stdout)[0]
    assert {"cup", "bowl"} <= _labels(base, 0.2)
    only = jsonl(cli("detect", coffee, "--conf", "0.2", "--classes", "Cup,51").stdout)[0]
    assert {d["label"] for d in only["detections"]} <= {"cup", "bowl"} and only["count"] >= 2
    one = jsonl(cli("detect", coffee, "--conf", "0.2", "--max-det", "1").stdout)[0]
    assert one["count"] == 1 and one["detections"][0]["label"] == "cup"
    strict = jsonl(cli("detect", coffee, "--conf", "0.9").stdout)[0]
    assert strict["count"] < base["count"] and all(d["score"] >= 0.9 for d in strict["detections"])
    merged = jsonl(cli("detect", coffee, "--conf", "0.2", "--agnostic-nms", "--iou", "0.5").stdout)[0]
    labels = [d["label"] for d in merged["detections"]]
    assert "cup" in labels and "bowl" not in labels  # the bowl box is the cup's box again
    res = cli("detect", coffee, "--classes", "persn")
    assert res.exit_code == 2 and "did you mean person" in res.stderr


def test_iou_threshold_reaches_the_graph(cli, samples):
    loose = jsonl(cli("detect", samples / "coffee.jpg", "--conf", "0.05", "--iou", "0.95").stdout)[0]
    tight = jsonl(cli("detect", samples / "coffee.jpg", "--conf", "0.05", "--iou", "0.2").stdout)[0]
    assert loose["count"] > tight["count"]


def test_coco_json_yolo_txt_crops_and_save(cli, samples, tmp_path):
    res = cli("detect", samples / "coffee.jpg", samples / "cat.jpg", "--coco-json", tmp_path / "res.json",
              "--yolo-txt", tmp_path / "yolo", "--save-crops", tmp_path / "crops", "--save", tmp_path / "ann", "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    results = json.loads((tmp_path / "res.json").read_text())
    assert len(results) == sum(r["count"] for r in recs)
    cup = next(r for r in results if r["category_id"] == 47)
    x, y, w, h = cup["bbox"]
    assert w > 0 and h > 0 and cup["image_id"] == recs[0]["image_id"] == 1
    lines = (tmp_path / "yolo" / "coffee.txt").read_text().splitlines()
    assert len(lines) == recs[0]["count"]
    cls, cx, cy, bw, bh, score = lines[0].split()
    assert cls == "41" and all(0 < float(v) <= 1 for v in (cx, cy, bw, bh))  # cup is COCO index 41 of 80
    assert (tmp_path / "crops" / "cup" / "coffee_0.jpg").is_file() and recs[1]["crops"]
    import cv2

    crop = cv2.imread(str(tmp_path / "crops" / "cat" / "cat_0.jpg"))
    bx = recs[1]["detections"][0]["box"]
    assert abs(crop.shape[1] - (round(bx[2]) - round(bx[0]))) <= 1
    saved = cv2.imread(str(tmp_path / "ann" / "coffee.jpg"))
    orig = cv2.imread(str(samples / "coffee.jpg"))
    assert saved.shape == orig.shape and np.abs(saved.astype(int) - orig.astype(int)).sum() > 0


def test_video_in_annotated_video_out(cli, samples, tmp_path):
    import cv2

    size = (320, 240)
    w = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    pic = cv2.resize(cv2.imread(str(samples / "cat.jpg")), size)
    for _ in range(6):
        w.write(pic)
    w.release()
    res = cli("detect", tmp_path / "clip.mp4", "--save", tmp_path / "out", "-q")
    assert res.exit_code == 0
    recs = jsonl(res.stdout)
    assert [r["frame"] for r in recs] == list(range(6)) and all("cat" in _labels(r) for r in recs)
    saved = recs[0]["saved"]
    assert saved.endswith((".webm", ".mp4"))
    cap = cv2.VideoCapture(saved)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6


def test_bad_inputs_and_options(cli, samples, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    res = cli("detect", samples / "cat.jpg", tmp_path / "empty.jpg", tmp_path / "gone.jpg")
    recs = jsonl(res.stdout)
    assert res.exit_code == 1 and [r["ok"] for r in recs] == [True, False, False]
    assert "detections" not in recs[1] and "empty file" in recs[1]["error"]
    res = cli("detect", samples / "cat.jpg", "--imgsz", "512")
    assert res.exit_code == 2 and "300x300 only" in res.stderr
    res = cli("detect", samples / "cat.jpg", "--model", "efficientnet_lite0")
    assert res.exit_code == 2 and "classify model, not a detect model" in res.stderr


def test_export_has_nms_inside_and_a_dynamic_batch(cli, ssd, samples, tmp_path):
    import onnxruntime as ort

    from cvtool.io.decode import decode_image

    out = tmp_path / "ssd.onnx"
    res = cli("export", "ssd_mobilenet_v2_coco", "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["parity"]["ok"] and rep["parity"]["agreement"] == 1.0
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "NonMaxSuppression" in ops
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "iou_threshold", "score_threshold"]
    x = np.stack([ssd.preprocess(decode_image(str(samples / n)).rgb) for n in ("coffee.jpg", "cat.jpg", "astronaut.jpg")])
    th = {"iou_threshold": np.array([0.6], np.float32), "score_threshold": np.array([0.5], np.float32)}
    three = sess.run(None, {"input": x, **th})[0]
    one = sess.run(None, {"input": x[1:2], **th})[0]
    assert set(three[:, 0].astype(int)) == {0, 1, 2}
    cat3 = three[three[:, 0] == 1][:, 1:]
    assert np.abs(np.sort(cat3, 0) - np.sort(one[:, 1:], 0)).max() < 1e-4
    assert 17 in set(one[:, 6].astype(int)) and (three[:, 5] > 0.5).all()
    res = cli("detect", samples / "coffee.jpg", "--model", out)
    assert "cup" in _labels(jsonl(res.stdout)[0])
    res = cli("export", "ssd_mobilenet_v2_coco", "-o", tmp_path / "b.onnx", "--batch", "2")
    assert res.exit_code == 1 and "dynamic batch only" in res.stderr


def test_coco_eval_perfect_and_shifted(cli, samples, tmp_path):
    pytest.importorskip("pycocotools")
    from PIL import Image

    res = cli("detect", samples, "--conf", "0.3", "-q")
    recs = [r for r in jsonl(res.stdout) if r["count"]]
    images, anns, cats = [], [], {}
    for i, r in enumerate(recs, 1):
        name = r["source"].rsplit("/", 1)[1]
        w, h = Image.open(r["source"]).size
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": d["class_id"],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            cats[d["class_id"]] = d["label"]
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": v} for k, v in cats.items()]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = cli("detect", *[r["source"] for r in recs], "--eval", tmp_path / "gt.json", "--conf", "0.3",
              "--coco-json", tmp_path / "res.json")
    assert res.exit_code == 0, res.stderr
    assert "all (mAP)" in res.stderr and "1.000" in res.stderr
    assert {r["image_id"] for r in json.loads((tmp_path / "res.json").read_text())} <= {im["id"] for im in images}
    from cvtool.tasks.evaluate import coco_map, load_ground_truth

    gt_obj, ids = load_ground_truth(tmp_path / "gt.json")
    results = json.loads((tmp_path / "res.json").read_text())
    assert coco_map(gt_obj, results, list(ids.values()))["map"] == 1.0
    shifted = [dict(r, bbox=[r["bbox"][0] + 0.25 * r["bbox"][2], r["bbox"][1], *r["bbox"][2:]]) for r in results]
    worse = coco_map(gt_obj, shifted, list(ids.values()))
    assert worse["map"] < 0.6 and worse["map50"] >= worse["map"]
    (tmp_path / "bad.json").write_text("{}")
    res = cli("detect", samples / "cat.jpg", "--eval", tmp_path / "bad.json")
    assert res.exit_code == 2 and "not COCO-format ground truth" in res.stderr


def test_letterbox_boxes_map_back_to_picture_pixels():
    """A detector seeing a letterboxed square: normalised boxes scale by the longer side."""
    from cvtool.io.sources import Frame
    from cvtool.models.preprocess import Preprocess
    from cvtool.tasks.detect import Detector

    pre = Preprocess(resize=0, crop=100, mean=(0, 0, 0), std=(1, 1, 1), letterbox=True)
    pic = np.zeros((50, 200, 3), np.uint8)
    pic[10:40, 100:180] = 255
    sq = pre(pic)
    assert sq.shape == (100, 100, 3) and (sq[25:, :] == 114).all() and sq[10, 60].tolist() == [255] * 3

    class M:
        labels = ("__background__", "thing")
        preprocess = pre

    det = Detector(M(), conf=0.1)
    out = det(np.array([[0, 0.5, 0.05, 0.9, 0.2, 0.9, 1]]), [Frame("x", None, (200, 50))])[0]
    assert out["detections"][0]["box"] == [100.0, 10.0, 180.0, 40.0]


def test_torchvision_detector_runs_through_the_same_records(cli, samples, tmp_path):
    """ssdlite320 with random weights in torchvision's native format (no download)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    path = tmp_path / "ssdlite.pth"
    torch.save(net.state_dict(), path)
    res = cli("detect", samples / "cat.jpg", samples / "astronaut.jpg", "--model", "ssdlite320_mobilenet_v3_large",
              "--weights", path, "--conf", "0.0", "--max-det", "5")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert all(r["backend"] == "torch" and r["count"] == 5 for r in recs)
    for r in recs:
        w, h = r["image_size"]["width"], r["image_size"]["height"]
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h and 1 <= d["class_id"] <= 90
    res = cli("export", "ssdlite320_mobilenet_v3_large", "--weights", path, "-o", tmp_path / "x.onnx")
    assert res.exit_code == 1 and "cannot be exported" in res.stderr
    res = cli("detect", samples / "cat.jpg", "--model", "ssdlite320_mobilenet_v3_large", "--weights", path,
              "--backend", "onnx")
    assert res.exit_code == 2 and "runs on torch only" in res.stderr
    res = cli("detect", samples / "cat.jpg", "--model", "ssdlite320_mobilenet_v3_large", "--weights", path,
              "--imgsz", "256", "--conf", "0.0", "--max-det", "2")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["count"] == 2


def test_registry_lists_the_coco_detectors():
    from cvtool.models import registry

    names = {s.name for s in registry.list_models("detect")}
    assert names == {"ssd_mobilenet_v2_coco", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                     "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
                     "ssd300_vgg16"}


def test_same_file_names_from_two_folders_do_not_clash(cli, samples, tmp_path):
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(samples / "cat.jpg", other / "cat.jpg")
    shutil.copy(samples / "coffee.jpg", other / "000000000002.jpg")
    res = cli("detect", samples / "cat.jpg", other / "cat.jpg", other / "000000000002.jpg",
              "--yolo-txt", tmp_path / "y", "--save-crops", tmp_path / "c", "--coco-json", tmp_path / "r.json", "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [r["yolo_txt"].rsplit("/", 1)[1] for r in recs] == ["cat.txt", "cat_1.txt", "000000000002.txt"]
    assert len({r["image_id"] for r in recs}) == 3
    assert (tmp_path / "c" / "cat" / "cat_1_0.jpg").is_file()


def test_import_converts_the_original_graph(cli, cvtool_home):
    from cvtool.models.zoo.ssd_spec import packaged_pb

    res = cli("models", "import", "ssd_mobilenet_v2_coco", packaged_pb())
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip().endswith("ssd_mobilenet_v2_coco.safetensors")


def test_export_refuses_torch_only_models_before_fetching_weights(cli, tmp_path):
    res = cli("export", "fcos_resnet50_fpn", "-o", tmp_path / "f.onnx")
    assert res.exit_code == 1 and "cannot be exported" in res.stderr and "weights" not in res.stderr.split(":")[1]
