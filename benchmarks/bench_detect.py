"""Detection latency and throughput: cv2.dnn on the packaged TF graph vs cvtool's torch and
ONNX Runtime paths (the same SSD-MobileNet-v2 weights).

    python benchmarks/bench_detect.py [--rounds 5] [--seconds 2]

All in one process, on the bundled sample photos resized to 300x300 once beforehand, NMS
included for every contender (cv2.dnn's DetectionOutput layer; cvtool's NMS inside its
model). Latency: median batch-1 call; throughput: best images/second over batches 1-32
(cv2.dnn's TF importer runs one picture per forward pass, so its best batch is 1).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np


def timed(fn, seconds: float) -> list[float]:
    fn()
    out, end = [], time.perf_counter() + seconds
    while len(out) < 5 or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import cv2
    import onnxruntime
    import torch

    from cvtool.assets import photos
    from cvtool.io.decode import decode_image
    from cvtool.models.loader import load
    from cvtool.models.zoo.ssd_mobilenet_v2 import packaged_graph
    from cvtool.runtime.device import Device, cpu_count
    from cvtool.runtime.onnx import OnnxRunner
    from cvtool.runtime.torch import TorchRunner

    model = load("ssd_mobilenet_v2_coco")
    pics = np.stack([model.preprocess(decode_image(str(p)).rgb) for p in photos()])  # (4, 300, 300, 3)
    extra = model.extra_inputs()
    torch_runner = TorchRunner(model.torch_module(), Device("cpu"))
    path, _ = model.onnx_path()
    ort_runner = OnnxRunner(path, Device("cpu"))
    contenders = {}
    if hasattr(cv2.dnn, "readNetFromTensorflow"):  # OpenCV 5.1 reads no TensorFlow graph
        pb, pbtxt = packaged_graph()
        net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        cv2.setNumThreads(cpu_count())
        blobs = [cv2.dnn.blobFromImage(p[:, :, ::-1], size=(300, 300), swapRB=True) for p in pics]

        def cv2_run(batch):
            for i in range(len(batch)):
                net.setInput(blobs[i % len(blobs)])
                net.forward()

        contenders["cv2.dnn (packaged TF graph)"] = (cv2_run, (1,))
    else:
        print(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromTensorflow: cv2.dnn is left out", file=sys.stderr)
    contenders["cvtool torch eager"] = (lambda b: torch_runner(b, extra), (1, 2, 4, 8, 16, 32))
    contenders["cvtool onnxruntime (default path)"] = (lambda b: ort_runner(b, extra), (1, 2, 4, 8, 16, 32))
    lat = {k: float("inf") for k in contenders}
    ips = {k: 0.0 for k in contenders}
    best_b = {k: 1 for k in contenders}
    for _ in range(args.rounds):
        for k, (fn, batches) in contenders.items():
            lat[k] = min(lat[k], statistics.median(timed(lambda: fn(pics[:1]), args.seconds)) * 1e3)
            for b in batches:
                x = np.ascontiguousarray(np.resize(pics, (b, *pics.shape[1:])))
                v = b / statistics.median(timed(lambda: fn(x), args.seconds / 2))
                if v > ips[k]:
                    ips[k], best_b[k] = v, b
    base = lat["cv2.dnn (packaged TF graph)"]
    print(f"machine: {platform.machine()}, {cpu_count()} cores; opencv {cv2.__version__}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; best of {args.rounds} rounds\n")
    print("| path | ms/img at batch 1 | vs cv2.dnn latency | img/s at best batch | best batch |")
    print("|---|---:|---:|---:|---:|")
    for k in contenders:
        print(f"| {k} | {lat[k]:.1f} | {lat[k] / base:.2f}x | {ips[k]:.1f} | {best_b[k]} |")


if __name__ == "__main__":
    main()
