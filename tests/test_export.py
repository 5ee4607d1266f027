"""`cvtool export`, `--validate`, int8, provider fallback and `models bench`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import jsonl, run_cvtool


def _report(res) -> dict:
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory):
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    out = tmp_path_factory.mktemp("export") / "lite0.onnx"
    res = CliRunner().invoke(app, ["export", "efficientnet_lite0", "-o", str(out)])
    return out, _report(res)


def test_export_checks_parity_and_embeds_metadata(lite0_onnx):
    out, rep = lite0_onnx
    assert out.is_file() and rep["path"] == str(out) and rep["precision"] == "fp32"
    assert rep["input"] == ["batch", 224, 224, 3]
    p = rep["parity"]
    assert p["ok"] and p["images"] >= 4 and p["agreement"] == 1.0 and p["max_abs_diff"] < 1e-4
    from cvtool.runtime.onnx import read_metadata

    meta = read_metadata(out)
    assert meta["task"] == "classify" and meta["model"] == "efficientnet_lite0" and meta["opset"] == "17"
    assert len(json.loads(meta["labels"])) == 1000 and meta["precision"] == "fp32"
    assert len(meta["weights_sha256"]) == 64 and meta["version"]


def test_dynamic_batch_is_really_dynamic(lite0_onnx, samples):
    import onnxruntime as ort

    from cvtool.io.decode import decode_image
    from cvtool.models.loader import load

    out, _ = lite0_onnx
    m = load(str(out))
    x = np.stack([m.preprocess(decode_image(str(samples / n)).rgb) for n in ("cat.jpg", "coffee.jpg", "rocket.jpg")])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    three = sess.run(None, {"input": x})[0]
    one = sess.run(None, {"input": x[:1]})[0]
    assert three.shape == (3, 1000) and one.shape == (1, 1000)
    assert np.abs(three[:1] - one).max() < 1e-4
    assert m.labels[int(three[1].argmax())] in {"espresso", "cup"}


def test_exported_file_drives_classify(cli, lite0_onnx, samples):
    out, _ = lite0_onnx
    res = cli("classify", samples / "coffee.jpg", "--model", out, "-k", "1")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["label"] == "espresso"


def test_validate_good_and_corrupted_files(cli, lite0_onnx, tmp_path):
    out, _ = lite0_onnx
    res = cli("export", "--validate", out)
    info = _report(res)
    assert info["valid"] and info["output_shape"] == [2, 1000] and info["num_labels"] == 1000
    bad = tmp_path / "corrupt.onnx"
    data = out.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    res = cli("export", "--validate", bad)
    assert res.exit_code == 1 and "not a valid ONNX model" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    res = cli("export", "--validate", tmp_path / "missing.onnx")
    assert res.exit_code == 1 and "no such file" in res.stderr


def test_fixed_batch_and_imgsz(cli, tmp_path, samples):
    out = tmp_path / "lite0-b2-256.onnx"
    rep = _report(cli("export", "efficientnet_lite0", "-o", out, "--batch", "2", "--imgsz", "256"))
    assert rep["input"] == [2, 256, 256, 3] and rep["parity"]["ok"]
    from cvtool.models.loader import load

    m = load(str(out))
    assert m.preprocess.crop == 256 and m.preprocess.resize == 293
    res = cli("classify", samples / "cat.jpg", samples / "coffee.jpg", samples / "rocket.jpg", "--model", out)
    recs = jsonl(res.stdout)
    assert res.exit_code == 0 and len(recs) == 3 and recs[1]["label"] == "espresso"  # 3 inputs, batch of 2


def test_architecture_limits_are_refused_clearly(cli, tmp_path):
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "x.onnx", "--dynamic-size")
    assert res.exit_code == 1 and "graph depends on the input size" in res.stderr
    assert not (tmp_path / "x.onnx").exists()
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "x.txt")
    assert res.exit_code == 2 and "must end in .onnx" in res.stderr


def test_half_is_refused_without_a_gpu(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "h.onnx", "--half")
    assert res.exit_code == 2 and "--half needs a CUDA GPU" in res.stderr  # a set-up problem, as below
    assert not list(tmp_path.iterdir())


def test_simplify_without_onnxslim_is_a_setup_error_before_any_work(cli, tmp_path, monkeypatch):
    """A missing optional dependency is exit 2 like pycocotools for --eval and scikit-learn for
    train digits; nothing is exported first."""
    import sys

    monkeypatch.setitem(sys.modules, "onnxslim", None)  # as if not installed
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "s.onnx", "--simplify")
    assert res.exit_code == 2, res.stderr
    assert "--simplify needs onnxslim: pip install onnxslim" in res.stderr
    assert not list(tmp_path.iterdir())


def test_existing_output_is_kept_unless_overwrite(cli, lite0_onnx):
    out, _ = lite0_onnx
    before = out.stat().st_mtime_ns
    res = cli("export", "efficientnet_lite0", "-o", out)
    assert res.exit_code == 2 and "already exists" in res.stderr and out.stat().st_mtime_ns == before


def test_a_failed_parity_check_writes_nothing(cli, tmp_path):
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "strict.onnx", "--tolerance", "0")
    assert res.exit_code == 1 and "parity check failed" in res.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
                                  "vit_b_16", "mobilenet_v2", "mobilenet_v3_small", "alexnet", "resnet50",
                                  "vgg16"])
def test_every_registered_classifier_exports_with_parity(cli, tmp_path, name):
    """Registered models without local weights: random weights in torchvision's native format."""
    import torch

    from cvtool.models import registry

    spec = registry.get(name)
    torch.manual_seed(0)
    weights = tmp_path / spec.weights.filename
    torch.save(spec.build().state_dict(), weights)
    out = tmp_path / f"{name}.onnx"
    args = ["export", name, "--weights", weights, "-o", out]
    if spec.input_sizes == "dynamic":
        args.append("--dynamic-size")
    rep = _report(cli(*args))
    assert rep["parity"]["ok"], rep["parity"]
    if spec.input_sizes == "dynamic":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input": np.zeros((2, 192, 160, 3), np.uint8)})[0]
        assert y.shape == (2, 1000)
    else:
        res = cli("export", name, "--weights", weights, "-o", tmp_path / "d.onnx", "--dynamic-size")
        assert res.exit_code == 1 and "cannot export with --dynamic-size" in res.stderr


def test_checkpoint_exports(cli, tmp_path):
    import torch

    from cvtool.models.zoo.efficientnet_lite import efficientnet_lite0

    ckpt = {"cvtool": {"format": 1, "arch": "efficientnet_lite0", "task": "classify", "name": "tiny3",
                       "labels": ["a", "b", "c"]}, "state_dict": efficientnet_lite0(num_classes=3).state_dict()}
    torch.save(ckpt, tmp_path / "best.pt")
    rep = _report(cli("export", tmp_path / "best.pt", "-o", tmp_path / "tiny3.onnx"))
    assert rep["model"] == "tiny3" and rep["parity"]["ok"]


def test_simplify(cli, tmp_path):
    pytest.importorskip("onnxslim")
    rep = _report(cli("export", "efficientnet_lite0", "-o", tmp_path / "s.onnx", "--simplify"))
    assert rep["simplified"] and rep["parity"]["ok"]
    from cvtool.runtime.onnx import read_metadata

    assert read_metadata(tmp_path / "s.onnx")["task"] == "classify"


def test_int8_reports_agreement_and_refuses_when_it_drifts(cli, tmp_path, samples):
    cal = tmp_path / "calib"
    cal.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, p in enumerate(sorted(samples.glob("*.jpg")) * 2):  # 12 crops of the sample photos
        im = Image.open(p)
        w, h = im.size
        x, y = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        im.crop((x, y, x + 3 * w // 4, y + 3 * h // 4)).save(cal / f"c{i}.jpg")
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "q.onnx", "--int8")
    assert res.exit_code == 2 and "--int8 needs --calibrate" in res.stderr
    rep = _report(cli("export", "efficientnet_lite0", "-o", tmp_path / "q.onnx", "--int8", "--calibrate", cal,
                      "--min-agreement", "0.5"))
    q = rep["int8"]
    assert rep["precision"] == "int8" and q["ok"] and q["images"] == 16 and 0.5 <= q["agreement_with_fp32"] <= 1
    assert (tmp_path / "q.onnx").stat().st_size < 0.4 * 18_000_000
    res = cli("classify", samples / "coffee.jpg", "--model", tmp_path / "q.onnx", "-k", "1")
    assert res.exit_code == 0
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "q2.onnx", "--int8", "--calibrate", cal,
              "--min-agreement", "1.01")
    assert res.exit_code == 2  # out of range option
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "q2.onnx", "--int8", "--calibrate", tmp_path / "none")
    assert res.exit_code == 1 and "no readable images" in res.stderr and not (tmp_path / "q2.onnx").exists()
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "q3.onnx", "--int8", "--calibrate", cal,
              "--min-agreement", "1.0")
    assert res.exit_code == 1 and "int8 refused" in res.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no fp32 leftovers


def test_models_bench_measures_each_backend(cli):
    res = cli("models", "bench", "efficientnet_lite0", "--batches", "1,2", "--seconds", "0.05", "-f", "jsonl")
    assert res.exit_code == 0, res.stderr
    rows = {(r["backend"], r["provider"]): r for r in jsonl(res.stdout)}
    assert ("torch", "eager cpu") in rows and ("onnxruntime", "CPUExecutionProvider") in rows
    for r in rows.values():
        if "error" not in r:
            assert r["latency_ms_batch1"] > 0 and r["throughput_img_s"] > 0 and r["best_batch"] in (1, 2)
    res = cli("models", "bench", "efficientnet_lite0", "--batches", "x")
    assert res.exit_code == 2


def test_cuda_fallback_is_opt_in(samples):
    from cvtool.runtime.device import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("this machine has a GPU")
    proc = run_cvtool("classify", samples / "cat.jpg", "--device", "cuda", "--allow-cpu-fallback")
    assert proc.returncode == 0
    rec = jsonl(proc.stdout)[0]
    assert rec["provider"] == "CPUExecutionProvider" and rec["device"] == "cpu"
    assert "running on the CPU as --allow-cpu-fallback allows" in proc.stderr
    assert "EP Error" not in proc.stdout + proc.stderr


def test_without_output_writes_model_onnx_in_the_working_folder(cli, tmp_path, monkeypatch):
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    res = cli("export", "efficientnet_lite0", "--no-check")
    out = tmp_path / "efficientnet_lite0.onnx"
    assert res.exit_code == 0, res.stderr
    assert out.is_file() and "wrote efficientnet_lite0.onnx" in res.stderr
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    before = out.stat().st_mtime_ns
    res = cli("export", "efficientnet_lite0", "--no-check")
    assert res.exit_code == 2 and "already exists" in res.stderr and "wrote" not in res.stderr
    assert out.stat().st_mtime_ns == before


def test_checkpoint_without_output_is_exported_next_to_it(cli, tmp_path):
    import torch

    from cvtool.models.zoo.efficientnet_lite import efficientnet_lite0

    ckpt = {"cvtool": {"format": 1, "arch": "efficientnet_lite0", "task": "classify", "name": "tiny3",
                       "labels": ["a", "b", "c"]}, "state_dict": efficientnet_lite0(num_classes=3).state_dict()}
    (tmp_path / "runs" / "tiny3").mkdir(parents=True)
    torch.save(ckpt, tmp_path / "runs" / "tiny3" / "best.pt")
    res = cli("export", tmp_path / "runs" / "tiny3" / "best.pt", "--no-check")
    out = tmp_path / "runs" / "tiny3" / "best.onnx"
    assert res.exit_code == 0 and out.is_file() and f"wrote {out}" in res.stderr
