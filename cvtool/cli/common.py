"""What every inference subcommand shares: options, output, progress, exit codes.

Exit codes: 0 every input succeeded, 1 some input failed (each has an error record),
2 usage or set-up error (bad option, unknown model, missing weights, unusable device).
Records go to stdout (JSON Lines when piped, a table on a terminal) or to ``--output``;
messages and progress go to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(msg: str, code: int = EXIT_USAGE) -> "typer.Exit":
    print(f"cvtool: error: {msg}", file=sys.stderr)
    return typer.Exit(code)


# Shared option declarations (typer.Option objects are reusable as Annotated metadata).
Sources = Annotated[list[str], typer.Argument(
    help="Image files, folders (searched recursively for image files), globs, video files, or - to read paths from stdin.",
    show_default=False)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name, cvtool .onnx file, or `cvtool train` checkpoint.")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hugging Face models: the Hub commit, tag or branch to use from Hugging Face's cache (or to download); records name the commit that ran.", show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="Weights file for a registry model (overrides cache and packages).")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", min=1, max=4096, help="Images per inference batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="auto (ONNX Runtime, torch as fallback), onnx or torch.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="auto (table on a terminal, JSON Lines otherwise), jsonl, csv or table.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write records to this file (.jsonl or .csv), atomically.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
SaveOpt = Annotated[Optional[Path], typer.Option("--save", help="Folder for annotated copies of the inputs.")]
VidStrideOpt = Annotated[int, typer.Option("--vid-stride", min=1, help="Use every N-th video frame.")]
MaxPixelsOpt = Annotated[Optional[int], typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this (decompression-bomb guard; default 89,478,485).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: min(4, cores)).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU inference threads (default: all cores).")]
FallbackOpt = Annotated[bool, typer.Option("--allow-cpu-fallback", help="With --device cuda: run on the CPU (and say so) when CUDA cannot load, instead of failing.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, per-error messages or summary on stderr.")]
# --engine ray (docs/scale.md). RayWorkersOpt replaces WorkersOpt in commands that take --engine.
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this machine) or ray (a Ray cluster through Ray Data; records go to --output-dir).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="--engine ray: cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: a running local Ray, else a new one).")]
RayWorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: min(4, cores)); with --engine ray, inference workers (default: one per GPU share, else one per node).")]
GpusPerWorkerOpt = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="--engine ray: GPUs each inference worker reserves (1, or 0.5 to share one).")]
OutputDirOpt = Annotated[Optional[str], typer.Option("--output-dir", help="--engine ray (required): folder or URI (s3://, gs://) for the record shards.")]
OutputFormatOpt = Annotated[str, typer.Option("--output-format", help="--engine ray: jsonl or parquet shards.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="--engine ray: skip inputs that already have records in --output-dir.")]


def calm_cpu_threads() -> None:
    """Before torch starts: let idle OpenMP threads sleep instead of spinning. On a busy or small
    machine, spinning threads fight other processes for the cores; torch jobs ran 10–50× slower
    with 2 spinning threads than with 1 (docs/benchmarks.md). A user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_format(fmt: str) -> str:
    if fmt not in ("auto", "jsonl", "csv", "table"):
        raise fail(f"--format {fmt!r}: expected auto, jsonl, csv or table")
    return fmt


def collect_sources(inputs: list[str]):
    """Expand inputs; returns (iterable, total or None). Stdin is streamed, so its count is unknown."""
    from cvtool.io.sources import expand

    if "-" in inputs:
        return expand(inputs), None
    sources = list(expand(inputs))
    total = None if any(s.kind == "video" for s in sources) else len(sources)
    return sources, total


class Output:
    """Routes records to stdout, a file or a table; shows progress; counts failures."""

    def __init__(self, fmt: str, output: Path | None, overwrite: bool, quiet: bool,
                 total: int | None, table_row: Callable[[dict], list[str]] | None = None,
                 table_columns: list[str] | None = None, noun: str = "image"):
        from cvtool.io.sinks import AtomicFile, RecordWriter, format_for

        self.quiet, self.total, self.noun = quiet, total, noun
        self.table_row, self.table_columns = table_row, table_columns or []
        self.rows: list[list[str]] = []
        self.n = self.failed = 0
        self.t0 = time.perf_counter()
        self._file = None
        self.writer = None
        self.table = False
        if output is not None:
            self._file = AtomicFile(output, overwrite=overwrite)
            self.writer = RecordWriter(self._file.__enter__(), format_for(str(output), fmt))
        elif fmt == "table" or (fmt == "auto" and sys.stdout.isatty() and table_row is not None):
            self.table = True
        else:
            self.writer = RecordWriter(sys.stdout, format_for(None, fmt))
        self.progress = None
        if not quiet and sys.stderr.isatty() and (total is None or total > 1):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task_id = self.progress.add_task("working", total=total)

    def add(self, record: dict) -> None:
        self.n += 1
        if not record["ok"]:
            self.failed += 1
            if not self.quiet:
                where = record["source"] + (f" (frame {record['frame']})" if record.get("frame") is not None else "")
                msg = f"cvtool: {where}: {record['error']}"
                (self.progress.console.print(msg, markup=False, highlight=False) if self.progress
                 else print(msg, file=sys.stderr))
        if self.table:
            self.rows.append(self.table_row(record) if record["ok"] else
                             [record["source"] + (f"#{record['frame']}" if record.get("frame") is not None else ""),
                              f"error: {record['error']}"] + [""] * (len(self.table_columns) - 2))
        else:
            self.writer.write(record)
        if self.progress is not None:
            self.progress.advance(self.task_id)

    def close(self, interrupted: bool = False) -> int:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()
        if self._file is not None:
            exc = KeyboardInterrupt if interrupted else None
            self._file.__exit__(exc, None, None)
        if self.table and self.rows:
            from rich.console import Console
            from rich.table import Table

            t = Table(header_style="bold")
            for name in self.table_columns:
                t.add_column(name, overflow="fold")
            for row in self.rows:
                t.add_row(*row)
            Console().print(t)
        dt = time.perf_counter() - self.t0
        if interrupted and self._file is not None and not self.quiet:
            print(f"cvtool: interrupted after {self.n} records; {self._file.path} was not written",
                  file=sys.stderr)
        elif not self.quiet and (sys.stderr.isatty() or self._file is not None or self.failed):
            rate = f" ({self.n / dt:.1f}/s)" if dt > 0 and self.n > 1 else ""
            fail_txt = f", {self.failed} failed" if self.failed else ""
            print(f"cvtool: {self.n} record{'s' if self.n != 1 else ''} in {dt:.2f} s{rate}{fail_txt}",
                  file=sys.stderr)
        return EXIT_FAILED if self.failed else EXIT_OK


def run_task_command(task: str, sources: list[str], *, model: str, weights: str | None,
                     make_postprocess: Callable, annotate: Callable | None, table_row: Callable,
                     table_columns: list[str], batch: int, device: str, backend: str, fmt: str,
                     output: Path | None, overwrite: bool, save: Path | None, vid_stride: int,
                     max_pixels: int | None, workers: int | None, threads: int | None,
                     allow_cpu_fallback: bool, quiet: bool, make_sinks: Callable | None = None,
                     loaded=None, noun: str = "record", runner=None, engine: str = "local",
                     address: str | None = None, gpus_per_worker: float = 0.0,
                     output_dir: str | None = None, output_format: str = "jsonl",
                     resume: bool = False) -> None:
    """The body every inference subcommand shares: load the model, pick the runner, stream the
    inputs through the task, save annotated pictures, feed the task's extra sinks (objects with
    ``add(record, frame)`` and ``close(interrupted)``, made by ``make_sinks(loaded)``), emit
    records, exit with the right code. A task with its own way of running (caption's generation
    loop) passes a ready ``runner`` and ``loaded``. ``engine="ray"`` runs the same task on a Ray
    cluster instead (:func:`run_on_ray`)."""
    if engine != "local" or output_dir is not None or resume or address is not None or gpus_per_worker:
        run_on_ray(task, sources, engine=engine, model=model, weights=weights, loaded=loaded, runner=runner,
                   make_postprocess=make_postprocess, make_sinks=make_sinks, fmt=fmt, output=output, save=save,
                   address=address, workers=workers, gpus_per_worker=gpus_per_worker, batch=batch,
                   output_dir=output_dir, output_format=output_format, resume=resume, overwrite=overwrite,
                   backend=backend, device=device, threads=threads, allow_cpu_fallback=allow_cpu_fallback,
                   max_pixels=max_pixels, vid_stride=vid_stride, quiet=quiet)
    from cvtool.io.sinks import PictureSaver, SinkError
    from cvtool.models.loader import ModelError, load
    from cvtool.runtime.device import DeviceError
    from cvtool.tasks.base import RunOptions, make_runner, run

    try:
        loaded = loaded or load(model, weights, task=task)
        sinks = make_sinks(loaded) if make_sinks else []
        runner = runner or make_runner(loaded, backend, device, threads,
                                       notify=None if not quiet else (lambda _m: None),
                                       allow_cpu_fallback=allow_cpu_fallback)
        saver = PictureSaver(save, overwrite) if save is not None else None
        srcs, total = collect_sources(sources)
        out = Output(fmt, output, overwrite, quiet, total, table_row=table_row, table_columns=table_columns)
    except (ModelError, DeviceError, SinkError) as e:
        raise fail(str(e)) from None

    opts = RunOptions(backend=backend, device=device, batch=batch, workers=workers, threads=threads,
                      vid_stride=vid_stride, max_pixels=max_pixels,
                      keep_pixels=saver is not None or any(getattr(s, "needs_pixels", False) for s in sinks))
    interrupted = False
    try:
        for record, frame in run(task, loaded, runner, srcs, make_postprocess(loaded), opts):
            d = record.to_dict()
            if saver is not None and frame is not None and annotate is not None:
                try:
                    drawn = annotate(frame.rgb, d)
                    d["saved"] = str(saver.add_video_frame(frame.source, drawn, frame.meta.get("fps"))
                                     if frame.frame is not None else saver.save_image(frame.source, drawn))
                except SinkError as e:
                    d.update(ok=False, error=f"not saved: {e}")
            if frame is not None:
                for sink in sinks:
                    try:
                        sink.add(d, frame)
                    except SinkError as e:
                        d.update(ok=False, error=f"not saved: {e}")
                frame.rgb = None
            out.add(d)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        quiet_stdout_pipe()
        raise typer.Exit(EXIT_OK)
    finally:
        if saver is not None:
            saver.close()
    for sink in sinks:
        try:
            sink.close(interrupted)
        except KeyboardInterrupt:
            interrupted = True
        except SinkError as e:
            print(f"cvtool: error: {e}", file=sys.stderr)
            out.failed += 1
    code = out.close(interrupted)
    if interrupted:
        print("cvtool: interrupted", file=sys.stderr)
        raise typer.Exit(130)
    raise typer.Exit(code)


def run_on_ray(task: str, sources: list[str], *, engine: str, model: str, weights: str | None, loaded,
               runner, make_postprocess: Callable, make_sinks: Callable | None, fmt: str, output: Path | None,
               save: Path | None, address: str | None, workers: int | None, gpus_per_worker: float,
               batch: int, output_dir: str | None, output_format: str, resume: bool, overwrite: bool,
               backend: str, device: str, threads: int | None, allow_cpu_fallback: bool,
               max_pixels: int | None, vid_stride: int, quiet: bool) -> None:
    """``--engine ray``: the same task, model and postprocessing on a Ray cluster; records go to
    shards in ``--output-dir`` (docs/scale.md). Always raises ``typer.Exit``."""
    from cvtool.models.loader import ModelError, load

    if engine not in ("local", "ray"):
        raise fail(f"--engine {engine!r}: expected local or ray")
    if engine == "local":
        raise fail("--output-dir, --output-format, --resume, --address and --gpus-per-worker apply to --engine ray")
    if output_dir is None:
        raise fail("--engine ray writes records to files: give --output-dir DIR (a folder or s3://…, gs://… URI)")
    if output is not None or fmt not in ("auto", "jsonl"):
        raise fail("with --engine ray, records go to --output-dir (--output-format jsonl|parquet), "
                   "not to --output/--format")
    if save is not None:
        raise fail("--save is not supported with --engine ray")
    if runner is not None:
        raise fail(f"--engine ray is not supported for {task} yet")
    from cvtool.scale.ray_engine import RayOptions, ScaleError, require_ray
    from cvtool.scale.ray_engine import run as ray_run

    try:
        require_ray()
        loaded = loaded or load(model, weights, task=task)
        if make_sinks is not None and make_sinks(loaded):  # the command should have refused earlier
            raise fail("this command's extra outputs (pictures, crops, label files, COCO results, "
                       "evaluation) are not supported with --engine ray")
        opts = RayOptions(output_dir=output_dir, output_format=output_format, address=address, workers=workers,
                          gpus_per_worker=gpus_per_worker, batch=batch, resume=resume, overwrite=overwrite,
                          backend=backend, device=device, threads=threads,
                          allow_cpu_fallback=allow_cpu_fallback, max_pixels=max_pixels,
                          vid_stride=vid_stride, quiet=quiet)
        result = ray_run(task, sources, loaded, make_postprocess(loaded), opts)
    except (ModelError, ScaleError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        print(f"cvtool: interrupted; the records written so far stay in {output_dir} "
              "(the same command with --resume continues)", file=sys.stderr)
        raise typer.Exit(130)
    raise typer.Exit(result.exit_code)


class InputError(Exception):
    """One input cannot be processed; the run records the reason and goes on."""


def run_picture_command(task: str, sources: list[str], *, model_name: str, device: str,
                        process: Callable, fmt: str, output: Path | None, overwrite: bool,
                        quiet: bool, table_row: Callable | None, table_columns: list[str],
                        max_pixels: int | None, vid_stride: int = 1, finish: Callable | None = None,
                        backend: str = "torch") -> None:
    """The body of the per-picture gradient subcommands (visualize, attack): decode every input,
    call ``process(frame) -> dict`` (the task's fields; raise :class:`InputError` for a
    per-input failure), emit one record per input, exit with the right code. ``finish(out)``
    may print a summary after the last record."""
    from cvtool.models.differentiable import iter_pictures
    from cvtool.tasks.base import Record

    try:
        out = Output(fmt, output, overwrite, quiet, None, table_row=table_row, table_columns=table_columns)
    except Exception as e:  # SinkError: the output file exists, …
        raise fail(str(e)) from None
    interrupted = False
    try:
        for item in iter_pictures(sources, max_pixels, vid_stride):
            base = dict(source=item.source, frame=item.frame, task=task, model=model_name)
            if not hasattr(item, "rgb"):
                out.add(Record(error=item.error, **base).to_dict())
                continue
            t0 = time.perf_counter()
            try:
                fields = process(item)
                error = None
            except InputError as e:
                fields, error = {}, str(e)
            except MemoryError:
                fields, error = {}, "out of memory"
            rec = Record(timestamp=item.timestamp, backend=backend, provider=None, device=device,
                         image_size=item.orig_size, error=error, fields=fields,
                         time_ms={"total": round((time.perf_counter() - t0) * 1e3, 3)}, batch_size=1,
                         **base)
            item.rgb = None
            out.add(rec.to_dict())
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        quiet_stdout_pipe()
        raise typer.Exit(EXIT_OK)
    code = out.close(interrupted)
    if interrupted:
        print("cvtool: interrupted", file=sys.stderr)
        raise typer.Exit(130)
    if finish is not None:
        finish(out)
    raise typer.Exit(code)


def quiet_stdout_pipe() -> None:
    """After a BrokenPipeError (``cvtool … | head``), exit quietly like other Unix tools."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
