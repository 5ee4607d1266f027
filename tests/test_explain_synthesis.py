"""Synthesis by gradient ascent (cvtool.explain.synthesis) on the real bundled EfficientNet-Lite0 and
the sample photos: every method must move its own objective by a clear margin from its start,
measured here independently of the numbers the method reports, on the saved 8-bit picture."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from cvtool.explain import synthesis as S
from cvtool.explain.layers import LayerError, capture

INVERT_LAYER = "_blocks.5._act0"  # 28×28 at 224 px: 1/8 of the input


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine torch's default two threads spin against the
    other processes and run these small problems 10–50× slower; the results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clf():
    from cvtool.models.differentiable import load_classifier

    return load_classifier("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def photos(samples):
    from cvtool.io.decode import decode_image

    return {n: decode_image(str(samples / f"{n}.jpg")).rgb for n in ("cat", "coffee", "flower")}


def _features(clf, x, layer):
    with capture(clf.net, layer) as store, torch.no_grad():
        clf(x)
    return store["out"].float()


def _rel(a, b):
    return float((a - b).pow(2).sum() / b.pow(2).sum())


def _check_picture(res, shape):
    assert res.image.dtype == np.uint8 and res.image.shape == shape
    assert res.array is not None and res.array.dtype == np.float32 and res.array.shape == shape
    assert np.isfinite(res.array).all() and res.array.min() >= 0 and res.array.max() <= 1
    assert np.abs(res.array * 255 - res.image).max() <= 0.5 + 1e-3
    json.dumps(res.info, allow_nan=False)  # the record is plain JSON


def test_class_model_makes_the_target_the_top_class(clf):
    target = clf.target_index("goldfinch")
    calls = []
    res = S.class_model(clf, target, steps=50, size=128, progress=lambda i, n: calls.append((i, n)))
    _check_picture(res, (128, 128, 3))
    assert calls == [(i, 50) for i in range(1, 51)]
    # measured here, on the 8-bit picture that would be saved
    p = clf.probs(clf.to_tensor(res.image))[0]
    assert int(p.argmax()) == target
    assert res.info["target_score_start"] < 0.05
    assert float(p[target]) > res.info["target_score_start"] + 0.5
    assert res.info["target_score_end"] == pytest.approx(float(p[target]), abs=1e-4)
    assert res.info["target_logit_end"] > res.info["target_logit_start"] + 5
    assert res.info["top"]["class_id"] == target and res.info["steps"] == 50


def test_class_model_is_deterministic_under_a_seed(clf):
    a = S.class_model(clf, 1, steps=4, size=64, seed=3)
    b = S.class_model(clf, 1, steps=4, size=64, seed=3)
    c = S.class_model(clf, 1, steps=4, size=64, seed=4)
    assert np.array_equal(a.array, b.array) and a.info == b.info
    assert not np.array_equal(a.array, c.array)
    with pytest.raises(ValueError):
        S.class_model(clf, 1000, steps=1, size=64)


def test_deepdream_amplifies_the_layer(clf, photos):
    layer = S.default_layer(clf, "deepdream")
    res = S.deepdream(clf, photos["cat"], layer, octaves=2, steps=10, max_size=224)
    _check_picture(res, (149, 224, 3))  # cat.jpg is 451×300: longer side to 224
    assert res.info["layer"] == layer and res.info["size"] == [224, 149] and res.info["steps"] == 20
    small = cv2.resize(photos["cat"], (224, 149), interpolation=cv2.INTER_AREA)
    base = clf.to_tensor(small)
    before = float(_features(clf, base, layer).pow(2).mean().sqrt())
    after = float(_features(clf, clf.to_tensor(res.image), layer).pow(2).mean().sqrt())
    assert after > 1.25 * before
    assert res.info["activation_end"] == pytest.approx(after, rel=1e-3)
    assert res.info["activation_start"] == pytest.approx(before, rel=0.02)
    # still the same photo underneath: amplified, not replaced
    assert np.abs(res.image.astype(int) - small).mean() < 40
    # and deterministic
    again = S.deepdream(clf, photos["cat"], layer, octaves=2, steps=10, max_size=224)
    assert np.array_equal(res.image, again.image)


def test_invert_reconstructs_the_features_of_its_source(clf, photos):
    res = S.invert(clf, photos["cat"], INVERT_LAYER, steps=40)
    _check_picture(res, (224, 224, 3))
    info = res.info
    assert info["feature_loss_end"] < 0.5 * info["feature_loss_start"]
    got = _features(clf, clf.to_tensor(res.image), INVERT_LAYER)
    cat = _features(clf, clf.prepare(photos["cat"]), INVERT_LAYER)
    coffee = _features(clf, clf.prepare(photos["coffee"]), INVERT_LAYER)
    assert _rel(got, cat) == pytest.approx(info["feature_loss_end"], rel=1e-3)
    assert _rel(got, cat) < 0.5 * _rel(got, coffee)
    # the picture itself resembles the cat more than the coffee cup, though it never saw the pixels
    img = res.image.astype(float)
    to_cat = np.abs(img - clf.preprocess(photos["cat"])).mean()
    assert to_cat < np.abs(img - clf.preprocess(photos["coffee"])).mean()


def test_style_transfer_matches_the_style_and_keeps_the_working_size(clf, photos):
    res = S.style_transfer(clf, photos["cat"], photos["flower"], steps=25, max_size=96)
    _check_picture(res, (64, 96, 3))  # 451×300 → 96×64
    info = res.info
    assert info["size"] == [96, 64]
    style_layers, content_layer = S.default_style_layers(clf)
    assert info["style_layers"] == style_layers and info["content_layer"] == content_layer
    assert info["style_loss_end"] < 0.5 * info["style_loss_start"]
    assert info["content_loss_start"] == 0 and 0 < info["content_loss_end"] < 1
    # independently: the first style layer's Gram matrix moved towards the style picture's
    layer = style_layers[0]

    def gram(rgb):
        f = _features(clf, clf.to_tensor(rgb), layer)[0].flatten(1)
        return f @ f.t() / f.shape[1]

    style = gram(cv2.resize(photos["flower"], (96, 64), interpolation=cv2.INTER_AREA))
    content = gram(cv2.resize(photos["cat"], (96, 64), interpolation=cv2.INTER_AREA))
    assert _rel(gram(res.image), style) < 0.5 * _rel(content, style)


def test_bad_layer_names_raise_with_a_suggestion(clf, photos):
    with pytest.raises(LayerError, match=r"Did you mean .*_blocks\.5\._act0"):
        S.invert(clf, photos["cat"], "_blocks.5._act", steps=1)
    with pytest.raises(LayerError, match="Did you mean"):
        S.deepdream(clf, photos["cat"], "_block.11", steps=1, octaves=1, max_size=64)
    with pytest.raises(LayerError, match="_act_stem"):
        S.style_transfer(clf, photos["cat"], photos["flower"], style_layers=["_act_stemm"], steps=1,
                         max_size=64)
    with pytest.raises(LayerError, match="forward pass"):
        # a ModuleList: a name that exists but is never called
        S.deepdream(clf, photos["cat"], "_blocks", steps=1, octaves=1, max_size=64)


# --- other architectures: layer choice and shared modules, on torchvision nets with random weights


def _random_classifier(builder, size=64):
    from cvtool.models.differentiable import GradClassifier
    from cvtool.models.loader import LoadedModel
    from cvtool.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
    from cvtool.models.wrap import Normalized

    torch.manual_seed(0)
    net = builder(num_classes=10)
    loaded = LoadedModel(name="random", task="classify", kind="checkpoint",
                         preprocess=Preprocess(resize=size, crop=size),
                         labels=tuple(f"c{i}" for i in range(10)),
                         weights_sha256="", weights_origin="test",
                         _module=Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval())
    return GradClassifier(loaded, device="cpu")


def test_default_layers_follow_gatys_on_vgg_and_resnet():
    from torchvision.models import resnet18, vgg11

    vgg = _random_classifier(vgg11)
    assert S.default_style_layers(vgg) == (
        ["features.1", "features.4", "features.7", "features.12", "features.17"], "features.14")
    res = _random_classifier(resnet18)
    assert S.default_style_layers(res) == (
        ["relu", "layer1.0.relu", "layer2.0.relu", "layer3.0.relu"], "layer2.1.relu")
    assert S.default_layer(res, "invert") == "layer2.1.relu"
    assert S.default_layer(res, "deepdream") == "layer3.1.relu"


def test_style_transfer_on_a_resnet_with_shared_activations(photos):
    """ResNet blocks call one ReLU module twice: the tap (which stops the forward pass early) must
    take the same, last, output as a full pass does."""
    clf = _random_classifier(__import__("torchvision.models", fromlist=["resnet18"]).resnet18)
    x = clf.to_tensor(cv2.resize(photos["cat"], (64, 64)))
    with S._Tap(clf, ["layer1.0.relu", "layer2.1.relu"]) as tap, torch.no_grad():
        first, second = tap(x), tap(x)  # the first pass runs in full, the second stops early
    for name in first:
        assert torch.equal(first[name], second[name])
        assert torch.equal(second[name], _features(clf, x, name))
    res = S.style_transfer(clf, photos["cat"], photos["flower"], steps=8, max_size=64)
    assert res.image.shape == (43, 64, 3)
    assert res.info["style_loss_end"] < res.info["style_loss_start"]


def test_a_non_finite_loss_stops_cleanly():
    class NaNNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)) * float("nan"))

    clf = _random_classifier(lambda num_classes: NaNNet(), size=32)
    res = S.class_model(clf, 3, steps=5)
    assert "stopped early" in res.info["warning"] and res.info["steps"] == 0
    assert np.isfinite(res.array).all()
    json.dumps(res.info, allow_nan=False)
