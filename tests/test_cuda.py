"""Checks that need an NVIDIA GPU (run by benchmarks/gpu_check.sh; skipped elsewhere)."""

from __future__ import annotations

import json

import pytest

from conftest import jsonl

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_classify_runs_on_a_gpu_provider(cli, samples):
    res = cli("classify", samples, "--device", "cuda", "-k", "1")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert all(r["provider"] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for r in recs)
    assert all(r["device"] == "cuda:0" for r in recs)
    assert recs[1]["label"] in {"tabby", "tiger cat", "Egyptian cat"}


def test_torch_cuda_agrees_with_cpu(cli, samples):
    gpu = jsonl(cli("classify", samples, "--device", "cuda", "--backend", "torch").stdout)
    cpu = jsonl(cli("classify", samples, "--device", "cpu", "--backend", "torch").stdout)
    for a, b in zip(gpu, cpu):
        assert a["class_id"] == b["class_id"] and abs(a["score"] - b["score"]) < 1e-3


def test_detect_on_the_gpu_matches_the_cpu(cli, samples):
    gpu = jsonl(cli("detect", samples, "--device", "cuda").stdout)
    cpu = jsonl(cli("detect", samples, "--device", "cpu").stdout)
    assert gpu[0]["provider"] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    for a, b in zip(gpu, cpu):
        assert [d["class_id"] for d in a["detections"]] == [d["class_id"] for d in b["detections"]]


def test_fp16_export_passes_parity_on_the_gpu(cli, tmp_path, samples):
    res = cli("export", "efficientnet_lite0", "-o", tmp_path / "h.onnx", "--half")
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout.splitlines()[-1])
    assert rep["precision"] == "fp16" and rep["parity"]["ok"]
    res = cli("classify", samples / "coffee.jpg", "--model", tmp_path / "h.onnx", "--device", "cuda")
    assert jsonl(res.stdout)[0]["label"] == "espresso"
