"""`cvtool report` at scale: page size, build time, and time to first paint in headless Chromium.

Synthetic detect records (3 boxes each) over real photos:
  * "6 photos": N records cycling over the six sample photos (6 thumbnails; the records dominate);
  * "distinct": N records, each its own picture file (copies of the sample photos under a temp
    folder), so N thumbnails are embedded (320 px up to 2,000 pictures, 160 px beyond, within
    the 48 MiB thumbnail budget).

First paint is the browser's own figure (Performance API, ``first-contentful-paint``); "cards"
is the time until the script has drawn the first screen of cards (``performance.now()`` after
the page's script ran); "scroll" the mean time to re-render after a jump of one screen.

Usage: python benchmarks/bench_report.py [--n 1000 10000] [--distinct 1000]
Needs Debian's chromium and chromium-driver (README, Set-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def records(n: int, sources: list[str], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = ["person", "cat", "dog", "car", "cup", "bowl", "bicycle", "bird"]
    out = []
    for i in range(n):
        dets = []
        for _ in range(3):
            x, y = rng.uniform(0, 300, 2)
            dets.append({"box": [round(x, 2), round(y, 2), round(x + 80, 2), round(y + 60, 2)],
                         "score": round(float(rng.random()), 5), "class_id": 1, "label": str(rng.choice(labels))})
        ok = i % 97 != 5
        r = {"source": sources[i % len(sources)], "frame": None, "timestamp": None, "task": "detect",
             "model": "ssd_mobilenet_v2_coco", "backend": "onnxruntime", "provider": "CPUExecutionProvider",
             "device": "cpu", "ok": ok, "error": None if ok else "not a recognised image format",
             "image_size": {"width": 451, "height": 300} if ok else None,
             "time_ms": {"decode": 5.0, "preprocess": 0.5, "inference": 20.0} if ok else None,
             "batch_size": 8 if ok else None}
        if ok:
            r.update(count=3, detections=dets)
        out.append(r)
    return out


def browser():
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                            options=o)


def measure(d, page: Path) -> dict:
    d.get("about:blank")
    t0 = time.perf_counter()
    d.get(page.resolve().as_uri())
    load_s = time.perf_counter() - t0
    fcp = d.execute_script("""return new Promise(r => {
        new PerformanceObserver(l => { var e = l.getEntries().find(e => e.name === 'first-contentful-paint'); if (e) r(e.startTime); })
            .observe({type: 'paint', buffered: true});
        setTimeout(() => r(null), 10000); });""")
    cards = d.execute_script("return document.querySelectorAll('.card').length")
    scroll = d.execute_script("""
        var t = [], h = document.body.scrollHeight, step = window.innerHeight;
        function one(y) { return new Promise(r => { var s = performance.now(); window.scrollTo(0, y);
            requestAnimationFrame(() => { t.push(performance.now() - s); r(); }); }); }
        var p = Promise.resolve();
        for (var k = 0; k < 40; k++) { (function (y) { p = p.then(() => one(y)); })((k * 7919 * step) % h); }
        return p.then(() => t.reduce((a, b) => a + b, 0) / t.length);""")
    return {"fcp_ms": fcp, "load_s": load_s, "cards_in_dom": cards, "scroll_ms": scroll}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--distinct", type=int, nargs="*", default=[1000])
    args = ap.parse_args()
    from cvtool.render.report import Loaded, write_report

    photos = sorted(str(p) for p in (ROOT / "sample_images").glob("*.jpg"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    d = browser()
    rows = []
    try:
        cases = [("6 photos", n, photos) for n in args.n]
        for n in args.distinct:
            folder = tmp / f"pics{n}"
            folder.mkdir()
            srcs = []
            for i in range(n):
                p = folder / f"p{i:05d}.jpg"
                shutil.copyfile(photos[i % len(photos)], p)
                srcs.append(str(p))
            cases.append(("distinct", n, srcs))
        for kind, n, srcs in cases:
            page = tmp / f"{kind.replace(' ', '')}-{n}.html"
            t0 = time.perf_counter()
            size = write_report(Loaded(records=records(n, srcs)), page)
            build = time.perf_counter() - t0
            m = measure(d, page)
            rows.append((kind, n, size, build, m))
            print(f"{kind:9s} {n:6d} records: {size / 1e6:6.2f} MB, built in {build:5.2f} s, "
                  f"first paint {m['fcp_ms']:.0f} ms, loaded in {m['load_s']:.2f} s, "
                  f"{m['cards_in_dom']} cards in the DOM, {m['scroll_ms']:.1f} ms per scroll jump", flush=True)
    finally:
        d.quit()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
