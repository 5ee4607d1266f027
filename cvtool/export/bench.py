"""`cvtool models bench`: latency and throughput of one model on every backend that loads here.

All contenders run in one process on the same real photos (the bundled ones, preprocessed once
and repeated to fill a batch), one after another, each for a fixed time per batch size:
latency is the median of batch-1 runs, throughput the best images/second over the batch sizes.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from cvtool.models.loader import LoadedModel
from cvtool.runtime.device import Device, DeviceError, cpu_count, nvidia_gpu_present


def _timed_runs(fn: Callable[[], object], seconds: float, min_runs: int = 3) -> list[float]:
    fn()  # warm-up (first call allocates, TensorRT builds its engine)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def contenders(model: LoadedModel, threads: int | None = None, include_torch: bool = True
               ) -> list[tuple[str, str, Callable[[], Callable[[np.ndarray], np.ndarray]]]]:
    """(backend, provider, factory) for each way of running ``model`` that can load here."""
    from cvtool.models.weights import cache_home
    from cvtool.runtime.onnx import OnnxRunner, _ort

    out = []
    if include_torch and model.kind != "onnx":
        from cvtool.runtime.torch import TorchRunner

        out.append(("torch", "eager cpu", lambda: TorchRunner(model.torch_module(), Device("cpu"), threads)))
        import torch

        if torch.cuda.is_available():
            out.append(("torch", "eager cuda", lambda: TorchRunner(model.torch_module(), Device("cuda"))))
    if model.spec is not None and not model.spec.exportable:
        return out  # torch only (e.g. a captioner's generation loop)
    path, _ = model.onnx_path()

    def onnx_runner(*args, **kwargs):
        runner = OnnxRunner.fresh(*args, **kwargs)
        if model.foreign is not None:  # another exporter's file takes its own input tensor
            from cvtool.models.foreign import ForeignRunner

            runner = ForeignRunner(runner, model.foreign.feed)
        return runner

    out.append(("onnxruntime", "CPUExecutionProvider", lambda: onnx_runner(path, Device("cpu"), threads)))
    available = set(_ort().get_available_providers()) if nvidia_gpu_present() else set()
    if "CUDAExecutionProvider" in available:
        out.append(("onnxruntime", "CUDAExecutionProvider",
                    lambda: onnx_runner(path, Device("cuda"), tensorrt=False)))
    if "TensorrtExecutionProvider" in available:
        out.append(("onnxruntime", "TensorrtExecutionProvider",
                    lambda: onnx_runner(path, Device("cuda"), cache_dir=cache_home())))
    return out


def bench(model: LoadedModel, batches=(1, 2, 4, 8, 16, 32), seconds: float = 1.0,
          threads: int | None = None, include_torch: bool = True) -> list[dict]:
    from cvtool.export.onnx import _pictures

    pics = _pictures(model, None)
    rows = []
    for backend, provider, make in contenders(model, threads, include_torch):
        try:
            runner = make()
        except DeviceError as e:
            rows.append({"backend": backend, "provider": provider, "error": str(e)})
            continue
        if backend == "onnxruntime" and runner.provider != provider:
            rows.append({"backend": backend, "provider": provider,
                         "error": f"did not load (got {runner.provider})"})
            continue
        extra = model.extra_inputs()
        fixed = getattr(runner, "fixed_batch", None)
        lat = None  # a file with a fixed batch > 1 has no batch-1 latency to measure
        if fixed in (None, 1):
            lat = statistics.median(_timed_runs(lambda: runner(pics[:1], extra), seconds)) * 1e3
        best_ips, best_b = 0.0, 1
        for b in ((fixed,) if fixed else batches):
            x = np.ascontiguousarray(np.resize(pics, (b, *pics.shape[1:])))
            ips = b / statistics.median(_timed_runs(lambda: runner(x, extra), seconds))
            if ips > best_ips:
                best_ips, best_b = ips, b
        rows.append({"backend": backend, "provider": provider, "device": runner.device,
                     "latency_ms_batch1": None if lat is None else round(lat, 3),
                     "throughput_img_s": round(best_ips, 1),
                     "best_batch": best_b, "threads": threads or cpu_count()})
    return rows
