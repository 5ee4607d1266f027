"""`cvtool depth` end to end with a tiny Depth Anything built locally in Hugging Face's format
(random weights: the mechanics are real, the depth is not), plus the eval maths on known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

pytest.importorskip("transformers")

MODEL = "depth_anything_v2_small"


DA_PROCESSOR = dict(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                    resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def make_tiny_depth_anything(folder, processor: dict | None = DA_PROCESSOR):
    """A 4-layer, 32-wide Depth Anything saved with save_pretrained (about 0.6 MB), with the
    ``preprocessor_config.json`` that transformers' own ``DPTImageProcessor(**processor)``
    writes (the real repos' values by default; None: no file). Its weights are scaled so that
    the random output varies (0.7–1.1) instead of sitting at ReLU's zero."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    bc = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                      patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                      reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=bc, fusion_hidden_size=16, head_hidden_size=8,
                              neck_hidden_sizes=[8, 16, 32, 32], reassemble_hidden_size=32)
    torch.manual_seed(0)
    net = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:
                p.mul_(3.0)
        net.head.conv3.weight.mul_(300.0)
        net.head.conv3.bias.fill_(1.0)
    net.save_pretrained(folder)
    if processor is not None:
        DPTImageProcessor(**processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return make_tiny_depth_anything(tmp_path_factory.mktemp("tiny-depth-anything"))


@pytest.fixture(scope="session")
def saved_run(tiny, tmp_path_factory):
    """The sample photos through the default (ONNX Runtime) path with --save --npy."""
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    out = tmp_path_factory.mktemp("depth-out") / "saved"
    res = CliRunner().invoke(app, ["depth", "sample_images", "--weights", str(tiny), "--save", str(out),
                                   "--npy", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    return jsonl(res.stdout), out


def _by_name(recs):
    return {r["source"].rsplit("/", 1)[1]: r for r in recs}


def test_records_and_saved_files_match_the_pictures(saved_run, samples):
    import cv2
    from PIL import Image

    recs, out = saved_run
    assert len(recs) == len(list(samples.glob("*.jpg"))) and all(r["ok"] for r in recs)
    for r in recs:
        assert r["task"] == "depth" and r["model"] == MODEL and r["backend"] == "onnxruntime"
        w, h = r["image_size"]["width"], r["image_size"]["height"]
        dep = r["depth"]
        assert dep["kind"] == "relative_inverse" and dep["size"] == {"width": w, "height": h}
        # the processor's rule, by hand: scale as little as possible toward 518x518 keeping the
        # aspect, sides rounded to multiples of 14 (e.g. 640x427: 518/640 is nearer 1 than
        # 518/427, so 518 x 345.6 → 518x350); the square astronaut becomes 518x518
        assert dep["network_size"] == ({"width": 518, "height": 518} if w == h else {"width": 518, "height": 350})
        arr = np.load(r["npy"])
        assert arr.dtype == np.float32 and arr.shape == (h, w)
        assert arr.min() == pytest.approx(dep["min"], rel=1e-6) and arr.max() == pytest.approx(dep["max"], rel=1e-6)
        assert np.median(arr) == pytest.approx(dep["median"], rel=1e-5)
        assert dep["min"] < dep["median"] < dep["max"]
        color = cv2.imread(r["saved"])
        assert color.shape == (h, w, 3) and r["saved"].endswith("_depth.png")
        # 16-bit PNG: min–max to 0..65535; the record's min/max recover the values
        q = cv2.imread(r["depth16"], cv2.IMREAD_UNCHANGED)
        assert q.dtype == np.uint16 and q.shape == (h, w) and q.min() == 0 and q.max() == 65535
        back = dep["min"] + q.astype(np.float64) / 65535 * (dep["max"] - dep["min"])
        step = (dep["max"] - dep["min"]) / 65535
        assert np.abs(back - arr).max() <= 0.5 * step + 1e-6 * dep["max"]
        with Image.open(r["depth16"]) as im:
            assert float(im.text["cvtool.depth_min"]) == dep["min"] and im.text["cvtool.depth_kind"] == "relative_inverse"
    names = sorted(p.name for p in out.iterdir())
    assert "cat_depth.png" in names and "cat_depth16.png" in names and "cat_depth.npy" in names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left


def test_colour_map_puts_near_at_the_bright_end():
    from cvtool.render.depth import colorize_depth
    from cvtool.tasks.depth import from_uint16, to_uint16

    ramp = np.tile(np.linspace(0.0, 4.0, 64, dtype=np.float32), (4, 1))
    grey = colorize_depth(ramp, cmap="gray")[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[-1] == 255 and (np.diff(grey) >= 0).all()
    assert colorize_depth(np.ones((3, 3), np.float32)).shape == (3, 3, 3)  # constant map: no division by 0
    assert (to_uint16(np.ones((2, 2)), 1.0, 1.0) == 0).all()
    assert np.allclose(from_uint16(to_uint16(ramp, 0.0, 4.0), 0.0, 4.0), ramp, atol=2 / 65535 * 4)


def test_torch_backend_agrees_with_onnx_runtime(cli, tiny, saved_run, samples, tmp_path):
    recs, _ = saved_run
    res = cli("depth", samples / "cat.jpg", samples / "coffee.jpg", "--weights", tiny, "--backend", "torch",
              "--save", tmp_path / "out", "--npy", "-q")
    assert res.exit_code == 0, res.stderr
    onnx = _by_name(recs)
    for r in jsonl(res.stdout):
        assert r["backend"] == "torch"
        a, b = np.load(r["npy"]), np.load(onnx[r["source"].rsplit("/", 1)[1]]["npy"])
        assert np.abs(a - b).max() / (b.max() - b.min()) < 1e-3


def test_video_in_depth_video_out(cli, tiny, samples, tmp_path):
    import cv2

    size = (320, 240)
    w = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    pic = cv2.resize(cv2.imread(str(samples / "cat.jpg")), size)
    for i in range(6):
        w.write(np.roll(pic, 8 * i, axis=1))
    w.release()
    res = cli("depth", tmp_path / "clip.mp4", "--weights", tiny, "--save", tmp_path / "out", "--npy",
              "--backend", "torch", "--batch", "2", "--imgsz", "154", "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [r["frame"] for r in recs] == list(range(6))
    assert all(r["depth"]["size"] == {"width": 320, "height": 240} for r in recs)
    saved = {r["saved"] for r in recs}
    assert len(saved) == 1 and saved.pop().endswith(("clip_depth.webm", "clip_depth.mp4"))
    cap = cv2.VideoCapture(recs[0]["saved"])
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        n += 1
    assert n == 6
    assert recs[3]["npy"].endswith("clip_f000003_depth.npy") and np.load(recs[3]["npy"]).shape == (240, 320)
    assert "depth16" not in recs[0]  # 16-bit PNGs are for still pictures; --npy holds a video's values


def test_offline_without_weights_says_how_to_get_them(samples, tmp_path):
    out = tmp_path / "never"
    proc = run_cvtool("depth", samples / "cat.jpg", "--save", out,
                      env={"CVTOOL_HOME": str(tmp_path / "home"), "CVTOOL_OFFLINE": "1",
                           "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "offline" in err and "cvtool models pull depth_anything_v2_small" in err
    assert "cvtool models import depth_anything_v2_small" in err and "--weights FOLDER" in err
    assert not out.exists()


def test_models_import_makes_the_default_model_work_offline(cli, tiny, samples, cvtool_home, tmp_path):
    res = cli("models", "import", MODEL, tiny)
    assert res.exit_code == 0, res.stderr
    dest = cvtool_home / "weights" / "hf" / MODEL
    assert res.stdout.strip() == str(dest) and (dest / "config.json").is_file()
    res = cli("depth", samples / "cat.jpg", "--backend", "torch", "--imgsz", "140", "-q")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["depth"]["size"] == {"width": 451, "height": 300}
    # a folder of another kind of model is refused with its reason
    bad = tmp_path / "notdepth"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "blip"}))
    (bad / "model.safetensors").write_bytes(b"")
    res = cli("depth", samples / "cat.jpg", "--weights", bad, "--backend", "torch")
    assert res.exit_code == 2 and "model_type 'blip'" in res.stderr


def test_bad_inputs_and_options(cli, tiny, samples, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    res = cli("depth", samples / "cat.jpg", tmp_path / "empty.jpg", tmp_path / "text.jpg", tmp_path / "gone.jpg",
              "--weights", tiny, "--backend", "torch", "--imgsz", "140")
    recs = jsonl(res.stdout)
    assert res.exit_code == 1 and [r["ok"] for r in recs] == [True, False, False, False]
    assert "depth" not in recs[1] and "empty file" in recs[1]["error"] and "no such file" in recs[3]["error"]
    for args, words in [(("--npy",), "--save"), (("--imgsz", "500"), "multiple of 14 (e.g. 490 or 504)"),
                        (("--cmap", "rainbow"), "--cmap"), (("--eval", tmp_path / "nogt"), "no such folder"),
                        (("--gt-kind", "height"), "--gt-kind")]:
        res = cli("depth", samples / "cat.jpg", "--weights", tiny, *args)
        assert res.exit_code == 2 and words in res.stderr, (args, res.stderr)
    res = cli("depth", samples / "cat.jpg", "--model", "efficientnet_lite0")
    assert res.exit_code == 2 and "classify model, not a depth model" in res.stderr
    res = cli("depth", samples / "cat.jpg", "--weights", tiny, "--backend", "torch", "--imgsz", "266", "-q")
    # --imgsz 266 replaces the processor's 518 target; the aspect is still kept (451x300:
    # 266/300 is nearer 1 than 266/451 → 400 x 266 → 406x266 in multiples of 14)
    assert jsonl(res.stdout)[0]["depth"]["network_size"] == {"width": 406, "height": 266}


def test_existing_files_are_kept_and_a_refused_set_writes_nothing(cli, tiny, samples, tmp_path):
    (tmp_path / "cat_depth16.png").write_bytes(b"keep me")
    res = cli("depth", samples / "cat.jpg", "--weights", tiny, "--backend", "torch", "--imgsz", "140",
              "--save", tmp_path)
    assert res.exit_code == 2 and "already holds files" in res.stderr and not res.stdout  # before any work
    assert (tmp_path / "cat_depth16.png").read_bytes() == b"keep me" and not (tmp_path / "cat_depth.png").exists()


def test_eval_on_ground_truth_derived_from_the_prediction(cli, tiny, saved_run, samples, tmp_path):
    """GT = an affine map of the prediction (in disparity, as .npy; in depth, as millimetre PNG):
    alignment recovers it, AbsRel ≈ 0 and δ = 1; invalid pixels (NaN, inf, 0) are ignored."""
    import cv2

    recs, _ = saved_run
    by = _by_name(recs)
    gt = tmp_path / "gt"
    gt.mkdir()
    cat = np.load(by["cat.jpg"]["npy"]).astype(np.float64)
    disp = 2.5 * cat + 0.3
    disp[:10, :] = np.nan
    disp[10:20, :] = np.inf
    disp[20:30, :] = 0.0
    np.save(gt / "cat.npy", disp)
    coffee = np.load(by["coffee.jpg"]["npy"]).astype(np.float64)
    depth_mm = np.rint(1000.0 / (4.0 * coffee - 1.0)).astype(np.uint16)  # depth in mm, 16-bit PNG
    depth_mm[:, :5] = 0
    cv2.imwrite(str(gt / "coffee.png"), depth_mm)
    (gt / "flower.png").write_bytes(b"broken")
    common = ("--weights", tiny, "--eval", gt, "-q")
    res = cli("depth", samples / "cat.jpg", "--gt-kind", "disparity", *common)
    ev = jsonl(res.stdout)[0]["eval"]
    assert res.exit_code == 0 and ev["abs_rel"] < 1e-4 and ev["delta1"] == 1.0
    assert ev["valid_pixels"] == (300 - 30) * 451 and ev["scale"] == pytest.approx(2.5, rel=1e-3)
    res = cli("depth", samples / "coffee.jpg", "--gt-kind", "depth", "--gt-scale", "1000", *common)
    ev = jsonl(res.stdout)[0]["eval"]
    assert ev["abs_rel"] < 2e-3 and ev["delta1"] == 1.0 and ev["valid_pixels"] == 400 * 595
    res = cli("depth", samples / "cat.jpg", samples / "coffee.jpg", samples / "flower.jpg", samples / "rocket.jpg",
              "--gt-kind", "depth", "--gt-scale", "1000", "--weights", tiny, "--eval", gt)
    out = jsonl(res.stdout)
    assert res.exit_code == 1 and [r["ok"] for r in out] == [True, True, False, True]
    assert "--eval" in out[2]["error"] and "cannot read ground truth" in out[2]["error"] and "depth" in out[2]
    assert out[3]["eval"] == {"gt": None} and out[2]["eval"]["gt"].endswith("flower.png")
    assert "AbsRel" in res.stderr and "over 2 pictures" in res.stderr and "1 without ground truth" in res.stderr


def test_eval_known_error_and_invalid_pixels():
    """Two prediction levels → least squares passes through each level's mean GT disparity.
    Level A's GT disparities are 1 and 3 (aligned 2: every pixel 50% off in depth, none within
    1.25), level B's are all 4 (exact). Invalid GT pixels carry wild predictions that would
    wreck the fit if they counted."""
    from cvtool.tasks.depth_eval import evaluate, scale_shift

    pred = np.array([[1.0, 1.0, 2.0, 2.0, 50.0, -9.0, 7.0, 3.0]])
    gt_disp = np.array([[1.0, 3.0, 4.0, 4.0, np.nan, np.inf, 0.0, -1.0]])
    r = evaluate(pred, gt_disp, "disparity")
    assert r["valid_pixels"] == 4 and r["abs_rel"] == pytest.approx(0.25) and r["delta1"] == pytest.approx(0.5)
    gt_depth = np.where(np.isfinite(gt_disp) & (gt_disp > 0), 1.0 / np.where(gt_disp > 0, gt_disp, 1), gt_disp)
    assert evaluate(pred, gt_depth, "depth")["abs_rel"] == pytest.approx(0.25)
    assert scale_shift(np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0, 9.0])) == pytest.approx((2.0, 3.0))
    assert evaluate(pred, np.zeros_like(pred))["abs_rel"] is None  # nothing valid: no score, no crash
    # a prediction at another size is resized to the ground truth's
    big = np.kron(pred[:, :4], np.ones((2, 2)))
    assert evaluate(big, gt_disp[:, :4].repeat(2, 0), "disparity")["abs_rel"] == pytest.approx(0.25, abs=0.05)


def test_pfm_ground_truth(tmp_path):
    from cvtool.tasks.depth_eval import read_gt

    a = np.arange(12, dtype="<f4").reshape(3, 4)
    with open(tmp_path / "x.pfm", "wb") as fh:
        fh.write(b"Pf\n4 3\n-1.0\n" + a[::-1].tobytes())
    assert np.array_equal(read_gt(tmp_path / "x.pfm"), a)


def test_export_with_depth_parity(cli, tiny, samples, tmp_path):
    out = tmp_path / "d.onnx"
    res = cli("export", MODEL, "--weights", tiny, "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["task"] == "depth" and rep["parity"]["ok"] and rep["parity"]["agreement"] == 1.0
    assert rep["parity"]["max_abs_diff"] < 1e-3
    res = cli("depth", samples / "cat.jpg", "--model", out, "-q")
    rec = jsonl(res.stdout)[0]
    assert res.exit_code == 0 and rec["backend"] == "onnxruntime" and rec["depth"]["size"]["width"] == 451
    assert rec["depth"]["network_size"] == {"width": 518, "height": 350}
    # the graph takes any height and width, so --imgsz works on the file too
    res = cli("depth", samples / "cat.jpg", "--model", out, "--imgsz", "266", "-q")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["depth"]["network_size"] == {"width": 406, "height": 266}
    res = cli("export", "--validate", out)
    shape = json.loads(res.stdout)["output_shape"]
    assert res.exit_code == 0 and len(shape) == 3 and shape[1] % 14 == 0 and shape[2] % 14 == 0


def test_compare_depth_counts_order_flips():
    from cvtool.tasks.depth import compare_depth

    ref = np.random.default_rng(1).random((2, 20, 20))
    assert compare_depth(ref, ref + 1e-6, 1e-3) == (pytest.approx(1e-6, rel=1e-2), 1.0)
    diff, agree = compare_depth(ref, -ref, 1e-3)
    assert agree == 0.0 and diff > 1


def test_registry_lists_depth_models_with_their_licences():
    from cvtool.models import registry

    specs = {s.name: s for s in registry.list_models("depth")}
    assert set(specs) == {"depth_anything_v2_small", "depth_anything_v2_base", "depth_anything_v2_large",
                          "dpt_hybrid_midas", "dpt_large"}
    assert specs[MODEL].weights.license.startswith("Apache-2.0")
    assert specs[MODEL].weights.hf_repo == "depth-anything/Depth-Anything-V2-Small-hf"
    for name in ("depth_anything_v2_base", "depth_anything_v2_large"):
        assert "non-commercial" in specs[name].weights.license and "NON-COMMERCIAL" in specs[name].description
