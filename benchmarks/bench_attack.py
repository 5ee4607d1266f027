"""Time per image of `cvtool attack` (FGSM and PGD-10 by default) on the bundled model.

    python benchmarks/bench_attack.py [--methods fgsm,pgd] [--steps 10] [--rounds 3] [--device cpu]

Runs the attack library in-process (what `cvtool attack` runs per picture: clean prediction,
the attack, 8-bit rounding and re-scoring) on the six sample photos, ``--rounds`` times,
interleaving the methods so that machine noise hits them alike, and keeps each method's best
round. Also times one forward+backward pass of the model alone, the unit an attack step costs.
Prints the machine, the load average before and after (the machine may be busy), and a
Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `cvtool attack` does (cli.common.calm_cpu_threads)


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="fgsm,pgd")
    ap.add_argument("--steps", type=int, default=10, help="steps of the iterative methods")
    ap.add_argument("--eps", default="4/255")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="efficientnet_lite0")
    args = ap.parse_args()

    import torch

    from cvtool.attack.config import build_config
    from cvtool.attack.evaluate import Attacker
    from cvtool.attack.victim import check_backend, load_classifier_model, open_victim
    from cvtool.io.decode import decode_image
    from cvtool.runtime.device import cpu_count

    photos = sorted((ROOT / "sample_images").glob("*.jpg"))
    rgbs = [(str(p), decode_image(str(p)).rgb) for p in photos]
    loaded = load_classifier_model(args.model)
    victim = open_victim(loaded, check_backend(loaded, args.model, "torch", True), args.device, None)
    methods = args.methods.split(",")
    attackers = {}
    for m in methods:
        steps = None if m in ("fgsm", "deepfool", "cw", "square") else args.steps
        cfg = build_config(m, eps=args.eps, steps=steps)
        attackers[m] = Attacker(victim, cfg)

    print(f"machine: {platform.machine()} {platform.processor() or ''} {cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); device {victim.device}")
    print(f"load average before: {load_avg()}")
    # The model alone: one forward + backward pass on a 224x224 picture.
    x = victim.grad.prepare(rgbs[0][1])
    best_fb = float("inf")
    for _ in range(5 + 10 * args.rounds):
        t0 = time.perf_counter()
        xr = x.clone().requires_grad_(True)
        victim.grad(xr)[0, 0].backward()
        best_fb = min(best_fb, time.perf_counter() - t0)
    # Warm-up, then interleaved rounds.
    for m in methods:
        attackers[m](*rgbs[0][:1], None, rgbs[0][1])
    best = {m: float("inf") for m in methods}
    success = {m: 0 for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            t0 = time.perf_counter()
            ok = sum(attackers[m](src, None, rgb)["success_8bit"] for src, rgb in rgbs)
            best[m] = min(best[m], (time.perf_counter() - t0) / len(rgbs))
            success[m] = ok
    print(f"load average after: {load_avg()}")
    print()
    print("| attack | ms/image | images/s | success (8-bit) on the 6 photos |")
    print("|---|---:|---:|---:|")
    print(f"| model alone: one forward+backward pass | {best_fb * 1e3:.1f} | {1 / best_fb:.1f} | |")
    for m in methods:
        label = attackers[m].cfg.describe()
        print(f"| {label} | {best[m] * 1e3:.0f} | {1 / best[m]:.2f} | {success[m]}/{len(rgbs)} |")


if __name__ == "__main__":
    main()
