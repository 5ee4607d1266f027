"""Classification throughput: torch eager vs ONNX Runtime (model only) vs the whole pipeline.

    python benchmarks/bench_classify.py [--images 240] [--batch 8] [--rounds 3]

Makes a folder of JPEG photos (random crops of the bundled sample photos, ImageNet-like sizes
between 500x375 and 800x600, quality 90), then measures in one process, interleaving rounds
so that machine noise hits every contender alike, and keeps each contender's best round:

  (a) torch eager      : the EfficientNet-Lite0 module on preprocessed tensors
  (b) onnxruntime      : the cached ONNX export on the same tensors (model only)
  (c) pipeline         : cvtool's whole classify path on the folder: expand, decode and
                         preprocess in threads, batch, ONNX Runtime, postprocess, JSON records
  (d) cli              : `cvtool classify FOLDER > /dev/null` wall time, process start included

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = random.Random(seed)
    srcs = [Image.open(p).convert("RGB") for p in sorted((ROOT / "sample_images").glob("*.jpg"))]
    sizes = [(500, 375), (375, 500), (640, 480), (800, 600), (600, 400)]
    paths = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out = im.crop((x, y, x + cw, y + ch)).resize(sizes[i % len(sizes)], Image.BICUBIC)
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        p = folder / f"photo_{i:04d}.jpg"
        out.save(p, quality=90)
        paths.append(p)
    return paths


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="efficientnet_lite0")
    args = ap.parse_args()

    import torch

    from cvtool.io.decode import decode_image
    from cvtool.io.sources import expand
    from cvtool.models.loader import load
    from cvtool.runtime.device import Device, cpu_count
    from cvtool.runtime.onnx import OnnxRunner
    from cvtool.tasks.base import RunOptions, make_runner, run
    from cvtool.tasks.classify import TASK, Classifier

    tmp = Path(tempfile.mkdtemp(prefix="cvtool-bench-"))
    photos = make_photos(tmp, args.images)
    model = load(args.model)
    pre = model.preprocess
    tensors = np.stack([pre(decode_image(str(p)).rgb) for p in photos])
    B = args.batch
    chunks = [tensors[i:i + B] for i in range(0, len(tensors), B)]

    module = model.torch_module()
    torch.set_num_threads(cpu_count())
    onnx_path, _ = model.onnx_path()
    ort_runner = OnnxRunner(onnx_path, Device("cpu"))
    pipe_runner = make_runner(model, "onnx", "cpu")
    post = Classifier(model, 5)

    def torch_eager():
        with torch.inference_mode():
            for c in chunks:
                module(torch.from_numpy(c))

    def ort_only():
        for c in chunks:
            ort_runner(c)

    def pipeline():
        opts = RunOptions(batch=B, device="cpu")
        sink = io.StringIO()
        for rec, _ in run(TASK, model, pipe_runner, expand([str(tmp)]), post, opts):
            sink.write(json.dumps(rec.to_dict()) + "\n")
        assert sink.getvalue().count('"ok": true') == len(photos)

    def cli():
        env = dict(os.environ)
        subprocess.run([sys.executable, "-m", "cvtool", "classify", str(tmp), "-q", "-f", "jsonl",
                        "--batch", str(B), "--device", "cpu"], check=True, stdout=subprocess.DEVNULL, env=env)

    contenders = {"torch eager (model only)": torch_eager, "onnxruntime (model only)": ort_only,
                  "cvtool pipeline (decode → records)": pipeline, "cvtool classify CLI (process start included)": cli}
    for fn in contenders.values():  # warm-up: first session/thread-pool start, page cache
        fn()
    best = {k: float("inf") for k in contenders}
    for _ in range(args.rounds):
        for k, fn in contenders.items():
            best[k] = min(best[k], timed(fn))

    n = len(photos)
    ips = {k: n / v for k, v in best.items()}
    print(f"machine: {platform.machine()}, {cpu_count()} cores, {platform.processor() or ''} "
          f"python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {__import__('onnxruntime').__version__}, provider {pipe_runner.provider}")
    print(f"{n} JPEG photos, batch {B}, best of {args.rounds} rounds\n")
    print("| path | img/s | ms/img | vs torch eager | vs onnxruntime model-only |")
    print("|---|---:|---:|---:|---:|")
    t, o = ips["torch eager (model only)"], ips["onnxruntime (model only)"]
    for k, v in ips.items():
        print(f"| {k} | {v:.1f} | {1000 / v:.2f} | {v / t:.2f}x | {v / o:.0%} |")


if __name__ == "__main__":
    main()
