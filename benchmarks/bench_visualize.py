"""Time per image of each `cvtool visualize` attribution method (torch, CPU unless CUDA).

    python benchmarks/bench_visualize.py --rounds 3

Times the library call on the network-sized picture (decode and saving excluded), median of
``--rounds`` runs after one warm-up, on the six sample photos, with the bundled EfficientNet-Lite0.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--methods", default="saliency,gradcam,gradcam++,guided-backprop,smoothgrad,integrated-gradients,occlusion")
    args = ap.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (cli.common.calm_cpu_threads)
    import torch

    from cvtool.explain.attribution import attribute
    from cvtool.io.decode import decode_image
    from cvtool.models.differentiable import load_classifier

    clf = load_classifier(args.model)
    photos = sorted((ROOT / "sample_images").glob("*.jpg"))
    xs = [clf.prepare(decode_image(str(p)).rgb) for p in photos]
    targets = [clf.top(x)[0] for x in xs]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {clf.device}, model {args.model}, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| method | settings | ms / image |")
    print("|---|---|---:|")
    for method in args.methods.split(","):
        attribute(method, clf, xs[0], targets[0])  # warm-up
        per_round = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for x, t in zip(xs, targets):
                attribute(method, clf, x, t)
            per_round.append((time.perf_counter() - t0) * 1e3 / len(xs))
        settings = {"smoothgrad": "24 samples", "integrated-gradients": "128 steps",
                    "occlusion": "32 px window, stride 16 (169 patches)"}.get(method, "")
        print(f"| {method} | {settings} | {statistics.median(per_round):.1f} |")


if __name__ == "__main__":
    main()
