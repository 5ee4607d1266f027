"""`cvtool visualize`: attribution maps that pass sanity checks from the literature, layer and
filter views, and the command's files, records and errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from conftest import jsonl

TIGER_CAT = 282


@pytest.fixture(scope="module")
def clf():
    from cvtool.models.differentiable import load_classifier

    return load_classifier("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def cat(clf, samples):
    from cvtool.io.decode import decode_image

    rgb = clf.preprocess(decode_image(str(samples / "cat.jpg")).rgb)
    return rgb, clf.to_tensor(rgb)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a.ravel())).astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel())).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("method", ["saliency", "gradcam", "integrated-gradients"])
def test_maps_depend_on_the_learned_weights(clf, cat, method):
    """Adebayo et al. (2018): re-initialising the weights must change the map substantially,
    or the method only shows the picture's edges, not the model."""
    import torch

    from cvtool.explain.attribution import attribute

    _, x = cat
    trained = attribute(method, clf, x, TIGER_CAT, steps=16)
    rand = copy.copy(clf)
    rand.module = copy.deepcopy(clf.module)
    torch.manual_seed(0)
    for mod in rand.module.modules():
        if hasattr(mod, "reset_parameters") and not isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_parameters()
    randomised = attribute(method, rand, x, TIGER_CAT, steps=16)
    assert trained.heat.shape == randomised.heat.shape == (224, 224)
    assert _spearman(trained.raw, randomised.raw) < 0.5


def _top_and_random_masks(raw: np.ndarray, share: float = 0.1, draws: int = 5):
    """Flat boolean masks over the 224x224 input: the map's top ``share`` of pixels, and
    ``draws`` random sets of the same size (seeded)."""
    k = int(share * raw.size)
    top = np.zeros(raw.size, bool)
    top[np.argsort(-raw.ravel(), kind="stable")[:k]] = True
    rng = np.random.default_rng(0)
    randoms = []
    for _ in range(draws):
        r = np.zeros(raw.size, bool)
        r[rng.choice(raw.size, k, replace=False)] = True
        randoms.append(r)
    return top, randoms


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion"])
def test_deleting_salient_pixels_hurts_more_than_random(clf, cat, method):
    """Replacing the 10% most important pixels (by the map) with a blurred copy must lower the
    cat score more than replacing any of five random 10% draws."""
    import cv2
    import torch

    from cvtool.explain.attribution import attribute

    rgb, x = cat
    blurred = clf.to_tensor(cv2.GaussianBlur(rgb, (0, 0), 10))

    def score_without(mask: np.ndarray) -> float:
        m = torch.from_numpy(mask.reshape(224, 224))
        xd = x.clone()
        xd[0, :, m] = blurred[0, :, m]
        return float(clf.probs(xd)[0, TIGER_CAT])

    top, draws = _top_and_random_masks(attribute(method, clf, x, TIGER_CAT, steps=32).raw)
    randoms = [score_without(r) for r in draws]
    start = float(clf.probs(x)[0, TIGER_CAT])
    assert score_without(top) < min(randoms) < start


def test_saliency_marks_the_most_sensitive_pixels(clf, cat):
    """A plain gradient map measures local sensitivity, not evidence (removing its top pixels is
    no better than removing random ones: Hooker et al. 2019; on the cat, 0.235 against random
    draws of 0.223–0.260). So check what it claims: nudging its 10% top pixels by 2/255 against
    the gradient lowers the tiger-cat logit more than nudging any of five random 10% draws, as
    measured by the model's forward pass, not by the map."""
    import torch

    from cvtool.explain.attribution import attribute

    _, x = cat
    xg = x.clone().requires_grad_(True)
    clf(xg)[0, TIGER_CAT].backward()
    direction = xg.grad.sign()

    def logit_after_nudge(mask: np.ndarray) -> float:
        m = torch.from_numpy(mask.reshape(224, 224))
        with torch.no_grad():
            return float(clf((x - 2 / 255 * direction * m).clamp(0, 1))[0, TIGER_CAT])

    top, draws = _top_and_random_masks(attribute("saliency", clf, x, TIGER_CAT).raw)
    randoms = [logit_after_nudge(r) for r in draws]
    with torch.no_grad():
        start = float(clf(x)[0, TIGER_CAT])
    assert logit_after_nudge(top) < min(randoms) < start


def test_integrated_gradients_completeness(clf, cat):
    """The attributions add up to score(x) − score(black) as the path sum converges."""
    from cvtool.explain.attribution import integrated_gradients

    _, x = cat
    coarse = integrated_gradients(clf, x, TIGER_CAT, steps=8).info["completeness_error"]
    fine = integrated_gradients(clf, x, TIGER_CAT, steps=256).info["completeness_error"]
    assert fine < 0.1 and fine < coarse


def test_gradcam_is_class_discriminative(clf, samples):
    """A collage with a cat top-left and an espresso bottom-right: Grad-CAM for "tiger cat"
    must be hottest in the cat's quarter, for "espresso" in the coffee's quarter."""
    import cv2

    from cvtool.explain.attribution import gradcam
    from cvtool.io.decode import decode_image

    def quarter(name):
        rgb = clf.preprocess(decode_image(str(samples / name)).rgb)
        return cv2.resize(rgb, (112, 112), interpolation=cv2.INTER_AREA)

    collage = np.full((224, 224, 3), 128, np.uint8)
    collage[:112, :112] = quarter("cat.jpg")
    collage[112:, 112:] = quarter("coffee.jpg")
    x = clf.to_tensor(collage)
    for target, (r, c) in ((TIGER_CAT, (0, 0)), (967, (1, 1))):
        heat = gradcam(clf, x, target).heat
        means = {(i, j): heat[i * 112:(i + 1) * 112, j * 112:(j + 1) * 112].mean()
                 for i in (0, 1) for j in (0, 1)}
        assert max(means, key=means.get) == (r, c)
        assert means[(r, c)] > 2 * max(v for k, v in means.items() if k != (r, c))


def test_guided_backprop_restores_the_network(clf, cat):
    from torch import nn

    from cvtool.explain.attribution import guided_backprop

    before = [type(m) for m in clf.net.modules()]
    info = guided_backprop(clf, cat[1], TIGER_CAT).info
    assert info["relus_guided"] > 10
    assert [type(m) for m in clf.net.modules()] == before
    assert any(isinstance(m, nn.ReLU6) for m in clf.net.modules())


def test_gradcam_command_writes_overlay_and_array(cli, samples, tmp_path):
    res = cli("visualize", "gradcam", samples / "cat.jpg", samples / "coffee.jpg", "--save", tmp_path / "v")
    assert res.exit_code == 0, res.output
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [True, True]
    cat = recs[0]
    assert cat["method"] == "gradcam" and cat["layer"] == "_act_head"
    assert cat["target"]["class_id"] == cat["prediction"]["class_id"] == TIGER_CAT
    import cv2

    pic = cv2.imread(cat["saved"]["picture"])
    assert pic.shape[:2] == (cat["image_size"]["height"], cat["image_size"]["width"])
    arr = np.load(cat["saved"]["array"])
    assert arr.shape == (224, 224) and arr.dtype == np.float32 and arr.max() > 0
    # The peak lies on the cat's face: the box around its eyes (~(175, 115) and (320, 135)) and
    # nose (~(265, 240)), marked by hand on sample_images/cat.jpg (451×300); the crop the network
    # sees is x 94–356, y 19–281, so the box also excludes the crop's edges.
    assert 120 <= cat["peak"]["x"] <= 350 and 70 <= cat["peak"]["y"] <= 290, cat["peak"]


def test_target_by_name_and_errors(cli, samples, tmp_path):
    res = cli("visualize", "saliency", samples / "cat.jpg", "--target", "Persian cat", "--save", tmp_path / "a")
    assert res.exit_code == 0
    assert jsonl(res.stdout)[0]["target"]["label"] == "Persian cat"
    res = cli("visualize", "saliency", samples / "cat.jpg", "--target", "cat", "--save", tmp_path / "b")
    assert res.exit_code == 2 and "matches several classes" in res.stderr and "Traceback" not in res.output
    res = cli("visualize", "gradcam", samples / "cat.jpg", "--layer", "_block.15", "--save", tmp_path / "c")
    assert res.exit_code == 2 and "_blocks.15" in res.stderr
    res = cli("visualize", "gradcam", samples / "cat.jpg", "--layer", "_fc", "--save", tmp_path / "fc")
    assert res.exit_code == 1 and "feature map" in res.stderr
    res = cli("visualize", "saliancy", samples / "cat.jpg")
    assert res.exit_code == 2 and "saliency" in res.stderr


def test_bad_inputs_get_records_and_the_batch_goes_on(cli, samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = cli("visualize", "saliency", bad, tmp_path / "missing.png", samples / "flower.jpg",
              "--save", tmp_path / "out")
    assert res.exit_code == 1
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [False, False, True]
    assert "missing.png" in recs[1]["source"] and recs[1]["error"]
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 3


def test_existing_files_are_kept_unless_overwrite(cli, samples, tmp_path):
    args = ("visualize", "saliency", samples / "cat.jpg", "--save", tmp_path)
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 2 and "already holds files" in again.stderr and not again.stdout
    assert cli(*args, "--overwrite").exit_code == 0


def test_layers_filters_activations(cli, samples, tmp_path):
    res = cli("visualize", "layers", "-f", "jsonl")
    rows = jsonl(res.stdout)
    names = [r["name"] for r in rows]
    assert "_conv_stem" in names and "_act_head" in names and "_fc" in names
    assert rows[names.index("_act_head")]["shape"] == [1, 1280, 7, 7]

    res = cli("visualize", "filters", "--save", tmp_path / "filters")
    rec = jsonl(res.stdout)[0]
    assert res.exit_code == 0 and rec["layer"] == "_conv_stem" and rec["filters"] == 32
    assert np.load(rec["saved"]["array"]).shape == (32, 3, 3, 3)

    res = cli("visualize", "activations", samples / "cat.jpg", "--layer", "_blocks.10", "--top", "8",
              "--save", tmp_path / "activations")
    rec = jsonl(res.stdout)[0]
    assert res.exit_code == 0 and len(rec["top_channels"]) == 8
    maps = np.load(rec["saved"]["array"])
    assert maps.ndim == 3 and maps.shape[0] == rec["channels"]
    means = [t["mean"] for t in rec["top_channels"]]
    assert means == sorted(means, reverse=True)
    assert cli("visualize", "activations", samples / "cat.jpg").exit_code == 2  # needs --layer
    assert cli("visualize", "filters", samples / "cat.jpg").exit_code == 2  # takes no inputs


def test_occlusion_finds_the_covered_object(clf):
    """A synthetic check whose answer is known: a white square on black, for a model whose
    score is the brightness of the top-left quadrant, must light up only that quadrant."""
    import torch

    from cvtool.explain.attribution import occlusion

    class Quadrant:
        def __call__(self, x):
            s = x[:, :, :32, :32].mean(dim=(1, 2, 3)) * 20
            return torch.stack([s, -s], dim=1)

    x = torch.zeros(1, 3, 64, 64)
    x[:, :, 8:24, 8:24] = 1.0
    a = occlusion(Quadrant(), x, 0, window=8, stride=8, fill=0.0)
    assert a.heat[8:24, 8:24].min() > 0.5
    assert a.heat[32:, :].max() == 0 and a.heat[:, 32:].max() == 0


def test_synthesis_commands(cli, samples, tmp_path):
    """The CLI side of class-model, deepdream, invert and style (the methods themselves are
    tested in test_explain_synthesis.py): records, files, sizes, usage errors."""
    res = cli("visualize", "class-model", "--target", "goldfinch", "--steps", "40", "--save", tmp_path / "class-model")
    assert res.exit_code == 0, res.output
    rec = jsonl(res.stdout)[0]
    assert rec["target"]["label"] == "goldfinch"
    assert rec["target_score_end"] > rec["target_score_start"] + 0.3
    assert np.load(rec["saved"]["array"]).shape == (224, 224, 3)

    res = cli("visualize", "deepdream", samples / "cat.jpg", "--steps", "2", "--octaves", "2",
              "--max-size", "160", "--save", tmp_path / "deepdream")
    rec = jsonl(res.stdout)[0]
    assert res.exit_code == 0 and rec["layer"] and max(rec["size"]) == 160

    res = cli("visualize", "style", "--content", samples / "cat.jpg", "--style", samples / "flower.jpg",
              "--steps", "5", "--max-size", "96", "--save", tmp_path / "style")
    rec = jsonl(res.stdout)[0]
    assert res.exit_code == 0 and rec["style_loss_end"] < rec["style_loss_start"]

    assert cli("visualize", "class-model", "--save", tmp_path / "none").exit_code == 2  # needs --target
    assert cli("visualize", "style", "--content", samples / "cat.jpg").exit_code == 2
    res = cli("visualize", "style", "--content", tmp_path / "nope.jpg", "--style", samples / "flower.jpg",
              "--save", tmp_path / "nope")
    assert res.exit_code == 1 and "nope.jpg" in res.stderr and "Traceback" not in res.output


def test_two_targets_for_one_picture_write_two_files_and_name_their_target(cli, samples, tmp_path):
    res = cli("visualize", "saliency", samples / "cat.jpg", "--target", "tiger cat", "--target", "Persian cat",
              "--save", tmp_path / "maps")
    assert res.exit_code == 0, res.output
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [True, True]
    assert [r["target"]["label"] for r in recs] == ["tiger cat", "Persian cat"]
    pictures = [r["saved"]["picture"] for r in recs]
    assert pictures == [str(tmp_path / "maps" / "cat_saliency_tiger_cat.png"),
                        str(tmp_path / "maps" / "cat_saliency_Persian_cat.png")]
    assert all(Path(p).is_file() for p in pictures)
    assert cli("visualize", "activations", samples / "cat.jpg", "--layer", "_blocks.5", "-t", "1", "-t", "2",
               "--save", tmp_path / "act").exit_code == 2  # one target at most where it is no attribution
