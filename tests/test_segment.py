"""`cvtool segment`: torchvision segmenters built locally in their native format (no download),
driven end to end through the real loading, export and inference code on the sample photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

SEM = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory):
    """torchvision's LR-ASPP architecture with random weights, saved as a plain state_dict. The
    classifier's 1x1 convolutions are redrawn (std 1, no bias) so that the masks hold several
    classes instead of one everywhere, which makes the checks below mean something."""
    import torch

    from conftest import random_lraspp

    net = random_lraspp()
    path = tmp_path_factory.mktemp("w") / "lraspp.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def semantic_run(lraspp, samples, tmp_path_factory):
    """One ONNX Runtime run over three photos with --save (shared by several tests)."""
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    out = tmp_path_factory.mktemp("seg") / "save"
    photos = [samples / n for n in ("astronaut.jpg", "cat.jpg", "coffee.jpg")]
    res = CliRunner().invoke(app, ["segment", "--model", SEM, "--weights", str(lraspp), *map(str, photos),
                                   "--save", str(out)], catch_exceptions=False)
    return res, out, photos


def _read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def test_semantic_records_and_saved_files(semantic_run):
    import cv2

    res, out, photos = semantic_run
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert len(recs) == 3
    for rec, photo in zip(recs, photos):
        w, h = rec["image_size"]["width"], rec["image_size"]["height"]
        assert rec["ok"] and rec["task"] == "segment" and rec["mode"] == "semantic"
        assert rec["backend"] == "onnxruntime" and rec["model"] == SEM
        assert rec["mask_size"] == {"width": w, "height": h}
        fr = [c["fraction"] for c in rec["classes"]]
        assert fr == sorted(fr, reverse=True) and abs(sum(fr) - 1) < 1e-4 and all(f > 0 for f in fr)
        assert sum(c["pixels"] for c in rec["classes"]) == w * h
        mode, mask = _read_png(rec["mask_png"])
        assert mode == "P" and mask.shape == (h, w)  # the whole picture: no crop
        counts = np.bincount(mask.ravel(), minlength=21)
        assert {c["class_id"]: c["pixels"] for c in rec["classes"]} == {k: int(v) for k, v in enumerate(counts) if v}
        overlay = cv2.imread(rec["saved"])
        assert rec["saved"].endswith(photo.suffix) and overlay.shape == (h, w, 3)
    assert len({len(r["classes"]) for r in recs}) >= 1 and max(len(r["classes"]) for r in recs) >= 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p.stem}{s}" for p in photos for s in ("_mask.png", "_overlay.jpg"))


def test_torch_backend_gives_the_same_masks(semantic_run, lraspp, cli, tmp_path):
    res, out, photos = semantic_run
    res_t = cli("segment", "--model", SEM, "--weights", lraspp, *photos, "--backend", "torch",
                "--save", tmp_path / "out", "-q")
    assert res_t.exit_code == 0, res_t.stderr
    for a, b in zip(jsonl(res.stdout), jsonl(res_t.stdout)):
        assert b["backend"] == "torch" and a["mask_size"] == b["mask_size"]
        ma, mb = _read_png(a["mask_png"])[1], _read_png(b["mask_png"])[1]
        assert (ma == mb).mean() > 0.999


def test_palette_png_round_trip_and_voc_palette(tmp_path):
    from cvtool.io.masks import encode_index_png, read_index_png, voc_palette

    pal = voc_palette()
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    rng = np.random.default_rng(0)
    index = rng.integers(0, 21, (37, 53)).astype(np.uint8)
    index[:3] = 255
    (tmp_path / "m.png").write_bytes(encode_index_png(index))
    assert (read_index_png(tmp_path / "m.png") == index).all()
    from PIL import Image

    Image.fromarray(pal[index]).save(tmp_path / "rgb.png")  # a colour mask maps back through the palette
    assert (read_index_png(tmp_path / "rgb.png") == index).all()


def test_rle_matches_pycocotools():
    from cvtool.io.masks import rle_counts, rle_decode, rle_encode

    rng = np.random.default_rng(1)
    masks = [np.zeros((5, 7), bool), np.ones((4, 3), bool), rng.random((61, 47)) > 0.5]
    blob = np.zeros((300, 451), bool)
    blob[40:250, 100:400] = True
    blob[100:120, 150:380] = False
    masks.append(blob)
    corner = np.zeros((9, 9), bool)
    corner[0, 0] = True
    masks.append(corner)
    assert rle_counts(corner)[:2] == [0, 1]  # starts with a (zero-length) run of zeros
    for m in masks:
        rle = rle_encode(m)
        assert rle["size"] == list(m.shape) and (rle_decode(rle) == m).all()
    mask_api = pytest.importorskip("pycocotools.mask")
    for m in masks:
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = rle_encode(m)
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == list(ref["size"])
        assert int(mask_api.area(ref)) == int(m.sum())


def test_eval_perfect_and_with_a_known_error(semantic_run, lraspp, cli, tmp_path):
    from cvtool.io.masks import encode_index_png

    res, out, photos = semantic_run
    recs = jsonl(res.stdout)
    gt = tmp_path / "gt"
    gt.mkdir()
    for r in recs[:2]:  # coffee.jpg gets no ground truth
        shutil.copy(r["mask_png"], gt / (r["source"].rsplit("/", 1)[1].rsplit(".", 1)[0] + ".png"))
    args = ("segment", "--model", SEM, "--weights", lraspp, *photos, "--eval", gt)
    res1 = cli(*args, "--eval-json", tmp_path / "e.json")
    assert res1.exit_code == 0, res1.stderr
    assert "all (mIoU)" in res1.stderr and "1.0000" in res1.stderr
    assert "1 of 3 pictures have no ground truth" in res1.stderr and "coffee.jpg" in res1.stderr
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["miou"] == 1.0 and scores["pixel_acc"] == 1.0 and scores["images"] == 2
    assert scores["missing_gt"] == [str(photos[2])]
    r1 = jsonl(res1.stdout)
    assert r1[0]["eval"]["miou"] == 1.0 and r1[2]["eval"] == {"gt": None}

    # Relabel a block of the astronaut's most frequent class as a class the model never predicted,
    # and mark another block "ignore": IoU(a) = (A - n) / A, IoU(b) = 0, every other class 1.
    mask = _read_png(recs[0]["mask_png"])[1].copy()
    cat_mask = _read_png(recs[1]["mask_png"])[1]
    a = int(np.bincount(mask.ravel()).argmax())
    predicted = set(np.unique(mask)) | set(np.unique(cat_mask))
    b = next(k for k in range(1, 21) if k not in predicted)
    region = np.zeros(mask.shape, bool)
    region[:40, :] = True
    block = region & (mask == a)
    n_changed, area_a = int(block.sum()), int((mask == a).sum()) + int((cat_mask == a).sum())
    assert n_changed > 0
    ignore = np.zeros(mask.shape, bool)
    ignore[-30:, :] = True
    gt_mask = mask.copy()
    gt_mask[block] = b
    gt_mask[ignore] = 255
    (gt / "astronaut.png").write_bytes(encode_index_png(gt_mask))
    res2 = cli(*args, "--eval-json", tmp_path / "e2.json", "-q")
    s = json.loads((tmp_path / "e2.json").read_text())
    # the ignored rows drop out of both the prediction and ground truth
    ign_a = int((ignore & (mask == a) & ~block).sum())
    expect_a = (area_a - n_changed - ign_a) / (area_a - ign_a)
    assert s["per_class_iou"][str(_label(b))] == 0.0
    assert abs(s["per_class_iou"][_label(a)] - expect_a) < 1e-6
    others = [v for k, v in s["per_class_iou"].items() if k not in (_label(a), _label(b))]
    assert all(v == 1.0 for v in others)
    assert abs(s["miou"] - (expect_a + 0.0 + sum(others)) / (len(others) + 2)) < 1e-5
    assert res2.exit_code == 0

    # a ground-truth file of the wrong size: that picture fails, the rest are scored, exit 1
    (gt / "cat.png").write_bytes(encode_index_png(np.zeros((10, 10), np.uint8)))
    res3 = cli(*args)
    r3 = jsonl(res3.stdout)
    assert res3.exit_code == 1 and not r3[1]["ok"] and "ground truth is 10x10 pixels" in r3[1]["error"]
    assert r3[1]["classes"] and r3[0]["ok"]
    res4 = cli("segment", "--model", SEM, "--weights", lraspp, photos[0], "--eval", tmp_path / "nope")
    assert res4.exit_code == 2 and "no such folder" in res4.stderr


def _label(k):
    from cvtool.models.labels import load_labels

    return load_labels("voc")[k]


def test_classes_filter_turns_other_classes_into_background(semantic_run, lraspp, cli):
    res, out, photos = semantic_run
    rec = jsonl(res.stdout)[0]
    keep = rec["classes"][0]["class_id"] if rec["classes"][0]["class_id"] != 0 else rec["classes"][1]["class_id"]
    res2 = cli("segment", "--model", SEM, "--weights", lraspp, photos[0], "--classes", _label(keep), "-q")
    got = {c["class_id"]: c["pixels"] for c in jsonl(res2.stdout)[0]["classes"]}
    want = {c["class_id"]: c["pixels"] for c in rec["classes"]}
    assert set(got) <= {0, keep} and got[keep] == want[keep] and sum(got.values()) == sum(want.values())
    res3 = cli("segment", "--model", SEM, "--weights", lraspp, photos[0], "--classes", "persn")
    assert res3.exit_code == 2 and "did you mean person" in res3.stderr


def test_export_with_argmax_parity_and_run_the_file(lraspp, cli, samples, tmp_path):
    out = tmp_path / "seg.onnx"
    res = cli("export", SEM, "--weights", lraspp, "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["task"] == "segment" and rep["parity"]["ok"] and rep["parity"]["agreement"] == 1.0
    # each picture runs at its reference size (shorter side 520), so height and width are free
    assert rep["parity"]["images"] == 4 and rep["input"] == ["batch", "height", "width", 3]
    res = cli("export", "--validate", out)
    assert res.exit_code == 0 and json.loads(res.stdout)["output_shape"][1] == 21
    res = cli("segment", samples / "cat.jpg", "--model", out, "-q")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["model"] == SEM
    res = cli("segment", samples / "cat.jpg", "--model", out, "--imgsz", "256", "-q")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["mask_size"] == {"width": 451, "height": 300}


def test_video_in_overlay_video_and_masks_out(lraspp, cli, samples, tmp_path):
    import cv2

    size = (160, 120)
    w = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    pic = cv2.resize(cv2.imread(str(samples / "cat.jpg")), size)
    for _ in range(4):
        w.write(pic)
    w.release()
    res = cli("segment", tmp_path / "clip.mp4", "--model", SEM, "--weights", lraspp, "--save", tmp_path / "out", "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [r["frame"] for r in recs] == [0, 1, 2, 3]
    assert all(r["mask_size"] == {"width": 160, "height": 120} for r in recs)
    assert recs[0]["saved"].endswith(("clip_overlay.webm", "clip_overlay.mp4"))
    assert _read_png(tmp_path / "out" / "clip_f000003_mask.png")[1].shape == (120, 160)
    cap = cv2.VideoCapture(recs[0]["saved"])
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4


def test_offline_without_weights_is_a_clear_setup_error(tmp_path, samples):
    proc = run_cvtool("segment", samples / "cat.jpg", "--save", tmp_path / "s", "--output", tmp_path / "r.jsonl",
                      env={"CVTOOL_HOME": str(tmp_path / "home"), "CVTOOL_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr
    assert "Traceback" not in err and err.count("\n") == 1
    assert "deeplabv3_mobilenet_v3_large" in err and "offline" in err
    # where the file comes from (issue 24.11) and the one command that imports it
    assert "download https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-" in err
    assert "cvtool models import deeplabv3_mobilenet_v3_large deeplabv3_mobilenet_v3_large-" in err and "--weights" in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "r.jsonl").exists()
    assert not (tmp_path / "home" / "weights").exists() or not any((tmp_path / "home" / "weights").iterdir())


def test_bad_inputs_and_options(lraspp, cli, samples, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not a picture at all" * 10)
    res = cli("segment", "--model", SEM, "--weights", lraspp, samples / "cat.jpg",
              tmp_path / "empty.jpg", tmp_path / "junk.jpg", tmp_path / "gone.jpg")
    recs = jsonl(res.stdout)
    assert res.exit_code == 1 and [r["ok"] for r in recs] == [True, False, False, False]
    assert "classes" not in recs[1] and "empty file" in recs[1]["error"]
    assert "not a recognised image format" in recs[2]["error"] and "no such file" in recs[3]["error"]
    res = cli("segment", samples / "cat.jpg", "--model", "nope")
    assert res.exit_code == 2 and "unknown model" in res.stderr
    res = cli("segment", samples / "cat.jpg", "--model", "efficientnet_lite0")
    assert res.exit_code == 2 and "classify model, not a segment model" in res.stderr
    res = cli("segment", samples / "cat.jpg", "--model", SEM, "--weights", lraspp, "--instances")
    assert res.exit_code == 2 and "semantic segmenter" in res.stderr
    res = cli("segment", samples / "cat.jpg", "--eval-json", tmp_path / "x.json")
    assert res.exit_code == 2 and "needs --eval" in res.stderr


def test_auxiliary_head_is_optional_in_the_weights(tmp_path, samples, cli):
    """The official deeplabv3 weights carry an auxiliary head; a plain torchvision build does not.
    Both load (the head is not run)."""
    import torch
    import torchvision

    from cvtool.models.segmentation import fit_aux_head, torchvision_semantic

    torch.manual_seed(0)
    plain = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
    with_aux = torchvision_semantic("deeplabv3_mobilenet_v3_large", aux=True)
    assert any(k.startswith("aux_classifier.") for k in with_aux.state_dict())
    sd = fit_aux_head(with_aux, plain.state_dict())
    assert with_aux.aux_classifier is None and set(sd) == set(with_aux.state_dict())
    sd2 = fit_aux_head(plain, torchvision_semantic("deeplabv3_mobilenet_v3_large", aux=True).state_dict())
    assert set(sd2) == set(plain.state_dict())
    torch.save(plain.state_dict(), tmp_path / "d.pth")
    res = cli("segment", samples / "cat.jpg", "--weights", tmp_path / "d.pth", "--backend", "torch", "--imgsz", "128", "-q")
    assert res.exit_code == 0, res.stderr
    assert jsonl(res.stdout)[0]["model"] == "deeplabv3_mobilenet_v3_large"


# ------------------------------------------------------------------------------------ instances

def test_paste_mask_matches_torchvision():
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from cvtool.tasks.segment import paste_mask

    rng = np.random.default_rng(2)
    h, w = 120, 170
    boxes = np.array([[10.3, 20.7, 90.2, 100.9], [-5.0, 30.0, 60.0, 130.0], [150.5, 2.0, 175.0, 40.0],
                      [40.0, 40.0, 41.0, 41.5]], np.float32)
    probs = rng.random((4, 28, 28)).astype(np.float32)
    ref = paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (h, w))[:, 0].numpy()
    for p, b, r in zip(probs, boxes, ref):
        ours = paste_mask(p, b, h, w).full(h, w)
        theirs = r > 0.5
        assert (ours != theirs).sum() <= max(2, 0.002 * theirs.sum())


def test_instance_postprocess_on_constructed_rows():
    from cvtool.io.masks import rle_decode
    from cvtool.io.sources import Frame
    from cvtool.models.preprocess import Preprocess
    from cvtool.tasks.segment import InstanceSegmenter

    class M:
        labels = tuple(f"c{i}" for i in range(91))
        preprocess = Preprocess(resize=0, crop=100, mean=(0, 0, 0), std=(1, 1, 1), letterbox=True)

    full = np.ones(28 * 28, np.float32)
    rows = np.array([
        [0, 0.5, 0.05, 0.9, 0.2, 0.9, 3, *full],  # picture 0: box x 100..180, y 10..40 in a 200x50 picture
        [0, 0.0, 0.0, 0.1, 0.1, 0.4, 5, *full],  # below --conf
        [1, 0.0, 0.0, 1.0, 1.0, 0.8, 7, *np.zeros(28 * 28)],  # picture 1: an empty mask
    ], np.float32)
    seg = InstanceSegmenter(M(), conf=0.5, keep_masks=True)
    frames = [Frame("a", None, (200, 50)), Frame("b", None, (64, 64))]
    out = seg(rows, frames)
    a, b = out
    assert a["count"] == 1 and b["count"] == 1
    inst = a["instances"][0]
    assert inst["box"] == [100.0, 10.0, 180.0, 40.0] and inst["class_id"] == 3 and inst["label"] == "c3"
    m = rle_decode(inst["rle"])
    assert m.shape == (50, 200) and m.sum() == inst["area"] > 0
    ys, xs = np.nonzero(m)
    assert 98 <= xs.min() <= 101 and 179 <= xs.max() <= 182 and 8 <= ys.min() <= 11 and 39 <= ys.max() <= 42
    assert (frames[0].meta["segment_mask"][0].full(50, 200) == m).all()
    assert b["instances"][0]["area"] == 0 and rle_decode(b["instances"][0]["rle"]).sum() == 0
    only = InstanceSegmenter(M(), conf=0.1, classes={5})(rows, frames[:1])[0]
    assert [i["class_id"] for i in only["instances"]] == [5]


def test_mask_rcnn_end_to_end(tmp_path, samples, cli):
    """The registered Mask R-CNN architecture with random weights (torchvision's native format),
    run small (--imgsz 128) to keep the test short; with --conf 0 it always finds objects."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    path = tmp_path / "mrcnn.pth"
    torch.save(net.state_dict(), path)
    del net
    res = cli("segment", samples / "cat.jpg", "--instances", "--weights", path, "--imgsz", "128", "--conf", "0",
              "--max-det", "3", "--save", tmp_path / "out", "-q")
    assert res.exit_code == 0, res.stderr
    rec = jsonl(res.stdout)[0]
    assert rec["backend"] == "torch" and rec["mode"] == "instance" and rec["count"] == 3
    assert rec["model"] == "maskrcnn_resnet50_fpn_v2"
    from cvtool.io.masks import rle_decode

    for inst in rec["instances"]:
        x1, y1, x2, y2 = inst["box"]
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300 and 1 <= inst["class_id"] <= 90
        m = rle_decode(inst["rle"])
        assert m.shape == (300, 451) and m.sum() == inst["area"]
        mode, png = _read_png(inst["mask_png"])
        assert png.shape == (300, 451) and ((png > 0) == m).all()
    import cv2

    assert cv2.imread(rec["saved"]).shape == (300, 451, 3)
    res = cli("segment", samples / "cat.jpg", "--instances", "--weights", path, "--backend", "onnx")
    assert res.exit_code == 2 and "runs on torch only" in res.stderr
    res = cli("segment", samples / "cat.jpg", "--instances", "--weights", path, "--eval", tmp_path)
    assert res.exit_code == 2 and "does not apply to instance models" in res.stderr
    res = cli("export", "maskrcnn_resnet50_fpn_v2", "-o", tmp_path / "m.onnx")
    assert res.exit_code == 1 and "cannot be exported" in res.stderr


def test_registry_lists_the_segmenters():
    from cvtool.models import registry

    specs = {s.name: s for s in registry.list_models("segment")}
    assert set(specs) == {"deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50",
                          "deeplabv3_resnet50", "deeplabv3_resnet101", "maskrcnn_resnet50_fpn_v2"}
    for s in specs.values():
        assert s.weights.url.startswith("https://download.pytorch.org/models/")
        assert s.weights.url.rsplit("-", 1)[1].startswith(s.weights.sha256_prefix)
    assert specs["maskrcnn_resnet50_fpn_v2"].head == "instance" and not specs["maskrcnn_resnet50_fpn_v2"].exportable
