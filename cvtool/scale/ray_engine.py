"""The driver of ``--engine ray``: plan the inputs, start the Ray Data pipeline, account for
every input.

Pipeline (Ray Data, streaming)::

    from_arrow(planned inputs) ──flat_map(decode_row)──► map_batches(Infer, ActorPoolStrategy(size=N))
      (driver: folders, lists,    (CPU tasks: cvtool's decode        (actors: model loaded once, same
       manifests, --resume)        path + the model's preprocess)     runner as the local engine,
                                                                        one shard written per batch)

The driver only receives a one-row summary per shard (name, counts, sources, error texts). It
deduplicates them by shard name (a shard's name is a digest of its inputs, so a re-run batch
rewrites the same file), and at the end checks that every planned input has a record. Ray
retries a batch whose worker died (up to ``RETRIES`` times, on a restarted actor); a batch that
still fails is dropped by Ray Data (``max_errored_blocks=-1``) and its inputs get error records
written by the driver, so the output always holds exactly one record per input (per video
frame). Nothing here imports Ray at module level.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, TextIO

from cvtool.scale.inputs import InputError, Item, plan
from cvtool.scale.store import FORMATS, SUMMARY, OutputDir, StoreError

RETRIES = 3  # per batch, after a worker process dies (decode task or inference actor)
# Tests only (see workers.Infer): kill the first inference worker once, after it wrote a shard
# (the value is a marker file), or every worker whose batch holds a source containing the value.
CRASH_ENV, POISON_ENV = "CVTOOL_RAY_TEST_CRASH_ONCE", "CVTOOL_RAY_TEST_CRASH_ON"
INSTALL_HINT = "pip install 'cvtool[ray]'  (or: pip install 'ray[data]' pyarrow)"


class ScaleError(Exception):
    """A usage or set-up problem with a Ray run (exit code 2); the message says what to do."""


@dataclass
class RayOptions:
    output_dir: str
    output_format: str = "jsonl"
    address: str | None = None
    workers: int | None = None  # inference actors (default: one per GPU share, or one per node)
    gpus_per_worker: float = 0.0
    batch: int = 8
    resume: bool = False
    overwrite: bool = False
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    allow_cpu_fallback: bool = False
    max_pixels: int | None = None
    vid_stride: int = 1
    quiet: bool = False
    null: bool = False  # -0: the paths on stdin are NUL-separated


@dataclass
class RunResult:
    inputs: int  # planned inputs, before --resume skipped any
    skipped: int  # inputs that already had records (--resume)
    records: int  # records written by this run (lost ones included)
    failed: int  # of which error records
    lost: int  # inputs whose batch Ray gave up on (error records written by the driver)
    shards: int
    seconds: float

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def require_ray():
    """Import Ray Data (and pyarrow), or say clearly how to get them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ScaleError(f"--engine ray needs Ray Data and pyarrow, which are not installed here "
                         f"({e.name or e}); install them with: {INSTALL_HINT}") from None
    return ray


def _say(quiet: bool) -> Callable[[str], None]:
    return (lambda _m: None) if quiet else (lambda m: print(f"cvtool: {m}", file=sys.stderr))


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


def run(task: str, sources: list[str], loaded, postprocess, opts: RayOptions,
        stdin: TextIO | None = None, runner_factory=None) -> RunResult:
    """Run ``task`` over ``sources`` on Ray, writing records to ``opts.output_dir``.

    ``loaded`` and ``postprocess`` are what the local engine gets (``make_postprocess(loaded)``);
    both are sent to the actors, so they must pickle. A task that builds its own runner (caption)
    passes ``runner_factory(loaded) -> (runner, postprocess)`` instead of ``postprocess``: each
    actor calls it (it must pickle too), and the driver exports nothing. Raises :class:`ScaleError` for usage and
    set-up problems, and when the Ray job itself stops (the records written so far stay;
    ``--resume`` continues)."""
    say = _say(opts.quiet)
    if opts.output_format not in FORMATS:
        raise ScaleError(f"--output-format {opts.output_format!r}: expected {' or '.join(FORMATS)}")
    if opts.gpus_per_worker < 0:
        raise ScaleError("--gpus-per-worker must be 0 or more")
    device = _worker_device(opts.device, opts.gpus_per_worker)
    ray = require_ray()
    t0 = time.perf_counter()

    out = OutputDir(opts.output_dir)
    try:
        out.create()
        existing = out.shards()
        if existing and not opts.resume:
            if not opts.overwrite:
                raise ScaleError(f"--output-dir {opts.output_dir} already holds {len(existing)} record shard(s) "
                                 "from an earlier run: --resume continues that run, --overwrite replaces it")
            out.clear()
        out.remove_stale_temporaries()
    except StoreError as e:
        raise ScaleError(str(e)) from None

    try:
        items = plan(sources, stdin, null=opts.null)
        if not items and all(arg == "-" for arg in sources):
            raise InputError("no inputs (standard input listed no paths)")
    except InputError as e:
        raise ScaleError(str(e)) from None
    todo, skip_frames, skipped = _resume_filter(items, out) if opts.resume else (items, {}, 0)
    if skipped:
        say(f"--resume: {skipped} of {len(items)} inputs already have records in {opts.output_dir}")
    if not todo:
        say("nothing to do: every input already has a record")
        return RunResult(len(items), skipped, 0, 0, 0, 0, time.perf_counter() - t0)

    if runner_factory is None:
        backend, onnx_file = _prepare_model(loaded, opts.backend, say)
    else:
        backend, onnx_file = opts.backend, None
    started = _connect(ray, opts.address)
    try:
        workers, nodes = _workers(ray, opts)
        onnx = None
        if onnx_file is not None:
            with open(onnx_file, "rb") as fh:
                data = fh.read()
            onnx = {"path": str(onnx_file), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "data": ray.put(data)}
        ds = _pipeline(ray, todo, skip_frames, loaded, postprocess, onnx, backend, device, workers, out, opts,
                       runner_factory)
        say(f"running {task} on Ray: {len(todo)} inputs, {workers} inference worker(s)"
            f"{f' with {opts.gpus_per_worker:g} GPU each' if opts.gpus_per_worker else ''} on {nodes} node(s)"
            f" → {out.location}")
        result = _collect(ds, todo, out, opts, say, task, loaded.name)
    finally:
        if started:
            ray.shutdown()
    result.inputs, result.skipped = len(items), skipped
    result.seconds = time.perf_counter() - t0
    _write_summary(out, task, loaded.name, opts, result)
    rate = f" ({result.records / result.seconds:.1f}/s)" if result.seconds > 0 and result.records > 1 else ""
    say(f"{result.records} record{'s' if result.records != 1 else ''} in {result.seconds:.2f} s{rate}"
        f"{f', {result.failed} failed' if result.failed else ''} → {out.location} ({result.shards} shard"
        f"{'s' if result.shards != 1 else ''})")
    return result


def _worker_device(device: str, gpus: float) -> str:
    from cvtool.runtime.device import DeviceError, parse_device

    try:
        d = parse_device(device)
    except DeviceError as e:
        raise ScaleError(str(e)) from None
    if d.kind == "auto":
        # Workers given GPUs must use them (no silent CPU fallback); workers without stay on CPU.
        return "cuda" if gpus > 0 else "cpu"
    if d.kind == "cuda" and gpus <= 0:
        raise ScaleError(f"--device {device} with --engine ray: give each worker a GPU with --gpus-per-worker")
    if d.kind == "cuda" and d.index:
        raise ScaleError(f"--device {device}: with --engine ray, Ray assigns each worker its GPU; use --device cuda")
    return str(d)


def _resume_filter(items: list[Item], out: OutputDir):
    try:
        done = out.done()
    except Exception as e:
        raise ScaleError(f"--resume: cannot read the records in {out.location} ({_first_line(e)})") from None
    todo, skip_frames, skipped = [], {}, 0
    for it in items:
        have = done.get(it.source)
        if have is None:
            todo.append(it)
        elif it.kind == "video" and None not in have:  # a video cut short: only its missing frames
            todo.append(it)
            skip_frames[it.source] = sorted(have)
        else:
            skipped += 1
    return todo, skip_frames, skipped


def _prepare_model(loaded, backend: str, say):
    """Export to ONNX on the driver once (as the local engine would); returns the backend the
    workers use and the ONNX file to ship to them (None on torch)."""
    from cvtool.models.loader import ModelError
    from cvtool.runtime.device import DeviceError

    if backend not in ("auto", "onnx", "torch"):
        raise ScaleError(f"--backend {backend!r}: expected auto, onnx or torch")
    spec = loaded.spec
    if backend == "onnx" and spec is not None and not spec.exportable and loaded.kind != "onnx":
        raise ScaleError(f"{loaded.name} runs on torch only (it does not export to ONNX); use --backend torch or auto")
    path = None
    if backend in ("auto", "onnx") and (spec is None or spec.exportable or loaded.kind == "onnx"):
        try:
            path, fresh = loaded.onnx_path()
            if fresh:
                say(f"exported {loaded.name} to ONNX once, cached at {path}")
        except (ModelError, DeviceError) as e:
            raise ScaleError(str(e)) from None
        except Exception as e:
            if backend == "onnx":
                raise ScaleError(f"{loaded.name}: ONNX export failed ({_first_line(e)})") from None
            say(f"{loaded.name}: ONNX export failed ({type(e).__name__}); running on torch instead")
            backend = "torch"
    # The actors get the model by pickle: never the torch module the export may have built.
    loaded._module = None
    return backend, path


def _connect(ray, address: str | None) -> bool:
    """Join ``address`` (``auto``, ``host:port``, ``ray://host:port``) or, without one, a running
    local instance (RAY_ADDRESS, ``ray start``) or a new one. Returns whether we started it
    (and so must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs: dict = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    if not (address or "").startswith("ray://"):
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except Exception as e:
        where = f"--address {address}" if address else "a local Ray instance"
        raise ScaleError(f"cannot start or join {where}: {_first_line(e)}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True


def _workers(ray, opts: RayOptions) -> tuple[int, int]:
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
    if opts.gpus_per_worker > 0:
        if gpus <= 0:
            raise ScaleError("--gpus-per-worker: the Ray cluster has no GPUs")
        if opts.gpus_per_worker > gpus:
            raise ScaleError(f"--gpus-per-worker {opts.gpus_per_worker:g}: the cluster has {gpus:g} GPU(s)")
        workers = opts.workers or max(1, int(gpus // opts.gpus_per_worker))
    else:
        workers = opts.workers or max(1, min(nodes, int(cpus) - 1))
    # Each inference worker reserves one CPU; decoding needs at least one more.
    if workers + 1 > cpus:
        raise ScaleError(f"--workers {workers}: each inference worker reserves 1 CPU and decoding needs at "
                         f"least one more, but the Ray cluster has {cpus:g} CPU(s)")
    return workers, nodes


def _remote_args(method) -> dict:
    """Bounded retries: Ray Data retries dead workers forever by default, and an input that
    kills its worker every time would then never end the job."""
    params = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"retries": RETRIES}
    return {}


def _pipeline(ray, todo: list[Item], skip_frames: dict, loaded, postprocess, onnx, backend: str, device: str,
              workers: int, out: OutputDir, opts: RayOptions, runner_factory=None):
    import pyarrow as pa
    import ray.data

    from cvtool.scale.workers import Infer, decode_row

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1  # a batch Ray gives up on is accounted for by the driver (see _collect)
    ctx.enable_progress_bars = False
    for attr in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_block = max(1, min(64, math.ceil(len(todo) / (4 * cpus))))
    tables = []
    for i in range(0, len(todo), per_block):
        chunk = todo[i:i + per_block]
        tables.append(pa.table({
            "source": [it.source for it in chunk], "path": [it.path for it in chunk],
            "kind": [it.kind for it in chunk], "error": [it.error or "" for it in chunk],
            "skip": pa.array([skip_frames.get(it.source) for it in chunk], pa.list_(pa.int64()))}))
    ds = ray.data.from_arrow(tables)

    retry = _remote_args(ds.map_batches) and _remote_args(ds.flat_map)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ray_remote_args are deprecated in newer Ray Data, not gone
        ds = ds.flat_map(decode_row, num_cpus=1,
                         fn_kwargs={"preprocess": loaded.preprocess, "max_pixels": opts.max_pixels,
                                    "vid_stride": opts.vid_stride},
                         **({"max_retries": retry["retries"]} if retry else {}))
        ds = ds.map_batches(
            Infer, batch_size=opts.batch, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
            num_gpus=opts.gpus_per_worker or None,
            fn_constructor_kwargs={
                "task": loaded.task, "model": loaded, "postprocess": postprocess, "onnx": onnx,
                "backend": backend, "device": device, "threads": opts.threads,
                "allow_cpu_fallback": opts.allow_cpu_fallback, "output_dir": out,
                "output_format": opts.output_format, "runner_factory": runner_factory,
                "crash_marker": os.environ.get(CRASH_ENV) or None,
                "crash_on": os.environ.get(POISON_ENV) or None},
            **({"max_task_retries": retry["retries"]} if retry else {}))
    return ds


def _progress(total: int | None, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    p.start()
    p.add_task("ray", total=total)
    return p


def _collect(ds, todo: list[Item], out: OutputDir, opts: RayOptions, say, task: str, model: str) -> RunResult:
    """Stream the shard summaries, then make sure every input has a record."""
    shards: dict[str, dict] = {}
    seen: set[str] = set()
    records = failed = 0
    videos = any(it.kind == "video" for it in todo)
    progress = _progress(None if videos else len(todo), opts.quiet)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for s in batch.to_pylist():
                if s["shard"] in shards:  # the same batch run twice wrote the same file
                    continue
                shards[s["shard"]] = s
                records += s["records"]
                failed += s["failed"]
                seen.update(s["sources"])
                for line in s["errors"]:
                    (progress.console.print(f"cvtool: {line}", markup=False, highlight=False) if progress
                     else say(line))
                if progress is not None:
                    progress.advance(progress.task_ids[0], s["records"])
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise ScaleError(f"the Ray job stopped: {_first_line(e)}; the {records} records written so far are "
                         f"kept in {out.location}: run the same command with --resume to finish") from None
    finally:
        if progress is not None:
            progress.stop()

    lost = 0
    missing = {it.source for it in todo} - seen
    if missing:  # Ray gave up on some batch; did its shard get written before the worker died?
        missing -= set(out.done())
    if missing:
        from cvtool.tasks.base import Record

        why = (f"no record: Ray gave up on the batch holding this input after {RETRIES} retries "
               "(its worker died each time, or could not write the shard; see the Ray logs)")
        lost_records = [Record(source=it.source, task=task, model=model, error=why).to_dict()
                        for it in todo if it.source in missing]
        for r in lost_records:
            say(f"{r['source']}: {why}")
        try:
            shards[out.write_shard(lost_records, opts.output_format)] = {}
        except Exception as e:
            raise ScaleError(f"cannot write the error records of {len(lost_records)} lost inputs to "
                             f"{out.location} ({_first_line(e)})") from None
        lost = len(lost_records)
        records += lost
        failed += lost
    return RunResult(0, 0, records, failed, lost, len(shards), 0.0)


def _write_summary(out: OutputDir, task: str, model: str, opts: RayOptions, r: RunResult) -> None:
    from cvtool import __version__

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    summary = {"engine": "ray", "task": task, "model": model, "output_format": opts.output_format,
               "inputs": r.inputs, "skipped_with_resume": r.skipped, "records": r.records, "failed": r.failed,
               "lost": r.lost, "shards": r.shards, "seconds": round(r.seconds, 3),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cvtool": __version__, "ray": ray_version}
    try:
        out.write(SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    except Exception:
        pass  # the records are what matters; the summary is a convenience
