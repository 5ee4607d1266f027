"""`cvtool classify`: ImageNet (or your own) labels for images, folders and videos."""

from __future__ import annotations

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
    workers: c.RayWorkersOpt = None,
    threads: c.ThreadsOpt = None,
    allow_cpu_fallback: c.FallbackOpt = False,
    quiet: c.QuietOpt = False,
    report: c.ReportOpt = None,
    engine: c.EngineOpt = "local",
    address: c.AddressOpt = None,
    gpus_per_worker: c.GpusPerWorkerOpt = 0.0,
    output_dir: c.OutputDirOpt = None,
    output_format: c.OutputFormatOpt = "jsonl",
    resume: c.ResumeOpt = False,
) -> None:
    """Classify images: top-k labels with scores, one record per image (or video frame).

    Examples:
      cvtool classify sample_images/cat.jpg
      cvtool classify photos/ > labels.jsonl
      find . -name '*.png' | cvtool classify - --topk 1 -o labels.csv
    """
    from cvtool.render.draw import annotate_classification
    from cvtool.tasks.classify import TASK, Classifier

    c.check_format(fmt)
    c.run_task_command(
        TASK, sources, model=model, weights=weights, make_postprocess=lambda m: Classifier(m, topk),
        annotate=lambda rgb, rec: annotate_classification(rgb, rec["topk"]),
        table_row=_row, table_columns=["source", "label", "score", f"top-{topk}"],
        batch=batch, device=device, backend=backend, fmt=fmt, output=output, overwrite=overwrite,
        save=save, vid_stride=vid_stride, max_pixels=max_pixels, workers=workers, threads=threads,
        allow_cpu_fallback=allow_cpu_fallback, quiet=quiet, engine=engine, address=address,
        gpus_per_worker=gpus_per_worker, output_dir=output_dir, output_format=output_format, resume=resume, report=report)


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    rest = ", ".join(f"{t['label']} {t['score']:.2f}" for t in d["topk"][1:])
    return [name, d["label"], f"{d['score']:.3f}", rest]
