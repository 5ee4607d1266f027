"""`cvtool attack` on the bundled EfficientNet-Lite0 and the sample photos, and the attack
algorithms on a tiny linear model whose right answers are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

EPS = 4  # in 8-bit levels


# ---------------------------------------------------------------- helpers


def _network_input(path, size=224):
    """The clean network-sized picture, computed independently of the attack code."""
    from cvtool.io.decode import decode_image
    from cvtool.models.registry import get

    return get("efficientnet_lite0").weights.preprocess(decode_image(str(path)).rgb)


def _read_png(path):
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.dtype == np.uint8 and bgr.shape[2] == 3
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def lite0_torch():
    from cvtool.models.differentiable import load_classifier

    return load_classifier("efficientnet_lite0", device="cpu")


class Linear:
    """logits = W · x.flatten() + b on (B, 3, 4, 4) pictures: gradients are W's rows."""

    def __init__(self, classes=3, seed=0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(classes, 48, generator=g)
        self.b = torch.zeros(classes)

    def __call__(self, x):
        return x.flatten(1) @ self.W.T + self.b


# ---------------------------------------------------------------- the algorithms, exactly


def test_fgsm_is_one_step_along_the_gradient_sign():
    import torch

    from cvtool.attack.base import Goal
    from cvtool.attack.config import build_config
    from cvtool.attack.gradient import fgsm

    m = Linear()
    x0 = torch.full((1, 3, 4, 4), 0.5)
    goal = Goal(label=0)
    cfg = build_config("fgsm", eps="4/255", input_size=4)
    res = fgsm(m, x0, goal, cfg)
    # d CE(label 0) / dx = sum_k (p_k - [k == 0]) W_k
    p = torch.softmax(m(x0), 1)[0]
    grad = ((p - torch.tensor([1.0, 0, 0])) @ m.W).view(1, 3, 4, 4)
    assert torch.allclose(res.x_adv - x0, grad.sign() * 4 / 255, atol=1e-7)
    assert res.iterations == 1
    l2 = build_config("fgsm", eps="0.1", norm="l2", input_size=4)
    d = fgsm(m, x0, goal, l2).x_adv - x0
    assert math.isclose(float(d.norm()), 0.1, rel_tol=1e-5)
    assert torch.allclose(d / d.norm(), grad / grad.norm(), atol=1e-5)


@pytest.mark.parametrize("method", ["bim", "pgd", "mifgsm"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_iterative_attacks_stay_in_the_ball_and_in_range(method, norm):
    import torch

    from cvtool.attack import gradient
    from cvtool.attack.base import Goal
    from cvtool.attack.config import build_config

    m = Linear(seed=1)
    x0 = torch.rand((1, 3, 4, 4), generator=torch.Generator().manual_seed(2))
    eps = "8/255" if norm == "linf" else "0.05"
    cfg = build_config(method, eps=eps, norm=norm, steps=5, restarts=2 if method == "pgd" else 1, input_size=4)
    x = getattr(gradient, method)(m, x0, Goal(int(m(x0).argmax())), cfg,
                                  torch.Generator().manual_seed(0)).x_adv
    d = (x - x0).flatten()
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    bound = float(d.abs().max()) if norm == "linf" else float(d.norm())
    assert bound <= cfg.eps + 1e-6
    loss = torch.nn.functional.cross_entropy
    y = torch.tensor([int(m(x0).argmax())])
    assert float(loss(m(x), y)) > float(loss(m(x0), y))  # the attack raised the loss


def test_deepfool_finds_the_linear_boundary_in_one_step():
    import torch

    from cvtool.attack.base import Goal
    from cvtool.attack.config import build_config
    from cvtool.attack.minimal import deepfool

    m = Linear(classes=2, seed=3)
    x0 = torch.full((1, 3, 4, 4), 0.5)
    y = int(m(x0).argmax())
    res = deepfool(m, x0, Goal(y), build_config("deepfool", norm="l2", input_size=4))
    w = m.W[1 - y] - m.W[y]
    f = float((m(x0)[0, 1 - y] - m(x0)[0, y]))
    exact = abs(f) / float(w.norm())  # distance to the hyperplane
    assert res.iterations == 1 and int(m(res.x_adv).argmax()) != y
    assert math.isclose(float((res.x_adv - x0).norm()), exact * 1.02, rel_tol=1e-3)


def test_cw_finds_a_small_adversarial_change():
    import torch

    from cvtool.attack.base import Goal
    from cvtool.attack.config import build_config
    from cvtool.attack.minimal import cw

    m = Linear(classes=2, seed=4)
    x0 = torch.full((1, 3, 4, 4), 0.5)
    y = int(m(x0).argmax())
    res = cw(m, x0, Goal(y), build_config("cw", steps=200, input_size=4))
    w = m.W[1 - y] - m.W[y]
    exact = abs(float(m(x0)[0, 1 - y] - m(x0)[0, y])) / float(w.norm())
    assert int(m(res.x_adv).argmax()) != y
    assert float((res.x_adv - x0).norm()) < 1.5 * exact


def test_quantise_projects_onto_the_8bit_ball():
    from cvtool.attack.quantize import norms, quantise

    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    delta = rng.normal(0, 6, (8, 8, 3))
    q = quantise(delta, x0, 4 / 255, "linf")
    d = q.astype(int) - x0
    assert np.abs(d).max() <= 4 and q.dtype == np.uint8
    assert norms(q, x0)["linf_255"] <= 4
    q2 = quantise(delta, x0, 0.1, "l2")
    assert np.sqrt(((q2.astype(int) - x0) ** 2).sum()) / 255 <= 0.1 + 1e-12
    # eps 4.9/255: the bound on the grid is 4 levels, never 5
    assert np.abs(quantise(delta, x0, 4.9 / 255, "linf").astype(int) - x0).max() <= 4
    out = quantise(np.full((2, 2, 3), 0.3), np.full((2, 2, 3), 10, np.uint8), None, "linf", "outward")
    assert (out == 11).all()


def test_l2_rounding_uses_the_budget_instead_of_wiping_the_step_out():
    from cvtool.attack.quantize import budget_round_l2, quantise

    rng = np.random.default_rng(1)
    x0 = np.full((224, 224, 3), 128, np.uint8)
    step = rng.normal(0, 1, x0.shape)
    step *= 0.5 * 255 / np.sqrt((step ** 2).sum())  # an L2 step of 0.5: about 0.3 levels per value
    assert np.sqrt(((quantise(step, x0, 0.5, "l2").astype(int) - 128) ** 2).sum()) / 255 < 0.3
    q = budget_round_l2(step, 0.5)
    length = np.sqrt((q ** 2).sum()) / 255
    assert 0.49 < length <= 0.5 and (q == np.round(q)).all()
    assert (np.sign(q[q != 0]) == np.sign(step[q != 0])).all()  # same direction, value by value
    cos = (q * step).sum() / np.sqrt((q ** 2).sum() * (step ** 2).sum())
    assert cos > 0.6


def test_eps_parsing():
    from cvtool.attack.config import ConfigError, build_config, fmt_eps, parse_fraction

    assert parse_fraction("4/255", "--eps") == 4 / 255 and parse_fraction("0.5", "--eps") == 0.5
    assert fmt_eps(8 / 255) == "8/255" and fmt_eps(0.5) == "0.5"
    cfg = build_config("pgd", eps="8/255", steps=4)
    assert math.isclose(cfg.alpha, 2.5 * 8 / 255 / 4) and cfg.random_start
    assert build_config("deepfool").eps is None and build_config("fgsm", norm="l2").eps == 0.5
    for args, msg in [(dict(eps="abc"), "expected a number"), (dict(eps="4/0"), "division by zero"),
                      (dict(eps="-1"), "positive"), (dict(eps="4"), "did you mean 4/255"),
                      (dict(eps="0.001"), "below one 8-bit level"), (dict(steps=3), "FGSM takes exactly one step")]:
        with pytest.raises(ConfigError, match=msg):
            build_config("fgsm", **args)


# ---------------------------------------------------------------- the command, on real photos


def test_pgd_fools_the_model_on_every_sample_photo_and_the_png_stays_within_eps(cli, samples, tmp_path,
                                                                                lite0_torch):
    res = cli("attack", "pgd", samples, "--eps", f"{EPS}/255", "--steps", "5", "--save", tmp_path,
              "--resolution", "network")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert len(recs) == 6 and all(r["ok"] for r in recs)
    for r in recs:
        assert r["resolution"] == "network" and r["attacked_size"] == {"width": 224, "height": 224}
        assert r["task"] == "attack" and r["backend"] == "torch" and r["attack"]["method"] == "pgd"
        assert r["success_8bit"] and r["adversarial"]["class_id"] != r["clean"]["class_id"], r["source"]
        assert r["norms"]["linf_255"] <= EPS and r["norms"]["linf"] <= EPS / 255 + 1e-9
        assert r["iterations"] == 5
        adv = _read_png(r["saved"]["adv"])
        clean = _network_input(r["source"])
        assert adv.shape == clean.shape == (224, 224, 3)
        d = adv.astype(int) - clean.astype(int)
        assert np.abs(d).max() <= EPS  # the saved file itself is within eps of the real input
        assert np.abs(d).max() == r["norms"]["linf_255"]
        assert math.isclose(np.sqrt((d ** 2).sum()) / 255, r["norms"]["l2"], abs_tol=1e-5)
        assert (_read_png(r["saved"]["clean"]) == clean).all()
        # Scoring the saved PNG again gives the record's adversarial prediction.
        cid, _, _ = lite0_torch.top(lite0_torch.to_tensor(adv))
        assert cid == r["adversarial"]["class_id"]
        pert = _read_png(r["saved"]["perturbation"])
        assert pert.min() == 1 and pert.max() == 255  # amplified: the largest change spans the range
    assert "clean accuracy 100.0% (6/6), robust accuracy 0.0% (0/6), success rate 100.0% (6/6)" in res.stderr


def test_photo_resolution_pictures_fool_cvtool_classify(cli, samples, tmp_path):
    """Issue 14.16: adversarial pictures saved at the photo's own size, attacked through the
    preprocessing, are fooling when `cvtool classify` (its own decode, resize and crop, ONNX
    Runtime) reads the saved files back, and the record's 8-bit verdict is what classify sees.
    Network-sized ones are fooling at the network's size; classify resizes and crops them again,
    so nothing is promised about what it says of them (issue 24.17: 5/6 stayed fooling on one
    machine, 6/6 on another, so no comparison between the two modes is asserted)."""
    clean = {r["source"].split("/")[-1]: r["class_id"]
             for r in jsonl(run_cvtool("classify", samples, "-q").stdout)}
    fooled = {}
    for mode in ("photo", "network"):
        out = tmp_path / mode
        res = cli("attack", "pgd", samples, "--eps", f"{EPS}/255", "--steps", "10", "--save", out,
                  "--resolution", mode, "-q")
        assert res.exit_code == 0, res.stderr
        recs = jsonl(res.stdout)
        assert {r["resolution"] for r in recs} == {mode}
        for r in recs:
            adv, kept = _read_png(r["saved"]["adv"]), _read_png(r["saved"]["clean"])
            if mode == "photo":  # the photo's own size, every value within eps of the photo
                assert adv.shape[:2] == (r["image_size"]["height"], r["image_size"]["width"])
                from cvtool.io.decode import decode_image

                assert (kept == decode_image(r["source"]).rgb).all()
            else:  # the network's own input size, fooling the model at that size
                assert adv.shape[:2] == (r["input_size"], r["input_size"]) and r["success_8bit"]
            d = np.abs(adv.astype(int) - kept.astype(int))
            assert d.max() <= EPS and d.max() == r["norms"]["linf_255"]
        again = jsonl(run_cvtool("classify", *(r["saved"]["adv"] for r in recs), "-q").stdout)
        fooled[mode] = sum(a["class_id"] != clean[r["source"].split("/")[-1]] for a, r in zip(again, recs))
        if mode == "photo":  # the record's 8-bit verdict is what classify sees
            assert [a["class_id"] for a in again] == [r["adversarial"]["class_id"] for r in recs]
    # Every photo fools classify. The margin: PGD-10 fools an undefended ImageNet classifier at
    # far less than eps 4/255 (measured: all 6 photos are still fooled at 1/255, a quarter of EPS).
    assert fooled["photo"] == 6, fooled


def test_fgsm_targeted_and_l2(cli, samples):
    res = cli("attack", "fgsm", samples / "cat.jpg", "--eps", "4/255", "--resolution", "network")
    assert res.exit_code == 0, res.stderr
    r = jsonl(res.stdout)[0]
    # One step of exactly eps on every value (but those clipped at 0 or 255).
    assert r["iterations"] == 1 and r["norms"]["linf_255"] == 4 and r["norms"]["changed"] > 0.95
    assert r["clean"]["label"] == "tiger cat" and r["success_8bit"]
    res = cli("attack", "fgsm", samples / "cat.jpg", "--norm", "l2", "--eps", "0.5", "--resolution", "network")
    r = jsonl(res.stdout)[0]
    assert r["attack"]["norm"] == "l2" and r["norms"]["l2"] <= 0.5 + 1e-9 and r["norms"]["l2"] > 0.4

    # Targeted: 20 steps, not the 3 to 5 that reach goldfish only just (measured: 3 steps fail,
    # 4 and 5 end at goldfish 0.32 and 0.26 on the saved picture, so a different OpenCV resize or
    # NumPy build could tip it; 20 steps end at goldfish 1.00).
    res = cli("attack", "pgd", samples / "cat.jpg", "--target", "goldfish", "--eps", "8/255", "--steps", "20")
    assert res.exit_code == 0, res.stderr
    r = jsonl(res.stdout)[0]
    assert r["attack"]["targeted"] and r["target"] == {"class_id": 1, "label": "goldfish"}
    assert r["success_8bit"] and r["adversarial"]["label"] == "goldfish" and r["norms"]["linf_255"] <= 8
    assert "success rate 100.0% (1/1)" in res.stderr


def test_deepfool_rounds_to_a_picture_that_still_fools(cli, samples):
    res = cli("attack", "deepfool", samples / "cat.jpg")
    assert res.exit_code == 0, res.stderr
    r = jsonl(res.stdout)[0]
    assert r["success"] and r["success_8bit"] and r["norms"]["linf_255"] >= 1
    assert r["norms_float"]["l2"] < 0.5 and r["attack"]["eps"] is None


def test_square_on_an_onnx_file_changes_the_prediction_within_its_budget(cli, samples, tmp_path):
    from cvtool.models.loader import load

    path, _ = load("efficientnet_lite0").onnx_path()
    res = cli("attack", "square", samples / "cat.jpg", samples / "coffee.jpg", "--model", path,
              "--queries", "1000", "--save", tmp_path)
    assert res.exit_code == 0, res.stderr
    for r in jsonl(res.stdout):
        assert r["backend"] == "onnxruntime" and r["rounding"] == "on the grid"
        assert r["success_8bit"] and r["adversarial"]["class_id"] != r["clean"]["class_id"]
        assert r["queries"] <= 1000 and r["norms"]["linf_255"] <= EPS
        d = _read_png(r["saved"]["adv"]).astype(int) - _network_input(r["source"]).astype(int)
        assert np.abs(d).max() <= EPS
    res = cli("attack", "pgd", samples / "cat.jpg", "--model", path)
    assert res.exit_code == 2 and "needs gradients" in res.stderr and "square" in res.stderr


def test_labels_file_and_transfer_to_a_second_model(cli, samples, tmp_path):
    import shutil

    from cvtool.models.loader import load

    # The second model: the ONNX export of the same network, run by ONNX Runtime.
    path, _ = load("efficientnet_lite0").onnx_path()
    second = tmp_path / "lite0-copy.onnx"
    shutil.copy(path, second)
    labels = tmp_path / "truth.csv"
    labels.write_text("file,class\ncat.jpg,tiger cat\ncoffee.jpg,967\nflower.jpg,goldfish\n")
    res = cli("attack", "fgsm", samples / "cat.jpg", samples / "coffee.jpg", samples / "flower.jpg",
              samples / "rocket.jpg", "--labels", labels, "--eval-model", second)
    assert res.exit_code == 1, res.stderr  # rocket.jpg has no label
    cat, coffee, flower, rocket = jsonl(res.stdout)
    assert cat["truth"] == {"class_id": 282, "label": "tiger cat", "from": "labels"} and cat["clean"]["correct"]
    assert coffee["truth"]["label"] == "espresso"
    assert flower["truth"]["label"] == "goldfish" and not flower["clean"]["correct"]
    assert not rocket["ok"] and "no label for this picture" in rocket["error"]
    for r in (cat, coffee, flower):
        t = r["transfer"]
        assert t["model"] == "lite0-copy.onnx" and t["truth"]["from"] == "labels"
        assert set(t["adversarial"]) == {"class_id", "label", "score", "correct"}
        # The same network on another runtime: the same decisions, to rounding.
        assert t["clean"]["class_id"] == r["clean"]["class_id"]
        assert t["adversarial"]["class_id"] == r["adversarial"]["class_id"]
        assert abs(t["adversarial"]["score"] - r["adversarial"]["score"]) < 1e-3
    assert "clean accuracy 66.7% (2/3)" in res.stderr and "transfer to lite0-copy.onnx" in res.stderr
    jl = tmp_path / "truth.json"
    jl.write_text(json.dumps({"cat.jpg": "no such animal"}))
    res = cli("attack", "fgsm", samples / "cat.jpg", "--labels", jl)
    assert res.exit_code == 2 and "truth.json entry 'cat.jpg'" in res.stderr and "no such class" in res.stderr


def test_bad_inputs_get_one_record_each_and_the_run_goes_on(cli, samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = cli("attack", "fgsm", tmp_path / "missing.jpg", bad, samples / "cat.jpg")
    assert res.exit_code == 1
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [False, False, True]
    assert "missing.jpg" in recs[0]["source"] and recs[0]["error"]
    assert recs[1]["source"].endswith("broken.jpg") and recs[1]["error"]
    assert recs[2]["success_8bit"]
    assert "missing.jpg" in res.stderr and "broken.jpg" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["pgd", "--eps", "4"], "did you mean 4/255"),
    (["pgd", "--eps", "four"], "--eps 'four': expected a number"),
    (["pgd", "--eps", "0"], "must be a positive number"),
    (["pgd", "--alpha", "1/0"], "division by zero"),
    (["pgd", "--target", "unicorn"], "--target 'unicorn': no such class"),
    (["pgd", "--target", "1000"], "class ids run from 0 to 999"),
    (["fgsm", "--steps", "5"], "FGSM takes exactly one step"),
    (["cw", "--norm", "linf"], "cw is the Carlini-Wagner L2 attack"),
    (["square", "--norm", "l2"], "linf only"),
    (["bim", "--restarts", "3"], "only pgd restarts"),
    (["pgd", "--queries", "100"], "only square counts a query budget"),
    (["pgd", "--norm", "l1"], "--norm 'l1'"),
    (["jsma"], "unknown attack 'jsma'"),
    (["pgd", "--model", "no_such_model"], "unknown model"),
    (["pgd", "--labels", "/nonexistent.csv"], "--labels /nonexistent.csv: no such file"),
    (["pgd", "--backend", "onnx"], "needs gradients"),
])
def test_usage_errors_exit_2(cli, samples, args, message):
    res = cli("attack", args[0], samples / "cat.jpg", *args[1:])
    assert res.exit_code == 2, res.stderr
    assert message in res.stderr and res.stdout == ""


def test_usage_error_in_a_real_process_has_no_traceback(samples):
    proc = run_cvtool("attack", "pgd", samples / "cat.jpg", "--eps", "4")
    assert proc.returncode == 2 and "did you mean 4/255" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_attack_help_does_not_import_heavy_libraries():
    proc = run_cvtool("attack", "--help", python_flags=("-X", "importtime"))
    assert proc.returncode == 0 and "--eps" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "cv2", "onnxruntime", "numpy"}
