"""`cvtool classify`: ImageNet (or your own) labels for images, folders and videos."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cvtool.cli import common as c


def classify(
    sources: c.Sources,
    model: c.ModelOpt = "efficientnet_lite0",
    weights: c.WeightsOpt = None,
    topk: Annotated[int, typer.Option("--topk", "-k", min=1, help="How many labels per image.")] = 5,
    batch: c.BatchOpt = 8,
    device: c.DeviceOpt = "auto",
    backend: c.BackendOpt = "auto",
    fmt: c.FormatOpt = "auto",
    output: c.OutputOpt = None,
    overwrite: c.OverwriteOpt = False,
    save: c.SaveOpt = None,
    vid_stride: c.VidStrideOpt = 1,
    max_pixels: c.MaxPixelsOpt = None,
    workers: c.WorkersOpt = None,
    threads: c.ThreadsOpt = None,
    allow_cpu_fallback: c.FallbackOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Classify images: top-k labels with scores, one record per image (or video frame).

    Examples:
      cvtool classify sample_images/cat.jpg
      cvtool classify photos/ > labels.jsonl
      find . -name '*.png' | cvtool classify - --topk 1 -o labels.csv
    """
    from cvtool.io.sinks import PictureSaver, SinkError
    from cvtool.models.loader import ModelError, load
    from cvtool.render.draw import annotate_classification
    from cvtool.runtime.device import DeviceError
    from cvtool.tasks.base import RunOptions, make_runner, run
    from cvtool.tasks.classify import TASK, Classifier

    c.check_format(fmt)
    try:
        loaded = load(model, weights, task=TASK)
        runner = make_runner(loaded, backend, device, threads,
                             notify=None if not quiet else (lambda _m: None),
                             allow_cpu_fallback=allow_cpu_fallback)
        saver = PictureSaver(save, overwrite) if save is not None else None
        srcs, total = c.collect_sources(sources)
        out = c.Output(fmt, output, overwrite, quiet, total, table_row=_row,
                       table_columns=["source", "label", "score", f"top-{topk}"])
    except (ModelError, DeviceError, SinkError) as e:
        raise c.fail(str(e)) from None

    opts = RunOptions(backend=backend, device=device, batch=batch, workers=workers, threads=threads,
                      vid_stride=vid_stride, max_pixels=max_pixels, keep_pixels=saver is not None)
    interrupted = False
    try:
        for record, frame in run(TASK, loaded, runner, srcs, Classifier(loaded, topk), opts):
            d = record.to_dict()
            if saver is not None and frame is not None:
                try:
                    drawn = annotate_classification(frame.rgb, d["topk"])
                    d["saved"] = str(saver.add_video_frame(frame.source, drawn, frame.meta.get("fps"))
                                     if frame.frame is not None else saver.save_image(frame.source, drawn))
                except SinkError as e:
                    d.update(ok=False, error=f"not saved: {e}")
                frame.rgb = None
            out.add(d)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        c.quiet_stdout_pipe()
        raise typer.Exit(c.EXIT_OK)
    finally:
        if saver is not None:
            saver.close()
    code = out.close(interrupted)
    if interrupted:
        print("cvtool: interrupted", file=sys.stderr)
        raise typer.Exit(130)
    raise typer.Exit(code)


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    rest = ", ".join(f"{t['label']} {t['score']:.2f}" for t in d["topk"][1:])
    return [name, d["label"], f"{d['score']:.3f}", rest]
