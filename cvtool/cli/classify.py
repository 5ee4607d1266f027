"""`cvtool classify`: ImageNet (or your own) labels for images, folders and videos."""

from __future__ import annotations

from typing import Annotated

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o


@o.shared(*o.RECORDS, *o.ENGINE)
def classify(
    sources: o.Sources,
    model: o.ModelOpt = "efficientnet_lite0",
    weights: o.WeightsOpt = None,
    topk: Annotated[int, typer.Option("--topk", "-k", min=1, help="How many labels per image.")] = 5,
    save: o.Save("Folder for copies of the inputs with the top labels written on them.") = None,
    *,
    opts: o.Options,
) -> None:
    """Classify images: top-k labels with scores, one record per image (or video frame).

    Examples:
      cvtool classify sample_images/cat.jpg
      cvtool classify photos/ > labels.jsonl
      find . -name '*.png' | cvtool classify - --topk 1 -o labels.csv
    """
    from cvtool.render.draw import annotate_classification
    from cvtool.tasks.classify import TASK, Classifier

    c.check_format(opts.fmt)
    run.run_task_command(
        TASK, sources, opts, model=model, weights=weights, make_postprocess=lambda m: Classifier(m, topk),
        annotate=lambda rgb, rec: annotate_classification(rgb, rec["topk"]),
        table_row=_row if topk > 1 else _row_top1,
        table_columns=["source", "label", "score"] + (["runners-up"] if topk > 1 else []), save=save)


def _row(d: dict) -> list[str]:
    """source, label, score and the other k-1 labels (the column was called top-k, and was empty
    with -k 1: issue 24.14)."""
    rest = ", ".join(f"{t['label']} {t['score']:.2f}" for t in d["topk"][1:])
    return _row_top1(d) + [rest]


def _row_top1(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    return [name, d["label"], f"{d['score']:.3f}"]
