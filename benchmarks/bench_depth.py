"""Depth speed: cvtool's torch and ONNX Runtime paths on the full-size Depth Anything V2 Small
architecture, fed as its processor feeds it (aspect kept) and, for comparison, stretched.

    python benchmarks/bench_depth.py [--rounds 1] [--seconds 2] [--batches 1,2,4] [--aspect]

The network is built locally from Depth-Anything-V2-Small-hf's configuration (DINOv2 ViT-S/14
encoder: hidden 384, 12 layers, 6 heads; DPT head: features 64, neck 48/96/192/384, taps after
layers 3/6/9/12) with random weights, saved with ``save_pretrained`` together with the repo's
``preprocessor_config.json`` (written by ``DPTImageProcessor``), and loaded through cvtool's own
code (``--weights FOLDER``), so what runs is exactly what ``cvtool depth`` runs; speed does not
depend on the weight values. Inputs: the bundled sample photos, preprocessed once.

Rows: "own size" = each photo at the size its processor gives it (aspect kept, sides multiples
of 14; 518x350 for the 3:2 photos, 518x518 for the square one) on the default dynamic-size ONNX
export, one photo per call (batch 1; pictures of one shape are batched together by cvtool);
"518x518 stretched" = every photo stretched to 518x518 (what cvtool fed before it read the
processor config), on the dynamic export and on a fixed-size 518x518 export (the old default
path), with ``--batches`` for throughput. Latency: mean over the photos of each photo's median
batch-1 call. ``--aspect`` also times a 518x686 input (a large 4:3 photo's size).
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
    ap.add_argument("--rounds", type=int, default=1)
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

    from dataclasses import replace

    from transformers import DPTImageProcessor

    folder = os.path.join(work, "da2-small-random")
    params = build_full_size(folder)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    model = load("depth_anything_v2_small", folder, task="depth")
    assert model.preprocess.source == "preprocessor_config.json"
    rgbs = [decode_image(str(p)).rgb for p in photos()]
    own = [model.preprocess(r)[None] for r in rgbs]  # each at its own size
    stretch = replace(model.preprocess, keep_aspect_ratio=False)
    square = np.stack([stretch(r) for r in rgbs])  # (4, 518, 518, 3)
    t0 = time.perf_counter()
    path, _ = model.onnx_path()  # the default: free height and width
    export_s = time.perf_counter() - t0
    module = model.torch_module()
    fixed_path = os.path.join(work, "fixed518.onnx")
    export_onnx(module, fixed_path, (518, 518, 3), model.metadata())
    torch_run = TorchRunner(module, Device("cpu"), args.threads)
    dyn_run = OnnxRunner(path, Device("cpu"), args.threads)
    fixed_run = OnnxRunner(fixed_path, Device("cpu"), args.threads)
    cases = [  # (input, path name, runner, pictures (list of batch-1 arrays) or a same-shape stack)
        ("own size (aspect kept, default)", "torch eager", torch_run, own),
        ("own size (aspect kept, default)", "onnxruntime, dynamic export (default)", dyn_run, own),
        ("518x518 stretched", "torch eager", torch_run, square),
        ("518x518 stretched", "onnxruntime, dynamic export", dyn_run, square),
        ("518x518 stretched", "onnxruntime, fixed 518x518 export (old default)", fixed_run, square),
    ]
    if args.aspect:
        import cv2

        wide = np.stack([cv2.resize(p, (686, 518), interpolation=cv2.INTER_CUBIC) for p in square])
        cases += [("518x686 (large 4:3 photo)", "torch eager", torch_run, wide),
                  ("518x686 (large 4:3 photo)", "onnxruntime, dynamic export", dyn_run, wide)]

    rows = []
    for size, name, run, x0 in cases:
        lat, ips, best = float("inf"), 0.0, 1
        for _ in range(args.rounds):
            pics = x0 if isinstance(x0, list) else [x0[i:i + 1] for i in range(len(x0))]
            lat = min(lat, statistics.mean(statistics.median(timed(lambda: run(p), args.seconds)) for p in pics) * 1e3)
            if isinstance(x0, list):
                continue
            for b in batches:
                x = np.ascontiguousarray(np.resize(x0, (b, *x0.shape[1:])))
                v = b / statistics.median(timed(lambda: run(x), args.seconds))
                if v > ips:
                    ips, best = v, b
        rows.append((size, name, lat, ips, best))

    load_avg = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {cpu_count()} cores, {platform.processor() or 'cpu'}; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, transformers {transformers.__version__}; best of {args.rounds} rounds")
    print(f"model: Depth Anything V2 Small architecture, random weights, {params / 1e6:.1f}M parameters; "
          f"ONNX export took {export_s:.0f} s")
    print(f"uptime before the run: {load_before}")
    print(f"uptime after the run:  {load_avg}\n")
    print(f"own sizes: {[tuple(p.shape[2:0:-1]) for p in own]}\n")
    print("| input | path | ms/picture at batch 1 | pictures/s at best batch | best batch |")
    print("|---|---|---:|---:|---:|")
    for size, name, lat, ips, best in rows:
        print(f"| {size} | {name} | {lat:.0f} | {f'{ips:.2f}' if ips else '-'} | {best if ips else '-'} |")


if __name__ == "__main__":
    main()
