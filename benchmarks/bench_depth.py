"""Depth throughput: cvtool's torch and ONNX Runtime paths on the full-size Depth Anything V2
Small architecture.

    python benchmarks/bench_depth.py [--rounds 2] [--seconds 2] [--batches 1,2,4] [--aspect]

The network is built locally from Depth-Anything-V2-Small-hf's configuration (DINOv2 ViT-S/14
encoder: hidden 384, 12 layers, 6 heads; DPT head: features 64, neck 48/96/192/384, taps after
layers 3/6/9/12) with random weights, saved with ``save_pretrained`` and loaded through cvtool's
own code (``--weights FOLDER``), so what runs is exactly what ``cvtool depth`` runs; speed does
not depend on the weight values. Inputs: the bundled sample photos preprocessed once (stretched
to 518x518). Latency: median batch-1 call; throughput: best pictures/second over ``--batches``.

``--aspect`` also times a 518x686 input: the size the model's own Hugging Face processor picks
for a large 4:3 photo (aspect kept, shorter side 518, multiples of 14), i.e. the cost of keeping
the aspect ratio instead of stretching (ONNX Runtime: a second export at that fixed size).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np


def timed(fn, seconds: float) -> list[float]:
    fn()
    out, end = [], time.perf_counter() + seconds
    while len(out) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def build_full_size(folder: str) -> int:
    """Depth Anything V2 Small's architecture with random weights, saved to ``folder``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                            patch_size=14, image_size=518, out_indices=[3, 6, 9, 12],
                            reshape_hidden_states=False, layerscale_value=1.0)
    cfg = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=384,
                              reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                              fusion_hidden_size=64, head_hidden_size=32, head_in_index=-1,
                              depth_estimation_type="relative")
    torch.manual_seed(0)
    net = DepthAnythingForDepthEstimation(cfg).eval()
    net.save_pretrained(folder)
    return sum(p.numel() for p in net.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--aspect", action="store_true", help="also time a 518x686 (aspect-kept) input")
    args = ap.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))

    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    work = tempfile.mkdtemp(prefix="bench-depth-")
    os.environ.setdefault("CVTOOL_HOME", os.path.join(work, "home"))
    import onnxruntime
    import torch
    import transformers

    from cvtool.assets import photos
    from cvtool.io.decode import decode_image
    from cvtool.models.loader import load
    from cvtool.runtime.device import Device, cpu_count
    from cvtool.runtime.onnx import OnnxRunner, export_onnx
    from cvtool.runtime.torch import TorchRunner

    folder = os.path.join(work, "da2-small-random")
    params = build_full_size(folder)
    model = load("depth_anything_v2_small", folder, task="depth")
    pics = np.stack([model.preprocess(decode_image(str(p)).rgb) for p in photos()])  # (4, 518, 518, 3)
    t0 = time.perf_counter()
    path, _ = model.onnx_path()
    export_s = time.perf_counter() - t0
    module = model.torch_module()
    runners = {"torch eager": TorchRunner(module, Device("cpu"), args.threads),
               "onnxruntime (default path)": OnnxRunner(path, Device("cpu"), args.threads)}
    inputs = {"518x518 (stretched, cvtool's default)": pics}
    if args.aspect:
        import cv2

        wide = np.stack([cv2.resize(p, (686, 518), interpolation=cv2.INTER_CUBIC) for p in pics])
        inputs["518x686 (aspect kept, 4:3)"] = wide
        wide_path = os.path.join(work, "wide.onnx")
        export_onnx(module, wide_path, (518, 686, 3), model.metadata())
        wide_runners = {"torch eager": runners["torch eager"],
                        "onnxruntime (default path)": OnnxRunner(wide_path, Device("cpu"), args.threads)}

    rows = []
    for size, x0 in inputs.items():
        use = wide_runners if size.startswith("518x686") else runners
        for name, run in use.items():
            lat, ips, best = float("inf"), 0.0, 1
            for _ in range(args.rounds):
                lat = min(lat, statistics.median(timed(lambda: run(x0[:1]), args.seconds)) * 1e3)
                for b in batches:
                    x = np.ascontiguousarray(np.resize(x0, (b, *x0.shape[1:])))
                    v = b / statistics.median(timed(lambda: run(x), args.seconds))
                    if v > ips:
                        ips, best = v, b
            rows.append((size, name, getattr(run, "provider", ""), lat, ips, best))

    load_avg = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {cpu_count()} cores, {platform.processor() or 'cpu'}; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, transformers {transformers.__version__}; best of {args.rounds} rounds")
    print(f"model: Depth Anything V2 Small architecture, random weights, {params / 1e6:.1f}M parameters; "
          f"ONNX export took {export_s:.0f} s")
    print(f"uptime before the run: {load_before}")
    print(f"uptime after the run:  {load_avg}\n")
    print("| input | path | provider | ms/picture at batch 1 | pictures/s at best batch | best batch |")
    print("|---|---|---|---:|---:|---:|")
    for size, name, prov, lat, ips, best in rows:
        print(f"| {size} | {name} | {prov} | {lat:.0f} | {ips:.2f} | {best} |")


if __name__ == "__main__":
    main()
