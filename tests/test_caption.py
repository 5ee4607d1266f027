"""`cvtool caption`: tiny Hugging Face captioners built here in their native format (random
weights: the captions are gibberish, so these tests check mechanics, not language), the offline
error path, `models import`, and the labels fallback on the real bundled models and photos."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import jsonl, run_cvtool

pytest.importorskip("transformers")

WORDS = ("a an the of on in with and photo picture cat dog bed table cup coffee person people sitting "
         "lying standing red white black small two rocket sky flower woman man").split()
NEURAL_KEYS = {"kind", "caption", "tokens", "truncated", "generation"}


# ---- tiny models in the native format ----------------------------------------------------

def make_tiny_blip(folder: Path, processor: dict | None = None) -> Path:
    """A BLIP captioner with the real one's layout (384x384 input, BERT tokenizer with a [DEC]
    start token), 32-wide and one layer deep, saved with save_pretrained, with the
    preprocessor_config.json that ``BlipImageProcessor(**processor)`` writes (its defaults are
    the real repo's values: 384x384 bicubic, CLIP mean/std)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"))  # positional: vocab_file (4.x), vocab (5.x)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    n = len(tok)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                 initializer_range=0.2)  # large random weights: pictures visibly change the captions
    config = BlipConfig(
        text_config=dict(vocab_size=n, max_position_embeddings=64, bos_token_id=n - 1, pad_token_id=0,
                         sep_token_id=3, **small),
        vision_config=dict(image_size=384, patch_size=48, **small), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessor(**(processor or {})).save_pretrained(folder)
    return folder


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-level BPE alphabet: one printable character per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def make_tiny_vit_gpt2(folder: Path, processor: dict | None = None) -> Path:
    """A ViT + GPT-2 VisionEncoderDecoderModel (224x224 input) and a GPT-2 tokenizer whose
    vocab.json/merges.txt spell the words above, with the preprocessor_config.json that
    ``ViTImageProcessor(**processor)`` writes (defaults = the real repo's: 224x224 bilinear,
    mean = std = 0.5)."""
    import torch
    from transformers import (GPT2Config, GPT2Tokenizer, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor)

    folder.mkdir(parents=True)
    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    merges = []
    for word in WORDS:
        piece = "Ġ"
        for ch in word:
            if piece + ch not in vocab:
                merges.append(f"{piece} {ch}")
                vocab[piece + ch] = len(vocab)
            piece += ch
    eos = vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    tok = GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))  # positional, as above
    enc = ViTConfig(image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=37, initializer_range=0.2)
    dec = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=48, n_layer=1, n_head=2,
                     add_cross_attention=True, bos_token_id=eos, eos_token_id=eos, initializer_range=0.2)
    config = VisionEncoderDecoderConfig(encoder=enc.to_dict(), decoder=dec.to_dict())
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    torch.manual_seed(0)
    VisionEncoderDecoderModel(config).eval().save_pretrained(folder)  # 32 → 48: enc_to_dec_proj too
    tok.save_pretrained(folder)
    ViTImageProcessor(**(processor or {})).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("hf") / "tiny-blip")


@pytest.fixture(scope="module")
def tiny_vit_gpt2(tmp_path_factory) -> Path:
    return make_tiny_vit_gpt2(tmp_path_factory.mktemp("hf") / "tiny-vit-gpt2")


def _runner(name, folder, backend="auto"):
    from cvtool.models.loader import load
    from cvtool.tasks.caption import GenerationRunner

    loaded = load(name, str(folder), task="caption")
    return loaded, GenerationRunner(loaded, backend, "cpu", notify=lambda m: None)


def _captions(loaded, runner, paths, batch, **settings):
    from cvtool.io.sources import expand
    from cvtool.tasks.base import RunOptions, run
    from cvtool.tasks.caption import Captioner

    post = Captioner(runner.net, **settings)
    return [r.to_dict() for r, _ in run("caption", loaded, runner, expand(paths), post, RunOptions(batch=batch))]


def _pixels(loaded, path) -> np.ndarray:
    from cvtool.io.decode import decode_image

    return loaded.preprocess(decode_image(str(path)).rgb)[None]


# ---- neural captioners: mechanics ----------------------------------------------------------

def test_tiny_blip_captions_every_photo(cli, samples, tiny_blip):
    res = cli("caption", samples, "--weights", tiny_blip, "--max-tokens", "6", "--batch", "4")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [Path(r["source"]).name for r in recs] == sorted(p.name for p in samples.glob("*.jpg"))
    for r in recs:
        assert r["ok"] and r["task"] == "caption" and r["model"] == "blip_base" and NEURAL_KEYS <= set(r)
        assert r["kind"] == "neural" and isinstance(r["caption"], str) and "from_labels" not in r
        assert 0 <= r["tokens"] <= 6 and r["truncated"] == (r["tokens"] == 6)
        assert r["generation"] == {"max_tokens": 6, "beams": 1, "prompt": None}
        assert r["backend"] == "onnxruntime+torch" and r["provider"] == "CPUExecutionProvider+torch-cpu"
        assert r["batch_size"] in (4, 2) and set(r["time_ms"]) == {"decode", "preprocess", "inference"}
        with Image.open(r["source"]) as im:
            assert (r["image_size"]["width"], r["image_size"]["height"]) == im.size
    assert len({r["caption"] for r in recs}) >= 3  # the pictures reach the decoder


def test_batch_and_backend_do_not_change_captions(samples, tiny_blip):
    loaded, onnx = _runner("blip_base", tiny_blip)
    _, torch_ = _runner("blip_base", tiny_blip, backend="torch")
    one = _captions(loaded, onnx, [str(samples)], batch=1, max_tokens=8)
    six = _captions(loaded, onnx, [str(samples)], batch=6, max_tokens=8)
    eager = _captions(loaded, torch_, [str(samples)], batch=3, max_tokens=8)
    again = _captions(loaded, onnx, [str(samples)], batch=6, max_tokens=8)
    assert torch_.backend == "torch" and onnx.backend == "onnxruntime+torch"
    key = [(r["source"], r["caption"], r["tokens"]) for r in one]
    assert key == [(r["source"], r["caption"], r["tokens"]) for r in six]
    assert key == [(r["source"], r["caption"], r["tokens"]) for r in eager]
    assert key == [(r["source"], r["caption"], r["tokens"]) for r in again]
    assert {r["batch_size"] for r in one} == {1} and {r["batch_size"] for r in six} == {6}


def test_exported_image_encoder_matches_torch(samples, tiny_blip):
    """Parity of the cached ONNX image encoder with the torch one, on the photos."""
    import torch

    loaded, runner = _runner("blip_base", tiny_blip)
    x = np.concatenate([_pixels(loaded, p) for p in sorted(samples.glob("*.jpg"))])
    with torch.inference_mode():
        ref = runner.torch_encoder(torch.from_numpy(x)).numpy()
    got = runner.encoder(x)
    assert got.shape == ref.shape == (6, 65, 32)  # (384 / 48)² patches + CLS, width 32
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_same_tokens_as_transformers_own_generate(samples, tiny_blip):
    """cvtool's generation (encoder, then the decoder loop) gives exactly the ids of
    BlipForConditionalGeneration.generate on the same pixels: greedy, beams, and a prompt."""
    import torch

    loaded, runner = _runner("blip_base", tiny_blip, backend="torch")
    net, norm = runner.net, runner.torch.module
    x = _pixels(loaded, samples / "coffee.jpg")
    pixel_values = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 * norm.scale + norm.shift
    prompt = net.encode_prompt("a photo of")
    assert net.tokenizer.convert_ids_to_tokens(prompt) == ["a", "photo", "of"]
    for beams, prompt_ids in ((1, None), (3, None), (2, tuple(prompt))):
        ours = runner(x, {"max_tokens": 5, "beams": beams, "prompt_ids": prompt_ids})
        tok = net.tokenizer
        input_ids = torch.tensor([[tok.cls_token_id, *(prompt_ids or ()), tok.sep_token_id]])
        with torch.inference_mode():
            ref = net.model.generate(pixel_values=pixel_values, input_ids=input_ids, max_new_tokens=5,
                                     num_beams=beams, do_sample=False)
        start = 1 + len(prompt_ids or ())
        assert ours.tolist() == ref[:, start:].tolist(), (beams, prompt_ids)


def test_max_tokens_cuts_the_greedy_caption(samples, tiny_blip):
    loaded, runner = _runner("blip_base", tiny_blip)
    x = np.concatenate([_pixels(loaded, samples / n) for n in ("coffee.jpg", "rocket.jpg", "flower.jpg")])
    long = runner(x, {"max_tokens": 7, "beams": 1, "prompt_ids": None})
    short = runner(x, {"max_tokens": 2, "beams": 1, "prompt_ids": None})
    assert short.shape[1] <= 2 and long.shape[1] <= 7
    assert short.tolist() == long[:, :short.shape[1]].tolist()  # greedy: a prefix of the longer run


def test_prompt_is_continued_by_blip_and_refused_elsewhere(cli, samples, tiny_blip, tiny_vit_gpt2, tmp_path):
    res = cli("caption", samples / "cat.jpg", samples / "rocket.jpg", "--weights", tiny_blip,
              "--prompt", "A photo of", "--max-tokens", "4", "--beams", "2")
    assert res.exit_code == 0, res.stderr
    for r in jsonl(res.stdout):
        assert r["caption"].startswith("a photo of")  # BLIP's tokenizer lower-cases
        assert r["generation"] == {"max_tokens": 4, "beams": 2, "prompt": "A photo of"}
        assert r["tokens"] <= 4
    out = tmp_path / "never.jsonl"
    for args in (("-m", "vit_gpt2", "--weights", tiny_vit_gpt2), ("-m", "vit_gpt2"), ("-m", "labels")):
        res = cli("caption", samples / "cat.jpg", *args, "--prompt", "a photo of", "-o", out)
        assert res.exit_code == 2 and res.stdout == "" and not out.exists()
        assert "--prompt" in res.stderr and "cannot continue a prompt" in res.stderr
    assert cli("caption", samples / "cat.jpg", "--weights", tiny_blip, "--prompt", "  ").exit_code == 2


def test_tiny_vit_gpt2_end_to_end(cli, samples, tiny_vit_gpt2):
    import torch

    res = cli("caption", samples / "coffee.jpg", samples / "cat.jpg", "-m", "vit_gpt2", "--weights", tiny_vit_gpt2,
              "--max-tokens", "5", "--beams", "2")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [r["model"] for r in recs] == ["vit_gpt2"] * 2 and all(r["kind"] == "neural" for r in recs)
    assert all(r["tokens"] <= 5 for r in recs)
    loaded, runner = _runner("vit_gpt2", tiny_vit_gpt2)
    assert loaded.preprocess.crop == 224 and loaded.preprocess.mean == (0.5, 0.5, 0.5)
    x = _pixels(loaded, samples / "coffee.jpg")
    ours = runner(x, {"max_tokens": 5, "beams": 2, "prompt_ids": None})
    norm = runner.torch.module
    with torch.inference_mode():
        ref = runner.net.model.generate(pixel_values=torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
                                        * norm.scale + norm.shift, max_new_tokens=5, num_beams=2, do_sample=False)
    assert ours.tolist() == ref[:, 1:].tolist()
    text = runner.net.tokenizer.decode(ours[0][ours[0] != runner.net.end_id], skip_special_tokens=True)
    assert " ".join(text.split()) == recs[0]["caption"]


def test_save_writes_the_captioned_picture(cli, samples, tiny_blip, tmp_path):
    res = cli("caption", samples / "cat.jpg", "--weights", tiny_blip, "--max-tokens", "3", "--save", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    rec = jsonl(res.stdout)[0]
    saved = Path(rec["saved"])
    assert saved == tmp_path / "out" / "cat.jpg"
    with Image.open(saved) as im, Image.open(samples / "cat.jpg") as src:
        assert im.size == src.size
        drawn, orig = np.asarray(im.convert("L"), float), np.asarray(src.convert("L"), float)
    assert drawn[-20:].mean() < orig[-20:].mean() - 10  # the dark caption band at the bottom
    assert np.abs(drawn[:100] - orig[:100]).mean() < 3  # the rest is the picture


# ---- weights: missing, imported, wrong ------------------------------------------------------

def test_offline_without_weights_is_a_clear_usage_error(samples, tmp_path):
    env = {"CVTOOL_HOME": str(tmp_path / "home"), "CVTOOL_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    for model in ("blip_base", "vit_gpt2"):
        out, saved = tmp_path / f"{model}.jsonl", tmp_path / f"saved-{model}"
        proc = run_cvtool("caption", samples / "cat.jpg", "-m", model, "-o", out, "--save", saved, env=env)
        assert proc.returncode == 2 and proc.stdout == ""
        msg = proc.stderr.strip()
        assert msg.count("\n") == 0 and "Traceback" not in msg, msg
        assert f"no weights for model '{model}'" in msg and "CVTOOL_OFFLINE" in msg
        assert f"cvtool models pull {model}" in msg and f"cvtool models import {model} FOLDER" in msg
        assert "--weights FOLDER" in msg
        assert not out.exists() and not saved.exists()
    assert not (tmp_path / "home" / "onnx").exists()


def test_import_then_caption_without_weights_option(cli, samples, tiny_blip, tiny_vit_gpt2, tmp_path, monkeypatch):
    monkeypatch.setenv("CVTOOL_HOME", str(tmp_path / "home"))
    wrong = cli("models", "import", "blip_base", tiny_vit_gpt2)
    assert wrong.exit_code == 2 and "'vision-encoder-decoder' model, not a 'blip' captioner" in wrong.stderr
    res = cli("models", "import", "blip_base", tiny_blip)
    assert res.exit_code == 0, res.stderr
    dest = Path(res.stdout.strip())
    assert dest == tmp_path / "home" / "weights" / "hf" / "blip_base" and (dest / "config.json").is_file()
    listed = {r["name"]: r for r in jsonl(cli("models", "list", "--task", "caption", "-f", "jsonl").stdout)}
    assert listed["blip_base"]["weights"] == "cache" and listed["vit_gpt2"]["weights"] == "missing (offline)"
    assert listed["blip_base"]["license"] == "BSD-3-Clause" and listed["vit_gpt2"]["license"] == "Apache-2.0"
    run = cli("caption", samples / "cat.jpg", "--max-tokens", "4")
    assert run.exit_code == 0, run.stderr
    direct = jsonl(cli("caption", samples / "cat.jpg", "--max-tokens", "4", "--weights", tiny_blip).stdout)
    assert jsonl(run.stdout)[0]["caption"] == direct[0]["caption"]


def test_unusable_weights_folders_are_refused(cli, samples, tiny_blip, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("caption", samples / "cat.jpg", "--weights", empty)
    assert res.exit_code == 2 and "no config.json in this folder" in res.stderr
    res = cli("caption", samples / "cat.jpg", "--weights", tmp_path / "nope")
    assert res.exit_code == 2 and "no such file or folder" in res.stderr
    small = tmp_path / "other-size"
    small.mkdir()
    for f in tiny_blip.iterdir():
        (small / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((small / "config.json").read_text())
    cfg["vision_config"]["image_size"] = 224
    (small / "config.json").write_text(json.dumps(cfg))
    res = cli("caption", samples / "cat.jpg", "--weights", small)
    assert res.exit_code == 2 and "takes 224x224 pictures" in res.stderr and "384x384" in res.stderr


# ---- bad inputs ----------------------------------------------------------------------------

def test_bad_inputs_give_one_error_record_each_and_the_run_goes_on(cli, samples, tiny_blip, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    data = (samples / "coffee.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    inputs = [samples / "cat.jpg", tmp_path / "missing.jpg", tmp_path / "empty.jpg", tmp_path / "notes.jpg",
              tmp_path / "truncated.jpg", samples / "coffee.jpg"]
    res = cli("caption", *inputs, "--weights", tiny_blip, "--max-tokens", "3", "--batch", "2")
    assert res.exit_code == 1
    recs = jsonl(res.stdout)
    assert [r["ok"] for r in recs] == [True, False, False, False, False, True]
    for want, r in zip(["no such file", "empty file", "not a recognised image", "truncated"], recs[1:5]):
        assert want in r["error"] and r["source"].endswith(".jpg")
        assert not (NEURAL_KEYS & set(r)) and r["task"] == "caption" and r["model"] == "blip_base"
    assert recs[0]["kind"] == recs[-1]["kind"] == "neural"
    assert sum("missing.jpg" in line for line in res.stderr.splitlines()) == 1


# ---- the labels fallback, on the real bundled models ---------------------------------------

def test_labels_fallback_on_real_photos(cli, samples):
    photos = [samples / n for n in ("cat.jpg", "coffee.jpg", "astronaut.jpg")]
    res = cli("caption", *photos, "-m", "labels")
    assert res.exit_code == 0, res.stderr
    cat, coffee, astronaut = jsonl(res.stdout)
    top = {Path(r["source"]).name: r for r in jsonl(cli("classify", *photos, "--topk", "1").stdout)}
    dets = {Path(r["source"]).name: r for r in jsonl(cli("detect", *photos, "--conf", "0.5").stdout)}
    for r in (cat, coffee, astronaut):
        name = Path(r["source"]).name
        assert r["kind"] == "labels" and r["model"] == "labels" and r["tokens"] is None
        assert "generation" not in r and r["backend"] == "onnxruntime"
        used = r["from_labels"]
        assert used["classifier"]["model"] == "efficientnet_lite0" and used["detector"]["model"] == "ssd_mobilenet_v2_coco"
        assert used["classifier"]["label"] == top[name]["label"]
        assert [d["label"] for d in used["detector"]["detections"]] == [d["label"] for d in dets[name]["detections"]]
        assert all(d["score"] > 0.5 for d in used["detector"]["detections"])
        for d in used["detector"]["detections"]:  # every detection used is in the sentence
            assert d["label"] in r["caption"] or (used["classifier"]["used"] and d["label"] in used["classifier"]["label"])
    assert cat["from_labels"]["classifier"]["used"] and cat["from_labels"]["classifier"]["score"] >= 0.2
    assert cat["caption"] == f"a photo of a {top['cat.jpg']['label']}"  # "cat" detected: not said twice
    assert "cat" in [d["label"] for d in cat["from_labels"]["detector"]["detections"]]
    assert coffee["caption"].startswith("a photo of an espresso, with a cup")
    assert astronaut["from_labels"]["classifier"]["used"] is False  # "football helmet" at 0.18 < 0.20
    assert astronaut["caption"].startswith("a photo of a person")


def test_labels_fallback_saves_boxes_and_caption(cli, samples, tmp_path):
    res = cli("caption", samples / "coffee.jpg", "-m", "labels", "--save", tmp_path, "-f", "csv")
    assert res.exit_code == 0, res.stderr
    header, row = res.stdout.splitlines()[:2]
    assert "from_labels.classifier.label" in header.split(",") and ",labels," in row
    with Image.open(tmp_path / "coffee.jpg") as im:
        assert im.size == (600, 400)
    assert cli("caption", samples / "coffee.jpg", "-m", "labels", "--weights", tmp_path).exit_code == 2


def test_wording_rules():
    from cvtool.tasks.caption import MAX_OBJECT_KINDS, article, count_phrase, labels_sentence, plural

    def det(label, score=0.9):
        return {"label": label, "score": score}

    assert [article(w) for w in ("espresso", "umbrella", "unicycle", "European fire salamander", "hourglass",
                                 "tiger cat", "oven")] == ["an", "an", "a", "a", "an", "a", "an"]
    assert [plural(w) for w in ("person", "bus", "knife", "wine glass", "mouse", "skis", "couch", "cup",
                                "toothbrush", "sheep")] == \
        ["people", "buses", "knives", "wine glasses", "mice", "skis", "couches", "cups", "toothbrushes", "sheep"]
    assert count_phrase(1, "apple") == "an apple" and count_phrase(3, "person") == "three people"
    assert count_phrase(12, "cup") == "12 cups"
    assert labels_sentence(None, []) == ("a photo", [])
    assert labels_sentence("daisy", [])[0] == "a photo of a daisy"
    text, objects = labels_sentence(None, [det("dog", 0.6), det("person", 0.9), det("person", 0.8)])
    assert text == "a photo of two people and a dog"
    assert objects == [{"label": "person", "count": 2, "words": "two people"},
                       {"label": "dog", "count": 1, "words": "a dog"}]
    assert labels_sentence("tiger cat", [det("cat"), det("bed", 0.7)])[0] == "a photo of a tiger cat, with a bed"
    assert labels_sentence("tiger cat", [det("cat"), det("cat")])[0] == "a photo of a tiger cat, with two cats"
    many = [det(label, 0.9 - i / 100) for i, label in enumerate(
        ["cup", "bowl", "spoon", "fork", "knife", "oven", "sink"])]
    text, objects = labels_sentence("espresso", many)
    assert len(objects) == MAX_OBJECT_KINDS and text.endswith("a fork and a knife") and "oven" not in text


def test_listing_caption_models_imports_neither_torch_nor_transformers():
    code = ("import sys; from cvtool.models import registry; "
            "names = [s.name for s in registry.list_models('caption')]; "
            "assert names == ['blip_base', 'vit_gpt2'], names; "
            "bad = [m for m in ('torch', 'transformers', 'cv2') if m in sys.modules]; assert not bad, bad")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
