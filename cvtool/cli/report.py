"""`cvtool report`: one self-contained HTML page for a run (docs/report.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import options as o


@o.shared("overwrite", "quiet")
def report(
    inputs: Annotated[list[str], typer.Argument(
        help="Records files (.jsonl or .csv), - for stdin, --engine ray output folders, or training run folders (runs/NAME).",
        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[Optional[str], typer.Option("--title", help="Page title (default: cvtool report).")] = None,
    thumb_budget: Annotated[float, typer.Option("--thumb-budget", min=0.0,
                                                help="Most MiB of embedded thumbnails; pictures beyond it are linked only.")] = 48.0,
    *,
    opts: o.Options,
) -> None:
    """Look at a whole run in one web page: pictures with their boxes, labels, masks or maps,
    a summary, the failures, filters; no server and no network needed.

    Examples:
      cvtool detect photos/ > boxes.jsonl && cvtool report boxes.jsonl -o boxes.html
      cvtool classify photos/ | cvtool report - -o labels.html
      cvtool report runs/fashion-mnist-cnn -o training.html
    """
    import time

    overwrite, quiet = opts.overwrite, opts.quiet

    from cvtool.io.sinks import SinkError
    from cvtool.render.report import ReportError, load_inputs, write_report

    t0 = time.perf_counter()
    try:
        loaded = load_inputs(inputs)
    except ReportError as e:
        raise c.fail(str(e)) from None
    if not loaded.records and not loaded.runs:
        raise c.fail("no records in " + ", ".join(inputs))
    for p in loaded.problems:
        print(f"cvtool: {p}", file=sys.stderr)
    try:
        size = write_report(loaded, output, overwrite=overwrite, title=title,
                            thumb_budget=int(thumb_budget * 1024 * 1024))
    except SinkError as e:
        raise c.fail(str(e)) from None
    if not quiet:
        n = len(loaded.records)
        runs = f", {len(loaded.runs)} training run{'s' if len(loaded.runs) != 1 else ''}" if loaded.runs else ""
        print(f"cvtool: wrote {output} ({size / 1024:.0f} KB): {n} record{'s' if n != 1 else ''}{runs} "
              f"in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    raise typer.Exit(c.EXIT_FAILED if loaded.problems else c.EXIT_OK)
