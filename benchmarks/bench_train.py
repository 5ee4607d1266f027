"""Fashion-MNIST with `cvtool train`: kNN and linear-softmax baselines and the small CNN.

Runs each configuration as the real command (``python -m cvtool train ...``) in a fresh process,
measures its wall time (imports and data loading included), reads the summary record it prints,
and writes a markdown table for docs/benchmarks.md. The machine's load average is recorded before
and after, because other work on a shared 2-core machine changes the numbers a lot.

    python benchmarks/bench_train.py                  # all three
    python benchmarks/bench_train.py --only cnn --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "knn": ["--model", "knn", "--distance", "l2"],
    "linear": ["--model", "linear", "--epochs", "10", "--lr", "2e-3"],
    "cnn": ["--model", "cnn", "--epochs", "12", "--widths", "16,32", "--batch", "128", "--flip"],
}


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run(name: str, extra: list[str], runs_dir: str, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "cvtool", "train", "fashion-mnist", *CONFIGS[name], *extra, "--runs-dir", runs_dir,
           "--name", f"fashion-mnist-{name}", "--format", "json"]
    if threads:
        cmd += ["--threads", str(threads)]
    before = load()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (Path(runs_dir) / f"{name}.log").write_text(p.stderr)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"{name}: exit {p.returncode}")
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    cfg = json.loads((Path(runs_dir) / f"fashion-mnist-{name}" / "config.json").read_text())
    return {"name": name, "command": "cvtool train fashion-mnist " + " ".join(CONFIGS[name] + extra)
            + (f" --threads {threads}" if threads else ""),
            "wall_s": round(wall, 1), "test_acc": rec["test_acc"], "val_acc": rec["val_acc"],
            "epochs": rec["epochs"], "images_per_s": rec["images_per_s"], "load_before": before,
            "load_after": load(), "threads": cfg["resolved"]["threads"],
            "parameters": cfg["resolved"]["parameters"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only these (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own)")
    ap.add_argument("--runs-dir", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--extra", default="", help="more options for every run, e.g. '--batch 256'")
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    args = ap.parse_args()
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="bench-train-")
    names = args.only or list(CONFIGS)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"runs in {runs_dir}", file=sys.stderr)
    rows = []
    for n in names:
        r = run(n, args.extra.split(), runs_dir, args.threads)
        rows.append(r)
        print(f"{n}: test accuracy {r['test_acc']:.4f} in {r['wall_s']} s (load {r['load_before']} -> "
              f"{r['load_after']})", file=sys.stderr)
        if args.json:
            print(json.dumps(r))
    print("\n| model | command | test accuracy | wall time | training img/s | threads | load average (1/5/15 min) before → after |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        ips = f"{r['images_per_s']:,.0f}" if r["images_per_s"] else "—"
        print(f"| {r['name']} | `{r['command']}` | {r['test_acc']:.2%} | {r['wall_s'] / 60:.1f} min | {ips} | "
              f"{r['threads']} | {r['load_before']} → {r['load_after']} |")


if __name__ == "__main__":
    main()
