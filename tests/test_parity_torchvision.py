"""cvtool feeds torchvision's models what their own reference pipelines feed them, and gets
their answers: compared with ``weights.transforms()`` and the detectors' own
``GeneralizedRCNNTransform`` on real photos of several shapes, then end to end with the same
(random, locally built, torchvision-format) weights on both backends.

Tolerances, in grey levels of the uint8 network input (what both backends receive):

* antialiased resizes (classifiers, semantic segmenters) against torchvision's PIL path, which
  is Pillow's resampling, the filter cvtool uses: max |Δ| ≤ 1 (Pillow's fixed-point rounding of
  a few pixels), mean |Δ| ≤ 0.01;
* the same against torchvision's tensor path (``F.resize(antialias=True)`` on a uint8 tensor):
  no further from it than torchvision's own PIL path is (bilinear: max 1, mean ≈ 0.2; bicubic:
  the two reference paths themselves differ by up to 7 on sharp edges), and mean |Δ| ≤ 0.25;
* resizes without antialiasing (R-CNN family, SSD, EfficientNet-Lite0) against the float
  reference: max |Δ| ≤ 0.8 and mean ≤ 0.3: the uint8 rounding of the network input (0.5) plus
  OpenCV's 11-bit fixed-point interpolation weights (measured: at most 0.76).

End to end, the classifier's top-5 classes and scores, the segmenter's argmax at the picture's
resolution and the detectors' boxes and scores must agree; detectors are compared on pictures
whose reference resize gives whole grey levels (no resize, or an exact 1/2 of a picture made of
2×2 blocks), because a random-weight detector's proposals tie and reorder under the 0.5-level
rounding that any uint8 input implies (shown by the reference itself against its own rounded input).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import jsonl

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _weights_enum(name: str, filename: str):
    """torchvision's Weights entry whose URL is the registry's file (no download)."""
    for w in torchvision.models.get_model_weights(name):
        if w.url.endswith(filename):
            return w
    raise LookupError(f"{name}: no torchvision weights named {filename}")


def _spec(name):
    from cvtool.models.registry import get

    return get(name)


@pytest.fixture(scope="module")
def photos(samples, tmp_path_factory):
    """name → (path, RGB as cvtool decodes it): landscape, portrait, square, tiny, large."""
    from PIL import Image

    from cvtool.io.decode import decode_image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    china = Image.open(samples / "china.jpg").convert("RGB")
    rocket = np.asarray(Image.open(samples / "rocket.jpg").convert("RGB").resize((3000, 2000), Image.BICUBIC))
    busy = np.clip(rocket.astype(int) + rng.integers(-40, 40, rocket.shape), 0, 255).astype(np.uint8)
    Image.fromarray(busy).save(d / "large.jpg", quality=92)  # 3000x2000 with fine detail
    china.transpose(Image.Transpose.TRANSPOSE).save(d / "portrait.png")  # 427x640
    Image.open(samples / "cat.jpg").convert("RGB").crop((150, 100, 240, 160)).save(d / "tiny.png")  # 90x60
    paths = {"landscape": samples / "cat.jpg", "square": samples / "astronaut.jpg",
             "portrait": d / "portrait.png", "tiny": d / "tiny.png", "large": d / "large.jpg"}
    return {k: (p, decode_image(str(p)).rgb) for k, p in paths.items()}


def _grey(t):
    """torchvision's normalised float (3, H, W) → grey levels (H, W, 3), un-normalised."""
    return t.permute(1, 2, 0).double().numpy()


def _unnormalise(x, mean, std):
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    return _grey((x.double() * s + m) * 255.0)


# -- classifiers: network input -------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_small", "efficientnet_b0"])
def test_classifier_input_equals_weights_transforms(name, photos):
    from PIL import Image

    spec = _spec(name)
    pre = spec.weights.preprocess
    tf = _weights_enum(name, spec.weights.filename).transforms()
    assert (tf.resize_size, tf.crop_size) == ([pre.resize], [pre.crop])
    assert tf.interpolation.value == pre.interpolation and tf.antialias and pre.antialias
    assert tuple(tf.mean) == pre.mean and tuple(tf.std) == pre.std
    for key, (path, rgb) in photos.items():
        ours = pre(rgb).astype(np.float64)
        ref_pil = _unnormalise(tf(Image.fromarray(rgb)), pre.mean, pre.std)
        ref_ten = _unnormalise(tf(torch.from_numpy(rgb.copy()).permute(2, 0, 1)), pre.mean, pre.std)
        assert ours.shape == ref_pil.shape == (224, 224, 3)
        d_pil, d_ten = np.abs(ours - ref_pil), np.abs(ours - ref_ten)
        own = np.abs(ref_pil - ref_ten).max()  # torchvision's two paths against each other
        assert d_pil.max() <= 1 + 1e-3 and d_pil.mean() <= 0.01, (key, d_pil.max(), d_pil.mean())
        assert d_ten.max() <= max(1.0, own) + 1e-3 and d_ten.mean() <= 0.25, (key, d_ten.max(), d_ten.mean())


def test_lite0_input_is_a_bilinear_resize_without_antialiasing(photos):
    """EfficientNet-Lite0's reference (TensorFlow's evaluation: centre 224/256 of the shorter
    side, bilinear resize without antialiasing) written with torchvision's functional ops on
    float pixels: ``F.resize(antialias=False)`` to a shorter side of 256, ``F.center_crop(224)``.
    Within 0.8 grey level (see the module docstring)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    pre = _spec("efficientnet_lite0").weights.preprocess
    assert (pre.resize, pre.crop, pre.interpolation, pre.antialias) == (256, 224, "bilinear", False)
    for key, (path, rgb) in photos.items():
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).double()
        ref = F.center_crop(F.resize(x, [256], InterpolationMode.BILINEAR, antialias=False), [224])
        d = np.abs(pre(rgb).astype(np.float64) - _grey(ref))
        assert d.max() <= 0.8 and d.mean() <= 0.3, (key, d.max(), d.mean())


def test_normalisation_inside_the_model_equals_the_transform(photos):
    """The uint8 input through cvtool's Normalized wrapper is the transform's float tensor."""
    from PIL import Image

    from cvtool.models.wrap import Normalized

    spec = _spec("resnet50")
    pre = spec.weights.preprocess
    tf = _weights_enum("resnet50", spec.weights.filename).transforms()
    seen = {}
    wrapper = Normalized(lambda x: seen.setdefault("x", x), pre.mean, pre.std)
    _, rgb = photos["landscape"]
    wrapper(torch.from_numpy(pre(rgb))[None])
    ref = tf(Image.fromarray(rgb))
    # one grey level of disagreement (see above) is at most 1/255/std in normalised units
    diff = (seen["x"][0] - ref).abs()
    assert float(diff.max()) <= 1 / 255 / min(pre.std) + 1e-5 and float(diff.mean()) < 1e-3


# -- classifiers: end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def mnv3(tmp_path_factory):
    """mobilenet_v3_small with random weights: convolutions redrawn variance-preserving (gain
    2; torchvision's init lets the features vanish through eval-mode batch norms, which makes
    every class tie at 1/1000) and the last layer spread (std 0.5)."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5)
        net.classifier[-1].weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("w") / "mnv3.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_classify_top5_equals_the_reference_pipeline(backend, mnv3, photos, cli):
    from PIL import Image

    net, path = mnv3
    spec = _spec("mobilenet_v3_small")
    tf = _weights_enum("mobilenet_v3_small", spec.weights.filename).transforms()
    keys = list(photos)
    res = cli("classify", *[photos[k][0] for k in keys], "--model", "mobilenet_v3_small", "--weights", path,
              "--backend", backend, "--topk", "5", "-q")
    assert res.exit_code == 0, res.stderr
    for key, rec in zip(keys, jsonl(res.stdout)):
        with Image.open(photos[key][0]) as im, torch.no_grad():
            probs = net(tf(im.convert("RGB"))[None]).softmax(1)[0].double()
        top = probs.topk(5)
        assert [t["class_id"] for t in rec["topk"]] == top.indices.tolist(), key
        assert np.allclose([t["score"] for t in rec["topk"]], top.values.numpy(), atol=2e-4), key


# -- semantic segmenters --------------------------------------------------------------------

def test_segmenter_input_equals_weights_transforms(photos):
    from PIL import Image

    spec = _spec("lraspp_mobilenet_v3_large")
    pre = spec.weights.preprocess
    tf = _weights_enum("lraspp_mobilenet_v3_large", spec.weights.filename).transforms()
    assert tf.resize_size == [pre.resize] and tf.antialias and pre.kind == "shorter"
    for key, (path, rgb) in photos.items():
        ours = pre(rgb).astype(np.float64)
        ref = _unnormalise(tf(Image.fromarray(rgb)), pre.mean, pre.std)
        assert ours.shape == ref.shape, key  # e.g. 451x300 → 780x520, 90x60 → 780x520
        d = np.abs(ours - ref)
        assert d.max() <= 1 + 1e-3 and d.mean() <= 0.01, (key, d.max(), d.mean())


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory):
    """LR-ASPP with random weights, classifier redrawn so the masks hold several classes."""
    from conftest import random_lraspp

    net = random_lraspp()
    path = tmp_path_factory.mktemp("w") / "lraspp.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_segment_argmax_equals_the_reference_pipeline(backend, lraspp, photos):
    """Reference: the model on ``weights.transforms()``, logits resized to the picture
    (bilinear, as torchvision's evaluation does), argmax. ≥ 99.5% of pixels agree (the rest sit
    where two classes' upsampled logits nearly tie; the inputs differ by ≤ 1 grey level)."""
    import torch.nn.functional as F
    from PIL import Image

    from cvtool.io.masks import MASK_KEY
    from cvtool.io.sources import expand
    from cvtool.models.loader import load
    from cvtool.tasks.base import RunOptions, make_runner, run
    from cvtool.tasks.segment import SemanticSegmenter

    net, path = lraspp
    name = "lraspp_mobilenet_v3_large"
    tf = _weights_enum(name, _spec(name).weights.filename).transforms()
    keys = ["landscape", "portrait", "square", "tiny"]
    model = load(name, str(path), task="segment")
    runner = make_runner(model, backend=backend, notify=lambda m: None)
    post = SemanticSegmenter(model, keep_masks=True)
    out = list(run("segment", model, runner, expand([str(photos[k][0]) for k in keys]), post, RunOptions(batch=4)))
    assert [r.backend for r, _ in out] == [runner.backend] * len(keys)
    for key, (rec, frame) in zip(keys, out):
        with Image.open(photos[key][0]) as im, torch.no_grad():
            rgb = im.convert("RGB")
            logits = net(tf(rgb)[None])["out"]
            ref = F.interpolate(logits, size=(rgb.height, rgb.width), mode="bilinear",
                                align_corners=False).argmax(1)[0].numpy()
        ours = frame.meta[MASK_KEY]
        assert ours.shape == ref.shape
        agree = float((ours == ref).mean())
        assert agree >= 0.995, (key, agree)
        assert len(np.unique(ref)) > 1  # the check means something


# -- detectors: network input ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn_v2",
                                  "ssdlite320_mobilenet_v3_large", "ssd300_vgg16"])
def test_detector_input_equals_its_own_transform(name, photos):
    """cvtool resizes as the model's GeneralizedRCNNTransform does (then tells it not to):
    the same size, and pixels within 0.8 grey level of the transform's float output."""
    from cvtool.models.registry import get

    spec = get(name)
    pre = spec.weights.preprocess
    net = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval()
    t = net.transform
    for key, (path, rgb) in photos.items():
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            images, _ = t([x])
        h, w = images.image_sizes[0]
        ref = _unnormalise(images.tensors[0, :, :h, :w], t.image_mean, t.image_std)
        ours = pre(rgb).astype(np.float64)
        assert ours.shape == ref.shape, (key, ours.shape, ref.shape)
        d = np.abs(ours - ref)
        assert d.max() <= 0.8 and d.mean() <= 0.3, (key, d.max(), d.mean())


# -- detectors: end to end ------------------------------------------------------------------

@pytest.fixture(scope="module")
def exact_pictures(samples, tmp_path_factory):
    """Pictures on which the reference resize gives whole grey levels: 1199x800 (the R-CNN
    transform leaves it as it is) and 2400x1600 made of 2x2 blocks (it halves it exactly), and
    640x640 of 2x2 blocks for SSDlite320 (stretched to exactly half)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("exact")
    Image.open(samples / "china.jpg").convert("RGB").resize((1199, 800), Image.BICUBIC).save(d / "china800.png")
    coffee = Image.open(samples / "coffee.jpg").convert("RGB").resize((1200, 800), Image.BICUBIC)
    coffee.resize((2400, 1600), Image.NEAREST).save(d / "coffee_blocks.png")
    astro = Image.open(samples / "astronaut.jpg").convert("RGB").resize((320, 320), Image.BICUBIC)
    astro.resize((640, 640), Image.NEAREST).save(d / "astro_blocks.png")
    return d


def _random_detector(name: str, tmp_path, cls_std: float = 1.0):
    """A torchvision detector with random weights whose features carry the picture (backbone
    convolutions redrawn variance-preserving, gain 1.5; torchvision's own init lets them vanish
    through frozen batch norms) and whose class logits are spread (std ``cls_std``)."""
    torch.manual_seed(0)
    net = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        for mod in net.backbone.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0, (1.5 / mod.weight[0].numel()) ** 0.5)
        for n, p in net.named_parameters():
            if ("cls_score" in n or "cls_logits" in n or "classification_head" in n) and p.dim() >= 2:
                p.normal_(0, cls_std)
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.parametrize("name,pictures", [
    ("fasterrcnn_mobilenet_v3_large_fpn", ["china800.png", "coffee_blocks.png"]),
    ("ssdlite320_mobilenet_v3_large", ["astro_blocks.png"]),
])
def test_detect_boxes_equal_the_reference_pipeline(name, pictures, exact_pictures, cli, tmp_path):
    """The model on the whole picture (its own transform resizes) vs cvtool's records: every
    one of the reference's 20 best detections has a cvtool detection of the same class with
    IoU ≥ 0.99 and the same score (±1e-4, records round to 5 decimals)."""
    from PIL import Image

    from cvtool.tasks.detect import iou_matrix

    net, path = _random_detector(name, tmp_path)
    conf, iou = 0.05, 0.5
    holder = getattr(net, "roi_heads", net)
    holder.score_thresh, holder.nms_thresh, holder.detections_per_img = conf, iou, 100
    files = [exact_pictures / p for p in pictures]
    res = cli("detect", *files, "--model", name, "--weights", path, "--conf", str(conf), "--iou", str(iou),
              "--max-det", "100", "-q")
    assert res.exit_code == 0, res.stderr
    for f, rec in zip(files, jsonl(res.stdout)):
        with Image.open(f) as im, torch.no_grad():
            x = torchvision.transforms.functional.pil_to_tensor(im.convert("RGB")).float() / 255
            ref = net([x])[0]
        rb, rs, rl = ref["boxes"].numpy()[:20], ref["scores"].numpy()[:20], ref["labels"].numpy()[:20]
        assert len(rb) >= 5, "the random detector should find something"
        ob = np.array([d["box"] for d in rec["detections"]])
        os_ = np.array([d["score"] for d in rec["detections"]])
        ol = np.array([d["class_id"] for d in rec["detections"]])
        m = iou_matrix(rb.astype(np.float64), ob)
        for i in range(len(rb)):
            ok = (m[i] >= 0.99) & (ol == rl[i]) & (np.abs(os_ - rs[i]) <= 1e-4)
            assert ok.any(), (f.name, i, rb[i], rs[i], m[i].max())


# -- the network input never depends on output options ---------------------------------------

@pytest.fixture(scope="module")
def big_photo(samples, tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("big")
    Image.open(samples / "astronaut.jpg").convert("RGB").resize((2048, 2048), Image.BICUBIC).save(
        d / "big.jpg", quality=90)
    return d / "big.jpg"


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            if k not in ("time_ms",):
                assert x[k] == y.get(k), k


def test_records_do_not_depend_on_output_options(big_photo, lraspp, cli, tmp_path):
    import json

    from cvtool.io.masks import encode_index_png

    # classify (bundled EfficientNet-Lite0)
    plain = jsonl(cli("classify", big_photo, "-q").stdout)
    for extra in (["--save", tmp_path / "c_save"], ["--output", tmp_path / "c.jsonl"]):
        res = cli("classify", big_photo, "-q", *extra)
        assert res.exit_code == 0, res.stderr
        got = jsonl(res.stdout) if res.stdout.strip() else jsonl((tmp_path / "c.jsonl").read_text())
        _same(plain, got)
    # detect (bundled SSD-MobileNet-v2)
    base = ("detect", big_photo, "--conf", "0.2", "-q")
    plain = jsonl(cli(*base).stdout)
    assert plain[0]["count"] > 0
    gt = {"images": [{"id": 1, "file_name": big_photo.name, "width": 2048, "height": 2048}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 500, 900],
                           "area": 450000, "iscrowd": 0}], "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    for extra in (["--save", tmp_path / "d_save"], ["--save-crops", tmp_path / "crops"],
                  ["--eval", tmp_path / "gt.json"]):
        res = cli(*base, *extra)
        assert res.exit_code == 0, res.stderr
        _same(plain, jsonl(res.stdout))
    # segment (random LR-ASPP)
    _, path = lraspp
    base = ("segment", big_photo, "--model", "lraspp_mobilenet_v3_large", "--weights", path, "-q")
    plain = jsonl(cli(*base).stdout)
    gtdir = tmp_path / "segt"
    gtdir.mkdir()
    (gtdir / "big.png").write_bytes(encode_index_png(np.zeros((2048, 2048), np.uint8)))
    for extra in (["--save", tmp_path / "s_save"], ["--eval", gtdir]):
        res = cli(*base, *extra)
        assert res.exit_code == 0, res.stderr
        _same(plain, jsonl(res.stdout))


def test_preprocessing_written_before_kinds_existed_still_loads():
    """ONNX metadata and checkpoints written by earlier versions have no ``kind``: it follows
    from ``letterbox`` and ``resize`` as those versions meant them."""
    from cvtool.models.preprocess import Preprocess

    old = '{"crop": 520, "interpolation": "bilinear", "letterbox": true, "mean": [0.485, 0.456, 0.406], ' \
          '"resize": 0, "std": [0.229, 0.224, 0.225]}'
    p = Preprocess.from_json(old)
    assert (p.kind, p.letterbox, p.antialias, p.fixed_size) == ("letterbox", True, True, True)
    assert Preprocess.from_dict({"resize": 0, "crop": 300, "mean": [0] * 3, "std": [1] * 3}).kind == "stretch"
    q = Preprocess.from_dict({"resize": 256, "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert q.kind == "crop" and Preprocess.from_json(q.to_json()) == q
    r = Preprocess(kind="rcnn", resize=800, max_size=1333, crop=800, antialias=False)
    assert Preprocess.from_json(r.to_json()) == r and not r.fixed_size
