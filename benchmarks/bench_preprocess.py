"""Preprocessing: what reduced-size JPEG decoding would cost in accuracy, and what decode +
preprocess cost per picture.

    python benchmarks/bench_preprocess.py [--rounds 7]

(1) For large JPEGs (upscaled sample photos, plain and with fine detail) and an antialiased
    preprocessing (torchvision's efficientnet_b0: shorter side 256, bicubic), the network input made
    from a DCT-reduced decode (keeping 1, 2 or 4 source pixels per input pixel) against the one
    made from the full decode, in grey levels: the test tolerance for the full decode is max 1,
    mean 0.01 against torchvision's PIL path.
(2) Decode + preprocess time per picture, one thread, best of ``--rounds``, on the photo set of
    benchmarks/bench_classify.py (random crops of the samples at 500x375 ... 800x600, quality 90),
    for the default model's preprocessing.

Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=quality)
    return b.getvalue()


def large_photos() -> dict[str, bytes]:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    a = {n: np.asarray(Image.open(ROOT / "sample_images" / f"{n}.jpg").convert("RGB"))
         for n in ("rocket", "astronaut", "china", "coffee")}
    noisy = lambda x: np.clip(x.astype(int) + rng.integers(-60, 60, x.shape), 0, 255).astype(np.uint8)
    return {
        "rocket 3000x2000": jpeg(cv2.resize(a["rocket"], (3000, 2000), interpolation=cv2.INTER_CUBIC)),
        "astronaut 2048x2048": jpeg(cv2.resize(a["astronaut"], (2048, 2048), interpolation=cv2.INTER_CUBIC)),
        "astronaut 4000x3000": jpeg(cv2.resize(a["astronaut"], (4000, 3000), interpolation=cv2.INTER_CUBIC)),
        "china + noise 2048x1536": jpeg(noisy(cv2.resize(a["china"], (2048, 1536)))),
        "coffee + noise 4032x3024": jpeg(noisy(cv2.resize(a["coffee"], (4032, 3024)))),
        "china tiled 4096x4096": jpeg(np.tile(a["china"], (10, 7, 1))[:4096, :4096]),
    }


def draft_table() -> None:
    import cvtool.models.preprocess as P
    from cvtool.io.decode import decode_bytes
    from cvtool.models.registry import get

    pre = get("efficientnet_b0").weights.preprocess  # antialiased (shorter side 256, bicubic)
    photos = large_photos()
    print("| photo | factor 1 | factor 2 | factor 4 |")
    print("|---|---|---|---|")
    for name, data in photos.items():
        full = pre(decode_bytes(data).rgb).astype(int)
        cells = []
        for factor in (1, 2, 4):
            P.DRAFT_FACTOR = factor
            try:
                d = decode_bytes(data, draft=pre.draft_size)
                diff = np.abs(pre(d.rgb).astype(int) - full)
            finally:
                P.DRAFT_FACTOR = None
            cells.append(f"{d.rgb.shape[1]}x{d.rgb.shape[0]}: max {diff.max()}, mean {diff.mean():.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def bench_photos(n: int = 60) -> list[bytes]:
    from PIL import Image

    rng = random.Random(0)
    srcs = [Image.open(p).convert("RGB") for p in sorted((ROOT / "sample_images").glob("*.jpg"))]
    sizes = [(500, 375), (375, 500), (640, 480), (800, 600), (600, 400)]
    out = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        b = io.BytesIO()
        im.crop((x, y, x + cw, y + ch)).resize(sizes[i % len(sizes)], Image.BICUBIC).save(b, "JPEG", quality=90)
        out.append(b.getvalue())
    return out


def cost_table(rounds: int) -> None:
    import cv2

    from cvtool.io.decode import decode_bytes
    from cvtool.models.registry import get

    cv2.setNumThreads(1)
    pre = get("efficientnet_lite0").weights.preprocess
    files = bench_photos()
    decoded = [decode_bytes(f).rgb for f in files]

    def best(fn, items):
        t_best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for it in items:
                fn(it)
            t_best = min(t_best, (time.perf_counter() - t0) / len(items) * 1e3)
        return t_best

    dec = best(lambda f: decode_bytes(f, draft=pre.draft_size), files)
    prep = best(pre, decoded)
    print("| step | ms per picture (1 thread) |")
    print("|---|---:|")
    print(f"| decode (full) | {dec:.2f} |")
    aa = "antialiased" if pre.antialias else "no antialiasing"
    print(f"| preprocess ({pre.kind}, {pre.interpolation}, {aa}) | {prep:.2f} |")
    print(f"| both | {dec + prep:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    draft_table()
    print()
    cost_table(args.rounds)


if __name__ == "__main__":
    main()
