"""`cvtool doctor`: check this installation and say, one line per problem, what is wrong and how
to fix it (the checks themselves are in :mod:`cvtool.doctor`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import options as o

FORMATS = ("auto", "table", "jsonl", "json")
STYLE = {"ok": "green", "info": "cyan", "failed": "bold red", "skipped": "dim"}


@o.shared("device", "fmt", "quiet", fmt=o.Format(
    "auto (a table on a terminal, JSON Lines otherwise), table, jsonl (one check per line) or json "
    "(one object: every check and the totals)."))
def doctor(
    skip_models: Annotated[bool, typer.Option("--skip-models", help="Leave out the model checks (weights, ONNX export, a run on a photo), the slow part.")] = False,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Check only this registered model (repeatable; default: every bundled model).", show_default=False)] = None,
    *,
    opts: o.Options,
) -> None:
    """Check this installation: cvtool and Python, the packages cvtool needs (versions, conflicts,
    imports), the ONNX Runtime providers and torch devices that really work, the caches, and
    every bundled model (weights, ONNX export, one bundled photo on ONNX Runtime and on torch).

    Each failed check gets one line on stderr with its cause and its fix. Exit code 0 when every check passed, 1 when one failed, 2 for a usage error.

    Examples:
      cvtool doctor
      cvtool doctor --skip-models
      cvtool doctor -f json | jq '.checks[] | select(.ok == false)'
    """
    from cvtool.runtime.device import DeviceError, parse_device

    fmt = opts.fmt
    if fmt not in FORMATS:
        raise c.fail(f"--format {fmt!r}: expected {', '.join(FORMATS)}")
    if skip_models and model:
        raise c.fail("--skip-models and --model: give one of them")
    try:
        parse_device(opts.device)
    except DeviceError as e:
        raise c.fail(str(e)) from None
    c.calm_cpu_threads()  # before torch starts (see cli.common)
    from cvtool.doctor import run_checks
    from cvtool.models.registry import UnknownModel

    status = None
    if not opts.quiet and sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status("cvtool doctor")
        status.start()
    try:
        report = run_checks(skip_models=skip_models, models=model, device=opts.device,
                            on_start=(lambda name: status.update(f"checking {name}")) if status else None)
    except UnknownModel as e:
        raise c.fail(str(e)) from None
    finally:
        if status is not None:
            status.stop()

    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif fmt == "jsonl" or (fmt == "auto" and not sys.stdout.isatty()):
        for check in report.checks:
            print(json.dumps(check.to_dict(), ensure_ascii=False))
    else:
        _table(report)
    _messages(report, opts.quiet)
    raise typer.Exit(c.EXIT_OK if report.ok else c.EXIT_FAILED)


def _table(report) -> None:
    """One section per group (per model for the model checks), its checks named without the
    section's name: "onnxruntime" then "  CPUExecutionProvider", "efficientnet_lite0" then
    "  weights"."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, str, str]] = []
    section = None
    for check in report.checks:
        now = check.name.split(" ")[0] if check.group == "models" else check.group
        if now != section:
            rows.append(("", "", "", ""))  # a rule between sections
            rows.append((f"[bold]{now}[/]", "", "", ""))
            section = now
        name = check.name[len(now) + 1:] if check.name.startswith(now + " ") else check.name
        name = name.replace("ExecutionProvider", " provider")  # "CUDA provider"
        rows.append((f"  {name}", f"[{STYLE[check.status]}]{check.status}[/]", check.detail,
                     f"{check.seconds:.1f} s" if check.seconds >= 0.05 else ""))
    console = Console()
    longest = max(len(r[0]) - (9 if r[0].startswith("[bold]") else 0) for r in rows)
    width = min(longest, 24 if console.width < 100 else 40)  # on 80 columns the detail needs the room
    t = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    t.add_column("check", overflow="fold", width=width)
    t.add_column("status", no_wrap=True)
    t.add_column("detail", overflow="fold", ratio=1)
    t.add_column("time", justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        if row == ("", "", "", ""):
            if i:
                t.add_section()
            continue
        t.add_row(*row)
    console.print(t, highlight=False)


def _messages(report, quiet: bool) -> None:
    """On stderr: the traceback of each failed check under --debug, one line per failed check
    (its cause and its fix), and the totals."""
    from cvtool.settings import debugging

    for check in report.failed:
        if debugging() and check.traceback:
            print(f"cvtool: traceback of the check {check.name!r}:\n{check.traceback.rstrip()}", file=sys.stderr)
        if not quiet:
            fix = f" — fix: {check.fix}" if check.fix else ""
            print(f"cvtool: {check.name}: {check.detail}{fix}", file=sys.stderr)
    if not quiet:
        counts = report.to_dict()["counts"]
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        print(f"cvtool: doctor: {len(report.checks)} checks in {report.seconds:.1f} s: {parts}", file=sys.stderr)
