"""Overhead of `--engine ray` against the local engine, on the same folders, in the same run.

    python benchmarks/bench_ray.py [--small 48] [--large 480] [--rounds 2] [--batch 8] [--cpus 2] [--task classify]

Makes two folders of JPEG photos (crops of the bundled sample photos, 500x375 to 800x600, as
bench_classify.py does), starts one local Ray instance (``--cpus`` CPUs, no dashboard), then
runs the CLI in this process on each folder with each engine (after one uncounted warm-up run
of each), interleaved small/local, small/ray, large/local, large/ray for ``--rounds`` rounds,
keeping each one's best:

  * wall     : seconds for the whole command (model already exported and cached; the Ray
               engine's time includes planning, actor start and model load, not ray.init);
  * marginal : (large - small) images / (large - small) seconds, i.e. the steady-state
               throughput once the fixed start-up cost is paid;
  * ratio    : ray / local marginal throughput (1.0 = no overhead).

ray.init is timed once, separately. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_classify import make_photos  # noqa: E402


def uptime() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=48)
    ap.add_argument("--large", type=int, default=480)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--task", default="classify", choices=["classify", "detect"])
    args = ap.parse_args()

    import ray
    from typer.testing import CliRunner

    from cvtool.cli.app import app
    from cvtool.models.loader import load

    load({"classify": "efficientnet_lite0", "detect": "ssd_mobilenet_v2_coco"}[args.task]).onnx_path()
    tmp = Path(tempfile.mkdtemp(prefix="cvtool-bench-ray-"))
    folders = {}
    for name, n in (("small", args.small), ("large", args.large)):
        folders[name] = tmp / name
        folders[name].mkdir()
        make_photos(folders[name], n)

    load_before = uptime()
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    init_s = time.perf_counter() - t0
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    runner = CliRunner()

    def cli(*a: str) -> float:
        t = time.perf_counter()
        res = runner.invoke(app, [args.task, *map(str, a), "-q", "--batch", str(args.batch)])
        dt = time.perf_counter() - t
        assert res.exit_code == 0, (res.exit_code, res.stderr[-2000:])
        return dt

    wall: dict[tuple[str, str], float] = {}
    try:
        # Warm-up (not counted): Ray's first job also starts its pool of worker processes.
        cli(folders["small"], "-o", tmp / "warm.jsonl", "--overwrite")
        cli(folders["small"], "--engine", "ray", "--output-dir", tmp / "warm", "--overwrite")
        for r in range(args.rounds):
            for size in ("small", "large"):
                out = tmp / f"out-{size}.jsonl"
                t = cli(folders[size], "-o", out, "--overwrite")
                wall[size, "local"] = min(t, wall.get((size, "local"), t))
                t = cli(folders[size], "--engine", "ray", "--output-dir", tmp / f"ray-{size}", "--overwrite")
                wall[size, "ray"] = min(t, wall.get((size, "ray"), t))
                n = sum(1 for _ in open(out))
                m = sum(sum(1 for _ in open(p)) for p in (tmp / f"ray-{size}").glob("part-*.jsonl"))
                assert n == m == (args.small if size == "small" else args.large), (n, m)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    dn = args.large - args.small
    marginal = {e: dn / (wall["large", e] - wall["small", e]) for e in ("local", "ray")}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}, Ray {ray.__version__}; Ray started with {args.cpus} CPUs")
    print(f"load average before: {load_before}; after: {uptime()}; ray.init: {init_s:.1f} s\n")
    print(f"| engine | {args.small} images (s) | {args.large} images (s) | {args.large} images/s, end to end "
          f"| marginal images/s | vs local |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in ("local", "ray"):
        print(f"| {e} | {wall['small', e]:.1f} | {wall['large', e]:.1f} | {args.large / wall['large', e]:.1f} "
              f"| {marginal[e]:.1f} | {marginal[e] / marginal['local']:.2f}x |")


if __name__ == "__main__":
    main()
