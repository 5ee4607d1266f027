"""Shared fixtures. Every test runs offline, against a private cache directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"

# Set before cvtool is imported anywhere: a private cache and no network, for the whole session.
# Hugging Face's caches too: the suite must neither read the user's own downloads (a test would
# then pass or fail by what this machine happens to hold) nor write into them.
_HOME = tempfile.mkdtemp(prefix="cvtool-test-home-")
os.environ["CVTOOL_HOME"] = _HOME
os.environ["CVTOOL_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_HOME, "hf")
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE",
             "HF_ASSETS_CACHE", "HF_XET_CACHE", "TORCH_HOME"):
    os.environ.pop(_var, None)  # all derive from HF_HOME (TORCH_HOME: torchvision's cache)
os.environ["TORCH_HOME"] = os.path.join(_HOME, "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("CVTOOL_DEBUG", None)


def pytest_sessionfinish(session, exitstatus):
    """Remove the private home (exported ONNX files, converted weights: ~200 MB) at the end."""
    import shutil

    shutil.rmtree(_HOME, ignore_errors=True)
# As the CLI does (cli.common.calm_cpu_threads): idle torch threads sleep instead of spinning, which
# on a 2-core machine made gradient tests many times slower. Must precede the first torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def cvtool_home() -> Path:
    return Path(_HOME)


@pytest.fixture
def cli():
    """Run the CLI in-process (typer's runner); returns the click Result (stdout/stderr/exit_code)."""
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def run_cvtool(*args: str, input: str | None = None, env: dict | None = None, cwd: Path = ROOT,
               python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python -m cvtool`` as a real process (stdout is a pipe, as in a shell pipeline)."""
    return subprocess.run([sys.executable, *python_flags, "-m", "cvtool", *map(str, args)], input=input,
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
                          timeout=300)


def jsonl(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def random_lraspp():
    """torchvision's LR-ASPP with random weights (seed 0), its classifier's 1x1 convolutions
    redrawn (std 1, no bias) so that the masks hold several classes instead of one everywhere."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                    num_classes=21).eval()
    with torch.no_grad():
        for name, p in net.classifier.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 4 and p.shape[0] == 21:
                p.normal_(0, 1.0)
    return net
