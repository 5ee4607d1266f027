"""A foreign YOLO-style detector through `cvtool detect`, against the bundled detector.

    python benchmarks/bench_foreign.py [--repeat 3] [--threads N] [--keep FILE.onnx]

Builds a YOLO-style detector ONNX file here (no exporter, no download): a small strided conv
net (random weights, about 4.3 GFLOPs at 640×640, two thirds of YOLO11n's 6.5) ending in Ultralytics' layout ``(1, 84, 8400)``
(80×80 + 40×40 + 20×20 anchors; centre boxes + 80 class scores through a sigmoid, biased so
that a few hundred candidates clear the default --conf, as on real photos) with Ultralytics'
metadata, fixed batch 1 as `yolo export` writes by default. Then:

1. end to end: `cvtool detect` (a real process) on the sample photos, repeated, for this file
   and for the bundled ``ssd_mobilenet_v2_coco``: wall ms per picture, and the records' own
   inference ms per picture;
2. separately, in one process: the model's own time (ONNX Runtime session run) and cvtool's
   decode + NMS (:class:`cvtool.tasks.detect.YoloDetector`) on its outputs, per picture,
   medians; the budget is decode + NMS ≤ 10% of the model's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
COCO80 = [n for n in (ROOT / "cvtool/models/labels/coco.txt").read_text().splitlines()
          if n and not n.startswith("__") and n != "N/A"]


def build(path: Path, seed: int = 0, class_bias: float = -3.0) -> Path:
    """The YOLO-style file: torch builds the graph, torch.onnx writes it, Ultralytics' metadata."""
    import onnx
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def block(cin, cout, s):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.ReLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 64, 2))  # /8
            self.p4 = block(64, 128, 2)
            self.p5 = block(128, 256, 2)
            self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(c, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 84, 1))
                                       for c in (64, 128, 256))
            for m in self.modules():  # He init keeps the activations' spread through the depth
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
            for h in self.heads:
                nn.init.constant_(h[2].bias[4:], class_bias)  # class logits: few clear the threshold

        def forward(self, x):
            p3 = self.stem(x)
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            outs = []
            for feat, head, stride in zip((p3, p4, p5), self.heads, (8, 16, 32)):
                y = head(feat)
                b, _, h, w = y.shape
                gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                grid = torch.stack([gx, gy]).float().reshape(1, 2, h, w)
                xy = (grid + 0.5 + torch.tanh(y[:, 0:2])) * stride
                wh = torch.sigmoid(y[:, 2:4]) * stride * 8
                outs.append(torch.cat([xy, wh, torch.sigmoid(y[:, 4:])], 1).reshape(b, 84, h * w))
            return torch.cat(outs, 2)

    net = Net().eval()
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(net, torch.zeros(1, 3, 640, 640), str(tmp), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["output0"])
    model = onnx.load(str(tmp))
    os.unlink(tmp)
    meta = {"description": "YOLO-style benchmark detector (random weights)", "author": "Ultralytics",
            "version": "8.3.40", "stride": 32, "task": "detect", "batch": 1, "imgsz": [640, 640],
            "names": dict(enumerate(COCO80)), "args": {"batch": 1, "nms": False}}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=str(v))
    onnx.save(model, str(path))
    return path


def cli_run(model: str, inputs: list[str], threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "cvtool", "detect", *inputs, "--model", model, "-q", "-f", "jsonl"]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{model}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    return {"wall_ms_per_picture": wall * 1e3 / len(recs),
            "inference_ms_per_picture": statistics.median(r["time_ms"]["inference"] for r in recs),
            "detections_per_picture": statistics.mean(r["count"] for r in recs)}


def split_timing(path: Path, photos: list[Path], threads: int | None, rounds: int) -> dict:
    from cvtool.io.decode import decode_image
    from cvtool.io.sources import Frame
    from cvtool.models.loader import load
    from cvtool.tasks.base import make_runner
    from cvtool.tasks.detect import YoloDetector

    model = load(str(path), task="detect")
    runner = make_runner(model, "onnx", "cpu", threads, notify=lambda m: None)
    post = YoloDetector(model, conf=0.3, iou=0.6)
    model_ms, post_ms, cands = [], [], []
    warm = decode_image(str(photos[0]))
    post(runner(model.preprocess(warm.rgb)[None]), [Frame("warm-up", None, warm.orig_size)])  # untimed
    for _ in range(rounds):
        for p in photos:
            dec = decode_image(str(p))
            x = model.preprocess(dec.rgb)[None]
            frame = Frame(str(p), None, dec.orig_size)
            t0 = time.perf_counter()
            out = runner(x)
            t1 = time.perf_counter()
            post(out, [frame])
            t2 = time.perf_counter()
            model_ms.append((t1 - t0) * 1e3)
            post_ms.append((t2 - t1) * 1e3)
            cands.append(int((out[0, 4:].max(0) > 0.3).sum()))
    m, d = statistics.median(model_ms), statistics.median(post_ms)
    # the photo with the most candidates, its median over the rounds (one slow call on a busy
    # machine is noise, not cost)
    per_photo = [statistics.median(post_ms[i::len(photos)]) for i in range(len(photos))]
    return {"model_ms": m, "decode_nms_ms": d, "ratio": d / m, "decode_nms_max_ms": max(per_photo),
            "candidates": f"{min(cands)}-{max(cands)}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="each sample photo this many times")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="also write the built file here")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    photos = sorted((ROOT / "sample_images").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        f = build(Path(tmp) / "yolo_style.onnx")
        if args.keep:
            shutil.copyfile(f, args.keep)
        inputs = [str(p) for p in photos] * args.repeat
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(inputs)} pictures "
              f"({len(photos)} sample photos × {args.repeat})")
        for name, model in (("yolo-style file (640, 1×84×8400)", str(f)),
                            ("bundled ssd_mobilenet_v2_coco", "ssd_mobilenet_v2_coco")):
            cli_run(model, [str(photos[0])], args.threads)  # warm: export cache, file cache
            r = cli_run(model, inputs, args.threads)
            print(f"cvtool detect, {name}: {r['wall_ms_per_picture']:.1f} ms/picture wall (whole process), "
                  f"inference {r['inference_ms_per_picture']:.1f} ms/picture, "
                  f"{r['detections_per_picture']:.1f} detections/picture")
        s = split_timing(f, photos, args.threads, args.repeat)
        print(f"yolo-style file, batch 1: model {s['model_ms']:.1f} ms, decode + NMS {s['decode_nms_ms']:.2f} ms "
              f"({100 * s['ratio']:.1f}% of the model; slowest photo {s['decode_nms_max_ms']:.2f} ms; "
              f"{s['candidates']} candidates over --conf 0.3 per picture)")


if __name__ == "__main__":
    main()
