"""The run loops the subcommands share: :func:`run_task_command` for the inference commands
(classify, detect, segment, depth, caption; locally or with ``--engine ray``) and
:func:`run_picture_command` for the per-picture gradient commands (visualize, attack). Both emit
one record per input and end the command with its exit code."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import typer

from cvtool.cli.common import EXIT_FAILED, EXIT_OK, InputError, check_output, fail, quiet_stdout_pipe
from cvtool.cli.options import Options
from cvtool.cli.output import Output, write_report_page

__all__ = ["InputError", "collect_sources", "run_on_ray", "run_picture_command", "run_task_command"]


def collect_sources(inputs: list[str], null: bool = False):
    """Expand inputs; returns (iterable, total or None). Stdin is streamed, so its count is unknown;
    an empty one (nothing to do) raises :class:`~cvtool.io.sources.NoInputs` now."""
    from cvtool.io.sources import expand, nonempty

    if "-" in inputs:
        return nonempty(expand(inputs, null=null)), None
    sources = list(expand(inputs))
    total = None if any(s.kind == "video" for s in sources) else len(sources)
    return sources, total


def run_task_command(task: str, sources: list[str], opts: Options, *, model: str, weights: str | None,
                     make_postprocess: Callable, annotate: Callable | None, table_row: Callable,
                     table_columns: list[str], save: Path | None = None, make_sinks: Callable | None = None,
                     loaded=None, noun: str = "record", runner=None, runner_factory: Callable | None = None) -> None:
    """The body every inference subcommand shares: load the model, pick the runner, stream the
    inputs through the task, save annotated pictures, feed the task's extra sinks (objects with
    ``add(record, frame)`` and ``close(interrupted)``, made by ``make_sinks(loaded)``), emit
    records, exit with the right code. A task with its own way of running (caption's generation
    loop) passes a ready ``runner`` and ``loaded``, and for ``--engine ray`` a picklable
    ``runner_factory(loaded) -> (runner, postprocess)`` that each Ray worker calls. ``--engine ray``
    runs the same task on a Ray cluster instead (:func:`run_on_ray`)."""
    if opts.ray_requested:
        run_on_ray(task, sources, opts, model=model, weights=weights, loaded=loaded, runner=runner,
                   runner_factory=runner_factory, make_postprocess=make_postprocess, make_sinks=make_sinks,
                   save=save)
    from cvtool.io.sinks import PictureSaver, SinkError
    from cvtool.io.sources import NoInputs
    from cvtool.models.loader import ModelError, load
    from cvtool.runtime.device import DeviceError
    from cvtool.tasks.base import RunOptions, make_runner, run

    try:
        check_output(opts.fmt, opts.output, opts.overwrite)  # before any work: one line, exit 2
        srcs, total = collect_sources(sources, opts.null)  # an empty stdin too: nothing to do
        saver = PictureSaver(save, opts.overwrite) if save is not None else None
        loaded = loaded or load(model, weights, task=task, notify=None if not opts.quiet else (lambda _m: None))
        sinks = make_sinks(loaded) if make_sinks else []
        runner = runner or make_runner(loaded, opts.backend, opts.device, opts.threads,
                                       notify=None if not opts.quiet else (lambda _m: None),
                                       allow_cpu_fallback=opts.allow_cpu_fallback)
        out = Output(opts.fmt, opts.output, opts.overwrite, opts.quiet, total, table_row=table_row,
                     table_columns=table_columns, report=opts.report)
    except (ModelError, DeviceError, SinkError, NoInputs) as e:
        raise fail(str(e)) from None

    run_opts = RunOptions(backend=opts.backend, device=opts.device, batch=opts.batch, workers=opts.workers,
                          threads=opts.threads, vid_stride=opts.vid_stride, max_pixels=opts.max_pixels,
                          keep_pixels=saver is not None or any(getattr(s, "needs_pixels", False) for s in sinks))
    interrupted = False
    try:
        for record, frame in run(task, loaded, runner, srcs, make_postprocess(loaded), run_opts):
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
            try:
                saver.close()  # the last video is moved into place here
            except SinkError as e:
                print(f"cvtool: error: not saved: {e}", file=sys.stderr)
                out.failed += 1
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


def run_on_ray(task: str, sources: list[str], opts: Options, *, model: str, weights: str | None, loaded,
               runner, make_postprocess: Callable, make_sinks: Callable | None, save: Path | None,
               runner_factory: Callable | None = None) -> None:
    """``--engine ray``: the same task, model and postprocessing on a Ray cluster; records go to
    shards in ``--output-dir`` (docs/scale.md). Always raises ``typer.Exit``."""
    from cvtool.models.loader import ModelError, load

    if opts.engine not in ("local", "ray"):
        raise fail(f"--engine {opts.engine!r}: expected local or ray")
    if opts.engine == "local":
        raise fail("--output-dir, --output-format, --resume, --address and --gpus-per-worker apply to --engine ray")
    if opts.output_dir is None:
        raise fail("--engine ray writes records to files: give --output-dir DIR (a folder or s3://…, gs://… URI)")
    if opts.output is not None or opts.fmt not in ("auto", "jsonl"):
        raise fail("with --engine ray, records go to --output-dir (--output-format jsonl|parquet), "
                   "not to --output/--format")
    if save is not None:
        raise fail("--save is not supported with --engine ray")
    report = opts.report
    if report is not None and ("://" in opts.output_dir or (os.path.lexists(report) and not opts.overwrite)):
        raise fail(f"--report {report}: " + ("exists (give --overwrite to replace it)" if "://" not in opts.output_dir
                   else "with a remote --output-dir, run `cvtool report` on a local copy of the shards"))
    if runner is not None and runner_factory is None:
        raise fail(f"--engine ray is not supported for {task} yet")
    from cvtool.scale.ray_engine import RayOptions, ScaleError, require_ray
    from cvtool.scale.ray_engine import run as ray_run

    try:
        require_ray()
        loaded = loaded or load(model, weights, task=task, notify=None if not opts.quiet else (lambda _m: None))
        if make_sinks is not None and make_sinks(loaded):  # the command should have refused earlier
            raise fail("this command's extra outputs (pictures, crops, label files, COCO results, "
                       "evaluation) are not supported with --engine ray")
        ray_opts = RayOptions(output_dir=opts.output_dir, output_format=opts.output_format, null=opts.null,
                              address=opts.address, workers=opts.workers, gpus_per_worker=opts.gpus_per_worker,
                              batch=opts.batch, resume=opts.resume, overwrite=opts.overwrite,
                              backend=opts.backend, device=opts.device, threads=opts.threads,
                              allow_cpu_fallback=opts.allow_cpu_fallback, max_pixels=opts.max_pixels,
                              vid_stride=opts.vid_stride, quiet=opts.quiet)
        t0 = time.perf_counter()
        result = ray_run(task, sources, loaded, None if runner_factory else make_postprocess(loaded), ray_opts,
                         runner_factory=runner_factory)
        if report is not None:
            from cvtool.render.report import load_inputs

            if not write_report_page(load_inputs([opts.output_dir]).records, report,
                                     seconds=time.perf_counter() - t0, overwrite=opts.overwrite, quiet=opts.quiet):
                raise typer.Exit(EXIT_FAILED)
    except (ModelError, ScaleError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        print(f"cvtool: interrupted; the records written so far stay in {opts.output_dir} "
              "(the same command with --resume continues)", file=sys.stderr)
        raise typer.Exit(130)
    raise typer.Exit(result.exit_code)


def run_picture_command(task: str, sources: list[str], opts: Options, *, model_name: str, device: str,
                        process: Callable, table_row: Callable | None, table_columns: list[str],
                        finish: Callable | None = None, backend: str = "torch") -> None:
    """The body of the per-picture gradient subcommands (visualize, attack): decode every input,
    call ``process(frame) -> dict`` (the task's fields; raise :class:`InputError` for a
    per-input failure), emit one record per input, exit with the right code. A ``process`` that
    makes several results of one input (visualize with several --target) returns a list, one
    record each: field dicts, or :class:`InputError` for the ones that failed. ``finish(out)``
    may print a summary after the last record. ``device`` is the device the model really runs on."""
    from cvtool.models.differentiable import iter_pictures
    from cvtool.tasks.base import Record

    from cvtool.io.atomic import SinkError
    from cvtool.io.sources import NoInputs, nonempty

    try:
        pictures = nonempty(iter_pictures(sources, opts.max_pixels, opts.vid_stride, opts.null))
        out = Output(opts.fmt, opts.output, opts.overwrite, opts.quiet, None, table_row=table_row,
                     table_columns=table_columns, report=opts.report)
    except (SinkError, NoInputs) as e:  # the output file exists, cannot be written, …; an empty stdin
        raise fail(str(e)) from None
    interrupted = False
    try:
        for item in pictures:
            base = dict(source=item.source, frame=item.frame, task=task, model=model_name)
            if not hasattr(item, "rgb"):
                out.add(Record(error=item.error, **base).to_dict())
                continue
            t0 = time.perf_counter()
            try:
                results = process(item)
            except InputError as e:
                results = e
            except MemoryError:
                results = InputError("out of memory")
            ms = round((time.perf_counter() - t0) * 1e3, 3)
            for r in results if isinstance(results, list) else [results]:
                fields, error = (r.fields, str(r)) if isinstance(r, InputError) else (r, None)
                rec = Record(timestamp=item.timestamp, backend=backend, provider=None, device=device,
                             image_size=item.orig_size, error=error, fields=fields,
                             time_ms={"total": ms}, batch_size=1, **base)
                out.add(rec.to_dict())
            item.rgb = None
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
