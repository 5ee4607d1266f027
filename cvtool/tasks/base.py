"""What every inference task shares: records, options, the runner choice and the run loop.

A task supplies ``postprocess(outputs, frames) -> list[dict]``; :func:`run` does the rest:
expand inputs → decode and preprocess in worker threads → batch → runner → postprocess →
one :class:`Record` per picture (or per failed input), in input order.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from cvtool.io.decode import decode_image
from cvtool.io.sources import Failed, Frame, Source, frame_jobs
from cvtool.models.loader import LoadedModel, ModelError
from cvtool.runtime.batching import ordered_map, windows
from cvtool.runtime.device import Device, DeviceError, cpu_count, parse_device


@dataclass
class Record:
    """One output line: a result for a picture, or an error naming the input."""

    source: str
    task: str
    model: str
    frame: int | None = None
    timestamp: float | None = None
    backend: str | None = None
    provider: str | None = None
    device: str | None = None
    image_size: tuple[int, int] | None = None  # (width, height)
    time_ms: dict | None = None
    batch_size: int | None = None  # pictures in the inference batch this one ran in
    error: str | None = None
    fields: dict = field(default_factory=dict)  # the task's own result fields

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "timestamp": None if self.timestamp is None else round(self.timestamp, 4),
            "task": self.task,
            "model": self.model,
            "backend": self.backend,
            "provider": self.provider,
            "device": self.device,
            "ok": self.ok,
            "error": self.error,
            "image_size": None if self.image_size is None else
            {"width": self.image_size[0], "height": self.image_size[1]},
            "time_ms": self.time_ms,
            "batch_size": self.batch_size,
        }
        d.update(self.fields)
        return d


@dataclass
class RunOptions:
    backend: str = "auto"  # auto | onnx | torch
    device: str = "auto"
    batch: int = 8
    workers: int | None = None  # decode threads
    threads: int | None = None  # inference threads (CPU)
    vid_stride: int = 1
    max_pixels: int | None = None
    keep_pixels: bool = False  # keep the full-resolution picture on each frame (for --save)


class Runner(Protocol):
    backend: str
    provider: str
    device: str

    def __call__(self, batch: np.ndarray, extra: dict | None = None) -> np.ndarray: ...  # uint8 (B, H, W, 3)


@dataclass
class Prepared:
    frame: Frame
    tensor: np.ndarray
    decode_ms: float
    preprocess_ms: float


def make_runner(model: LoadedModel, backend: str = "auto", device: str = "auto",
                threads: int | None = None, notify: Callable[[str], None] | None = None,
                allow_cpu_fallback: bool = False) -> Runner:
    """Build the runner for ``model``: ONNX Runtime by default, torch on request or as the
    fallback when a model cannot be exported. Raises ModelError/DeviceError with a clear text;
    a CUDA request that cannot be met is an error unless ``allow_cpu_fallback``."""
    from cvtool.models.weights import cache_home

    dev = parse_device(device)
    notify = notify or (lambda msg: print(f"cvtool: {msg}", file=sys.stderr))
    if backend not in ("auto", "onnx", "torch"):
        raise ModelError(f"--backend {backend!r}: expected auto, onnx or torch")
    if backend == "onnx" and model.spec is not None and not model.spec.exportable:
        raise ModelError(f"{model.name} runs on torch only (it does not export to ONNX); use --backend torch or auto")
    size_problem = getattr(model, "onnx_size_problem", lambda: None)()  # e.g. DPT fed at varying sizes
    if size_problem:
        if backend == "onnx":
            raise ModelError(f"{size_problem}; use --backend torch or auto")
        if backend == "auto":
            notify(f"{size_problem}: running on torch")
    elif backend in ("auto", "onnx") and (model.spec is None or model.spec.exportable or model.kind == "onnx"):
        from cvtool.runtime.onnx import OnnxRunner

        try:
            path, fresh = model.onnx_path()
            if fresh:
                notify(f"exported {model.name} to ONNX once, cached at {path}")
        except (ModelError, DeviceError):
            raise
        except Exception as e:  # an exporter limitation, not a user mistake
            if backend == "onnx":
                raise ModelError(f"{model.name}: ONNX export failed ({str(e).splitlines()[0][:200]})") from None
            # said even under -q: a fallback is never silent, and the failure may be a cvtool bug
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"cvtool: warning: {model.name}: ONNX export failed ({type(e).__name__}"
                  f"{': ' + first if first else ''}); running on torch instead (CVTOOL_DEBUG=1 shows the "
                  "traceback)", file=sys.stderr)
            if os.environ.get("CVTOOL_DEBUG", "").lower() in ("1", "true", "yes"):
                import traceback

                traceback.print_exception(e, file=sys.stderr)
        else:
            runner = OnnxRunner(path, dev, threads, cache_home(), allow_cpu_fallback)
            if runner.note:
                notify(runner.note)
            if model.foreign is not None:  # another exporter's file: its own input tensor, all outputs
                from cvtool.models.foreign import ForeignRunner

                return ForeignRunner(runner, model.foreign.feed)
            return runner
    from cvtool.runtime.torch import TorchRunner

    runner = TorchRunner(model.torch_module(), dev, threads, allow_cpu_fallback)
    if runner.note:
        notify(runner.note)
    return runner


def _image_loader(preprocess, opts: RunOptions) -> Callable[[str], Prepared]:
    """The network input is always made the same way, whatever the output options: from the
    decode that ``preprocess.draft_size`` allows. When the full picture is wanted too (``--save``
    and friends) and that decode was reduced, the picture is decoded again, in full, for them."""
    draft = preprocess.draft_size

    def load(path: str) -> Prepared:
        t0 = time.perf_counter()
        dec = decode_image(path, opts.max_pixels, draft)
        t1 = time.perf_counter()
        tensor = preprocess(dec.rgb)
        t2 = time.perf_counter()
        pixels = None
        if opts.keep_pixels:
            reduced = (dec.rgb.shape[1], dec.rgb.shape[0]) != dec.orig_size
            pixels = decode_image(path, opts.max_pixels).rgb if reduced else dec.rgb
        frame = Frame(path, pixels, dec.orig_size, meta={"mode": dec.mode, "format": dec.format})
        return Prepared(frame, tensor, (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    return load


def _prepare_video_frame(frame: Frame, preprocess, keep: bool) -> Prepared:
    t0 = time.perf_counter()
    tensor = preprocess(frame.rgb)
    dt = (time.perf_counter() - t0) * 1e3
    if not keep:
        frame.rgb = None
    return Prepared(frame, tensor, 0.0, dt)


def infer_by_shape(runner: Runner, postprocess, ready: list[Prepared]) -> tuple[list[dict], list[int]]:
    """Run the window's pictures in one batch per network input shape (models fed at each
    picture's own size, e.g. Depth Anything keeping the aspect ratio, give several shapes in
    one window) → per picture, in window order: its result fields and its batch's size."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(ready):
        groups.setdefault(p.tensor.shape, []).append(i)
    results: list = [None] * len(ready)
    sizes = [0] * len(ready)
    extra = getattr(postprocess, "extra_inputs", None)
    for idx in groups.values():
        out = runner(np.stack([ready[i].tensor for i in idx]), extra)
        for i, fields in zip(idx, postprocess(out, [ready[i].frame for i in idx])):
            results[i], sizes[i] = fields, len(idx)
    return results, sizes


def run(task_name: str, model: LoadedModel, runner: Runner, sources: Iterable[Source],
        postprocess: Callable[[np.ndarray, list[Frame]], list[dict]], opts: RunOptions
        ) -> Iterator[tuple[Record, Frame | None]]:
    """Yield ``(record, frame)`` per picture in input order; ``frame`` is None for failures."""
    import cv2

    # Pictures are decoded in parallel by our own workers; OpenCV's internal thread pool on
    # top of that only fights them (and the runner) for the same cores.
    cv2.setNumThreads(1)
    preprocess = model.preprocess
    load_image = _image_loader(preprocess, opts)

    def wrap(job):
        def call():
            item = job()
            if isinstance(item, Frame):
                try:
                    return _prepare_video_frame(item, preprocess, opts.keep_pixels)
                except Exception as e:  # an unexpected failure still yields one record
                    return Failed(item.source, f"internal error: {type(e).__name__}: {e}", item.frame)
            return item
        return call

    jobs = (wrap(j) for j in frame_jobs(sources, load_image, opts.vid_stride, opts.max_pixels))
    workers = opts.workers or min(4, max(1, cpu_count()))
    base = dict(task=task_name, model=model.name)
    stream = ordered_map(jobs, workers=workers, depth=max(2 * opts.batch, 2 * workers))
    for window in windows(stream, opts.batch, lambda it: isinstance(it, Prepared)):
        ready = [it for it in window if isinstance(it, Prepared)]
        results: list[dict] = []
        sizes: list[int] = []
        infer_ms = 0.0
        if ready:
            t0 = time.perf_counter()
            results, sizes = infer_by_shape(runner, postprocess, ready)
            infer_ms = (time.perf_counter() - t0) * 1e3 / len(ready)
        it, batch_sizes = iter(results), iter(sizes)
        for item in window:
            if isinstance(item, Failed):
                yield Record(source=item.source, frame=item.frame, error=item.error, **base), None
                continue
            f = item.frame
            yield Record(
                source=f.source, frame=f.frame, timestamp=f.timestamp, backend=runner.backend,
                provider=runner.provider, device=runner.device, image_size=f.orig_size,
                time_ms={"decode": round(item.decode_ms, 3), "preprocess": round(item.preprocess_ms, 3),
                         "inference": round(infer_ms, 3)},
                batch_size=next(batch_sizes), fields=next(it), **base), f
