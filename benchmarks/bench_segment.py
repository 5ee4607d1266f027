"""Semantic segmentation throughput: torch eager vs ONNX Runtime for the default segmenter
(deeplabv3_mobilenet_v3_large), and the whole `cvtool segment` pipeline.

    python benchmarks/bench_segment.py [--rounds 3] [--seconds 3] [--model NAME] [--pictures 24]

The official weights are not needed (nor downloaded): the full-size torchvision architecture is
built here with random weights in its native state_dict format (auxiliary head included, as in
the official file) and loaded through cvtool's own `--weights` path. Speed does not depend on
the weight values. Everything runs in one process, rounds interleaved, best round kept:

- torch eager / onnxruntime (model only): the network on letterboxed 520x520 uint8 batches of
  the bundled photos, logits out;
- postprocess: padding removed, logits resized to the picture and argmax (per picture);
- cvtool pipeline: the whole `segment` path in-process (decode, letterbox, ONNX Runtime, masks
  at the picture's resolution, records) over a folder of `--pictures` photos.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, seconds: float) -> list[float]:
    fn()
    out, end = [], time.perf_counter() + seconds
    while len(out) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="deeplabv3_mobilenet_v3_large")
    ap.add_argument("--pictures", type=int, default=24)
    ap.add_argument("--batches", default="1,2,4")
    args = ap.parse_args()
    os.environ.setdefault("CVTOOL_HOME", tempfile.mkdtemp(prefix="cvtool-bench-seg-"))

    import onnxruntime
    import torch

    from cvtool.assets import photos
    from cvtool.io.decode import decode_image
    from cvtool.io.sources import Frame, expand
    from cvtool.models import registry
    from cvtool.models.loader import load
    from cvtool.runtime.device import Device, cpu_count
    from cvtool.runtime.onnx import OnnxRunner
    from cvtool.runtime.torch import TorchRunner
    from cvtool.tasks.base import RunOptions, run
    from cvtool.tasks.segment import SemanticSegmenter

    tmp = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    torch.manual_seed(0)
    net = registry.get(args.model).build()  # the registered architecture, random weights
    torch.save(net.state_dict(), tmp / "weights.pth")
    del net
    model = load(args.model, str(tmp / "weights.pth"), task="segment")
    rgbs = [decode_image(str(p)).rgb for p in photos()]
    pics = np.stack([model.preprocess(r) for r in rgbs])  # (4, 520, 520, 3)
    torch_runner = TorchRunner(model.torch_module(), Device("cpu"))
    t0 = time.perf_counter()
    path, _ = model.onnx_path()
    export_s = time.perf_counter() - t0
    ort_runner = OnnxRunner(path, Device("cpu"))
    seg = SemanticSegmenter(model)
    frames = [Frame(str(p), None, (r.shape[1], r.shape[0])) for p, r in zip(photos(), rgbs)]
    logits = ort_runner(pics)

    folder = tmp / "pics"
    folder.mkdir()
    import cv2

    for i in range(args.pictures):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.cvtColor(rgbs[i % len(rgbs)], cv2.COLOR_RGB2BGR))
    sources = list(expand([str(folder)]))

    def pipeline():
        for _ in run("segment", model, ort_runner, sources, SemanticSegmenter(model), RunOptions(batch=4)):
            pass

    batches = [int(b) for b in args.batches.split(",")]
    contenders = {"torch eager (model only)": torch_runner, "onnxruntime (model only)": ort_runner}
    ips = {k: {b: 0.0 for b in batches} for k in contenders}
    post_ms, pipe_ips = float("inf"), 0.0
    for _ in range(args.rounds):
        for k, fn in contenders.items():
            for b in batches:
                x = np.ascontiguousarray(np.resize(pics, (b, *pics.shape[1:])))
                ips[k][b] = max(ips[k][b], b / statistics.median(timed(lambda: fn(x), args.seconds)))
        post_ms = min(post_ms, statistics.median(timed(lambda: seg(logits, frames), 1.0)) * 1e3 / len(frames))
        t0 = time.perf_counter()
        pipeline()
        pipe_ips = max(pipe_ips, args.pictures / (time.perf_counter() - t0))

    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model: {args.model} at 520x520, random weights; machine: {platform.machine()} "
          f"{platform.processor() or ''}, {cpu_count()} cores; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; best of {args.rounds} rounds; 1-min load average at the end {load1:.2f}; "
          f"one-off ONNX export {export_s:.1f} s\n")
    print("| path | " + " | ".join(f"img/s at batch {b}" for b in batches) + " | best vs torch |")
    print("|---|" + "---:|" * (len(batches) + 1))
    best_torch = max(ips["torch eager (model only)"].values())
    for k in contenders:
        print(f"| {k} | " + " | ".join(f"{ips[k][b]:.2f}" for b in batches) +
              f" | {max(ips[k].values()) / best_torch:.2f}x |")
    print(f"\npostprocess (logits → mask at the picture's size, 4 bundled photos): {post_ms:.1f} ms/picture")
    print(f"cvtool pipeline (decode → records, batch 4, {args.pictures} photos): {pipe_ips:.2f} img/s")


if __name__ == "__main__":
    main()
