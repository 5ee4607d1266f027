"""Parity with the reference pipelines for the Hugging Face models (depth, caption).

The same tiny, randomly initialised weights (built here in the native format, with a
``preprocessor_config.json`` written by transformers' own processor class) go through cvtool
and through the reference: transformers' image processor for the network input, its
``pipeline("depth-estimation")`` for the depth map at the picture's size, ``generate`` on the
processor's ``pixel_values`` for caption tokens. Photos of several shapes: landscape, portrait,
square, tiny (20×13) and large (3000×2000, made by resizing a sample photo).

Bounds, and why:
* network input: transformers 5's default processors resize the ``uint8`` picture with
  torchvision (``antialias=True``) and cvtool calls the same function, so the resized pixels are
  identical; what remains is float32 rounding between ``(x/255 - mean)/std`` (cvtool, inside the
  model) and ``(x - 255·mean)/(255·std)`` (the processor): a few ulp of values up to ~2.7,
  bound 1e-5 (max) and 1e-6 (mean).
* depth map: torch path 1e-4 of the map's range (the network runs the same float32 operations;
  OpenCV's cubic resize back to the picture equals torch's bicubic within 1e-5 of the range);
  ONNX Runtime 1e-3 of the range (its kernels differ from torch's in float32 rounding; the same
  tolerance as `cvtool export`'s depth parity).
* caption: token ids equal, no tolerance.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

pytest.importorskip("transformers")

from test_caption import make_tiny_blip, make_tiny_vit_gpt2  # noqa: E402
from test_depth import DA_PROCESSOR, make_tiny_depth_anything  # noqa: E402

DEPTH = "depth_anything_v2_small"
INPUT_MAX, INPUT_MEAN = 1e-5, 1e-6


@pytest.fixture(scope="module")
def photos(samples, tmp_path_factory):
    """name → (path of a lossless PNG, its RGB pixels)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("shapes")
    cat = Image.open(samples / "cat.jpg").convert("RGB")  # 451x300
    made = {
        "landscape": cat,
        "portrait": Image.open(samples / "china.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_90),
        "square": Image.open(samples / "astronaut.jpg").convert("RGB"),  # 512x512
        "tiny": Image.open(samples / "coffee.jpg").convert("RGB").resize((20, 13), Image.Resampling.BICUBIC),
        "large": Image.open(samples / "flower.jpg").convert("RGB").resize((3000, 2000), Image.Resampling.BICUBIC),
    }
    out = {}
    for name, im in made.items():
        path = folder / f"{name}.png"
        im.save(path)
        out[name] = (path, np.asarray(im))
    return out


@pytest.fixture(scope="module")
def da(tmp_path_factory):
    return make_tiny_depth_anything(tmp_path_factory.mktemp("da") / "tiny")


def _network_input(loaded, rgb: np.ndarray) -> np.ndarray:
    """What cvtool's network really receives for ``rgb``: the pipeline's preprocessing, then
    the model wrapper, captured at the bare network's input ``(1, 3, H, W)``."""
    import torch

    module = loaded.torch_module()
    seen = []
    handle = module.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.inference_mode():
            module(torch.from_numpy(loaded.preprocess(rgb)[None]))
    finally:
        handle.remove()
    return seen[0].numpy()


def _compare_inputs(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    d = np.abs(got.astype(np.float64) - ref)
    assert d.max() <= INPUT_MAX and d.mean() <= INPUT_MEAN, (what, d.max(), d.mean())


# ---- depth: the network input -------------------------------------------------------------

def test_depth_anything_input_equals_the_processors_pixel_values(da, photos):
    """Aspect kept, shorter scale toward 518, sides multiples of 14 (451×300 → 518×350,
    3000×2000 → 784×518), bicubic with antialiasing, ImageNet mean/std: as DPTImageProcessor."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from cvtool.models.loader import load

    loaded = load(DEPTH, str(da), task="depth")
    assert loaded.preprocess.source == "preprocessor_config.json" and loaded.preprocess.note is None
    proc = AutoImageProcessor.from_pretrained(str(da))
    sizes = {}
    for name, (_, rgb) in photos.items():
        ref = proc(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"]
        got = _network_input(loaded, rgb)
        _compare_inputs(got, ref, name)
        sizes[name] = got.shape[3], got.shape[2]
    # hand-computed from the processor's rule (scale as little as possible, round to 14)
    assert sizes == {"landscape": (518, 350), "portrait": (350, 518), "square": (518, 518),
                     "tiny": (518, 336), "large": (784, 518)}
    assert loaded.preprocess.output_size(4032, 3024) == (686, 518)  # the example


def test_pil_backend_equals_the_pil_processor(photos):
    """The same settings with transformers' PIL processor (DPTImageProcessorPil) and cvtool's
    ``backend="pil"``: PIL does the resize on both sides, so the input is identical too."""
    from PIL import Image
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    from cvtool.models.hf_preprocess import HFPreprocess

    proc = DPTImageProcessorPil(**DA_PROCESSOR)
    pre = HFPreprocess.from_config(proc.to_dict(), backend="pil")
    mean, std = np.array(pre.mean, np.float32), np.array(pre.std, np.float32)
    for name, (_, rgb) in photos.items():
        ref = proc(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"]
        got = ((pre(rgb).astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
        _compare_inputs(got, ref, name)


def test_other_processor_settings_change_the_input_as_they_change_the_reference(da, photos, tmp_path):
    """A folder whose preprocessor_config.json asks for something else (a 280×280 stretch,
    bilinear, other mean/std and rescale factor; or padding to multiples of 32) changes
    cvtool's input exactly as it changes the processor's."""
    from PIL import Image
    from transformers import AutoImageProcessor, DPTImageProcessor

    from cvtool.models.loader import load

    other = tmp_path / "other"
    shutil.copytree(da, other)
    DPTImageProcessor(size={"height": 280, "width": 280}, keep_aspect_ratio=False, ensure_multiple_of=1,
                      resample=2, image_mean=[0.2, 0.3, 0.4], image_std=[0.5, 0.6, 0.7],
                      rescale_factor=1 / 127.5).save_pretrained(other)
    loaded = load(DEPTH, str(other), task="depth")
    proc = AutoImageProcessor.from_pretrained(str(other))
    for name, (_, rgb) in photos.items():
        ref = proc(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"]
        got = _network_input(loaded, rgb)
        assert got.shape == (1, 3, 280, 280)
        _compare_inputs(got, ref, name)

    # DPT's centre padding to a multiple of 32: the reference pads the *normalised* picture with
    # 0 (= the mean colour); cvtool pads the uint8 picture with the nearest whole colour, at most
    # half a grey level off: ≤ 0.5/255/std in the border, identical inside.
    padded = tmp_path / "padded"
    shutil.copytree(da, padded)
    DPTImageProcessor(**DA_PROCESSOR, do_pad=True, size_divisor=32).save_pretrained(padded)
    loaded = load(DEPTH, str(padded), task="depth")
    proc = AutoImageProcessor.from_pretrained(str(padded))
    border = 0.5 / 255 / min(DA_PROCESSOR["image_std"]) + INPUT_MAX
    for name, (_, rgb) in photos.items():
        ref = proc(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"]
        got = _network_input(loaded, rgb)
        assert got.shape == ref.shape and got.shape[2] % 32 == 0 and got.shape[3] % 32 == 0, name
        d = np.abs(got - ref)
        assert d.max() <= border, (name, d.max())
        h, w = loaded.preprocess.resized_size(rgb.shape[1], rgb.shape[0])[::-1]
        top, left = (got.shape[2] - h) // 2, (got.shape[3] - w) // 2
        assert d[..., top:top + h, left:left + w].max() <= INPUT_MAX, name


def test_a_folder_without_preprocessor_config_uses_the_fallback_and_says_so(cli, da, photos, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(da, bare)
    (bare / "preprocessor_config.json").unlink()
    res = cli("depth", photos["landscape"][0], "--weights", bare, "--backend", "torch")
    assert res.exit_code == 0
    notes = [line for line in res.stderr.splitlines() if "preprocessor_config.json" in line]
    assert len(notes) == 1 and "built-in" in notes[0]
    rec = jsonl(res.stdout)[0]
    assert rec["weights"]["preprocess"].startswith("built-in fallback")
    assert rec["weights"]["revision"] == "local folder (no revision)"
    # the fallback is the real repos' processor settings: the same network size
    assert rec["depth"]["network_size"] == {"width": 518, "height": 350}


# ---- depth: the map at the picture's size ---------------------------------------------------

@pytest.fixture(scope="module")
def reference_depth(da, photos):
    """transformers' depth-estimation pipeline on the same folder: predicted_depth resized back
    to each picture (its post_process_depth_estimation)."""
    from PIL import Image
    from transformers import pipeline

    pipe = pipeline("depth-estimation", model=str(da), device="cpu")
    return {name: pipe(Image.fromarray(rgb))["predicted_depth"].numpy() for name, (_, rgb) in photos.items()}


@pytest.mark.parametrize("backend,tol", [("torch", 1e-4), ("onnx", 1e-3)])
def test_depth_map_equals_the_reference_pipeline(cli, da, photos, reference_depth, backend, tol, tmp_path):
    paths = [photos[n][0] for n in photos]
    res = cli("depth", *paths, "--weights", da, "--backend", backend, "--save", tmp_path / "out", "--npy",
              "--batch", "4", "-q")
    assert res.exit_code == 0, res.stderr
    recs = {r["source"].rsplit("/", 1)[1][:-4]: r for r in jsonl(res.stdout)}
    for name, ref in reference_depth.items():
        got = np.load(recs[name]["npy"])
        assert got.shape == ref.shape == photos[name][1].shape[:2], name
        span = float(ref.max() - ref.min())
        assert np.abs(got - ref).max() / span <= tol, (name, np.abs(got - ref).max() / span)
        assert recs[name]["weights"]["preprocess"] == "preprocessor_config.json"
    # pictures of several network shapes in one window ran in one batch per shape
    assert recs["landscape"]["batch_size"] == 1 and recs["square"]["depth"]["network_size"] == {"width": 518, "height": 518}


def test_onnx_export_takes_every_shape(cli, da, photos, tmp_path):
    """`cvtool export` of a variable-size model: free height/width, parity on each photo, and
    the file runs the portrait and landscape photos at their own sizes."""
    out = tmp_path / "da.onnx"
    res = cli("export", DEPTH, "--weights", da, "-o", out)
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["input"] == ["batch", "height", "width", 3] and rep["parity"]["ok"]
    res = cli("depth", photos["portrait"][0], photos["landscape"][0], "--model", out, "-q")
    sizes = [r["depth"]["network_size"] for r in jsonl(res.stdout)]
    assert res.exit_code == 0 and sizes == [{"width": 350, "height": 518}, {"width": 518, "height": 350}]


# ---- caption --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def captioners(tmp_path_factory):
    root = tmp_path_factory.mktemp("cap")
    return {"blip_base": make_tiny_blip(root / "blip"), "vit_gpt2": make_tiny_vit_gpt2(root / "vitgpt2")}


OTHER_CAPTION_PROCESSOR = dict(resample=2, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.3, 0.4],
                               rescale_factor=1 / 127.5)


@pytest.mark.parametrize("name,other", [("blip_base", False), ("vit_gpt2", False), ("blip_base", True)])
def test_caption_input_and_tokens_equal_the_reference(captioners, photos, name, other, tmp_path):
    """BlipImageProcessor / ViTImageProcessor pixel_values = cvtool's encoder input, and
    ``model.generate(pixel_values=...)`` gives exactly cvtool's tokens (torch and ONNX encoder);
    also with non-default processor settings (bilinear, other mean/std and rescale factor)."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    from cvtool.models.loader import load
    from cvtool.tasks.caption import GenerationRunner

    folder = make_tiny_blip(tmp_path / "other", OTHER_CAPTION_PROCESSOR) if other else captioners[name]
    loaded = load(name, str(folder), task="caption")
    assert loaded.preprocess.source == "preprocessor_config.json"
    proc = AutoImageProcessor.from_pretrained(str(folder))
    runners = {b: GenerationRunner(loaded, b, "cpu", notify=lambda m: None) for b in ("torch", "auto")}
    net = runners["torch"].net
    for pname, (_, rgb) in photos.items():
        pixel_values = proc(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        x = loaded.preprocess(rgb)[None]
        norm = runners["torch"].torch_encoder
        got = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 * norm.scale + norm.shift).numpy()
        _compare_inputs(got, pixel_values.numpy(), f"{name} {pname}")
        with torch.inference_mode():
            ref = net.model.generate(pixel_values=pixel_values, max_new_tokens=6, num_beams=1, do_sample=False)
        ref = ref[0, 1:].tolist()  # BLIP's [DEC] / the decoder start token
        for backend, runner in runners.items():
            ours = runner(x, {"max_tokens": 6, "beams": 1, "prompt_ids": None})[0].tolist()
            n = min(len(ours), len(ref))
            assert ours[:n] == ref[:n] and n >= min(6, len(ref)), (name, pname, backend, ours, ref)


def test_caption_records_name_weights_and_preprocessing(cli, captioners, photos):
    res = cli("caption", photos["tiny"][0], photos["large"][0], "--model", "vit_gpt2", "--weights", captioners["vit_gpt2"],
              "--max-tokens", "4", "-q")
    assert res.exit_code == 0, res.stderr
    for r in jsonl(res.stdout):
        assert r["weights"] == {"hf_repo": "nlpconnect/vit-gpt2-image-captioning",
                                "revision": "local folder (no revision)",
                                "preprocess": "preprocessor_config.json"}


# ---- which weights ran: the Hugging Face revision -------------------------------------------

def test_revision_from_the_hub_cache_import_and_pin(da, photos, tmp_path):
    """A snapshot in Hugging Face's cache layout (models--org--name/snapshots/<commit>, refs/main)
    is found offline and its commit named; --revision pins it; an unknown one is refused;
    `models import` of the snapshot carries the commit along."""
    sha, other = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"
    hub = tmp_path / "hub"
    repo = hub / "models--depth-anything--Depth-Anything-V2-Small-hf"
    snap = repo / "snapshots" / sha
    shutil.copytree(da, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    env = {"CVTOOL_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(hub), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1"}
    pic = photos["tiny"][0]
    proc = run_cvtool("depth", pic, "--backend", "torch", "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    assert jsonl(proc.stdout)[0]["weights"]["revision"] == sha
    proc = run_cvtool("depth", pic, "--backend", "torch", "--revision", sha, "-q", env=env)
    assert proc.returncode == 0 and jsonl(proc.stdout)[0]["weights"]["revision"] == sha
    proc = run_cvtool("depth", pic, "--backend", "torch", "--revision", other, env=env)
    assert proc.returncode == 2 and f"at revision {other}" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cvtool("depth", pic, "--weights", da, "--revision", sha, env=env)
    assert proc.returncode == 2 and "local folder (no revision)" in proc.stderr
    info = json.loads(run_cvtool("models", "info", DEPTH, env=env).stdout)
    assert info["resolved"]["revision"] == sha and info["resolved"]["origin"] == "hf-cache"
    assert info["resolved"]["preprocess"]["from"] == "preprocessor_config.json"
    proc = run_cvtool("models", "import", DEPTH, snap, env=env)
    assert proc.returncode == 0, proc.stderr
    env2 = dict(env, HF_HUB_CACHE=str(tmp_path / "empty-hub"))
    proc = run_cvtool("depth", pic, "--backend", "torch", "-q", env=env2)
    assert proc.returncode == 0 and jsonl(proc.stdout)[0]["weights"]["revision"] == sha


# ---- DPT: a processor that keeps the aspect, on an architecture traced at one size ------------

def make_tiny_dpt(folder, processor: dict):
    """A 4-layer, 32-wide DPT (ViT, patch 16) with a DPTImageProcessor(**processor) config."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=64,
                    patch_size=16, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                    backbone_out_indices=[0, 1, 2, 3], reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1)
    torch.manual_seed(0)
    DPTForDepthEstimation(cfg).eval().save_pretrained(folder)
    DPTImageProcessor(**processor).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("backend,tol", [("torch", 1e-4), ("onnx", 1e-3)])
def test_dpt_stretch_equals_the_pipeline(cli, photos, tmp_path, backend, tol):
    """DPT (the ViT variant: transformers' own DPT takes square inputs only) with a stretching
    DPTImageProcessor config of another size than the fallback (128x128, bilinear, other
    mean/std): cvtool's map equals the reference pipeline's on both backends."""
    from PIL import Image
    from transformers import pipeline

    folder = make_tiny_dpt(tmp_path / "dpt", dict(size={"height": 128, "width": 128}, resample=2,
                                                  image_mean=[0.4, 0.5, 0.6], image_std=[0.3, 0.2, 0.25]))
    pick = ["landscape", "portrait", "tiny", "large"]
    res = cli("depth", *[photos[n][0] for n in pick], "--model", "dpt_large", "--weights", folder,
              "--backend", backend, "--save", tmp_path / "out", "--npy", "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert all(r["depth"]["network_size"] == {"width": 128, "height": 128} for r in recs)
    pipe = pipeline("depth-estimation", model=str(folder), device="cpu")
    for name, rec in zip(pick, recs):
        ref = pipe(Image.fromarray(photos[name][1]))["predicted_depth"].numpy()
        got = np.load(rec["npy"])
        assert got.shape == ref.shape and np.abs(got - ref).max() / float(ref.max() - ref.min()) <= tol, name


def test_dpt_with_a_size_per_picture_is_refused_on_onnx(cli, photos, tmp_path):
    """DPT's ONNX trace freezes its input size: a config that gives each picture its own size
    is refused on --backend onnx and by export, with the reason, before any work."""
    folder = make_tiny_dpt(tmp_path / "dpt", dict(size={"height": 384, "width": 384}, keep_aspect_ratio=True,
                                                  ensure_multiple_of=32))
    res = cli("depth", photos["tiny"][0], "--model", "dpt_large", "--weights", folder, "--backend", "onnx")
    assert res.exit_code == 2 and "only takes the size it was exported at" in res.stderr
    res = cli("export", "dpt_large", "--weights", folder, "-o", tmp_path / "dpt.onnx")
    assert res.exit_code != 0 and "one size" in res.stderr and not (tmp_path / "dpt.onnx").exists()


def test_the_same_photo_gives_the_same_depth_with_and_without_save(cli, da, photos, tmp_path):
    """The network input never depends on output options: no reduced-size decode for HF models."""
    args = (photos["large"][0], photos["landscape"][0], "--weights", da, "-q")
    plain = jsonl(cli("depth", *args).stdout)
    saved = jsonl(cli("depth", *args, "--save", tmp_path / "s", "--npy").stdout)
    for a, b in zip(plain, saved):
        assert a["depth"] == b["depth"] and a["weights"] == b["weights"]
