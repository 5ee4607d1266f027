"""Small things every subcommand uses: exit codes, usage errors, output checks, quiet pipes.

The rest of what commands share has its own module: the option declarations in
:mod:`cvtool.cli.options`, where records go (stdout, a file, a table, a report page) in
:mod:`cvtool.cli.output`, and the run loops of the inference and per-picture commands in
:mod:`cvtool.cli.run`.

Exit codes: 0 every input succeeded, 1 some input failed (each has an error record),
2 usage or set-up error (bad option, unknown model, missing weights, unusable device, an output
that cannot be written), 3 internal error (a bug in cvtool: cli/app.py's ``main``), 130 interrupted.
Records go to stdout (JSON Lines when piped, a table on a terminal) or to ``--output``;
messages and progress go to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(msg: str, code: int = EXIT_USAGE) -> "typer.Exit":
    print(f"cvtool: error: {msg}", file=sys.stderr)
    return typer.Exit(code)


def calm_cpu_threads() -> None:
    """Before torch starts: let idle OpenMP threads sleep instead of spinning. On a busy or small
    machine, spinning threads fight other processes for the cores; torch jobs ran 10–50× slower
    with 2 spinning threads than with 1 (docs/benchmarks.md). A user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_format(fmt: str) -> str:
    if fmt not in ("auto", "jsonl", "csv", "json", "table"):
        raise fail(f"--format {fmt!r}: expected auto, jsonl, csv, json or table")
    return fmt


def check_output(fmt: str, output: Path | None, overwrite: bool) -> None:
    """Raise SinkError now (before a model loads) when records cannot go to ``--output``: it
    exists, its folder is missing or not writable, or ``--format`` cannot be written to a file."""
    if output is not None:
        from cvtool.io.atomic import AtomicFile
        from cvtool.io.records import format_for

        format_for(str(output), fmt)
        AtomicFile(output, overwrite=overwrite)


class InputError(Exception):
    """One input cannot be processed; the run records the reason and goes on. ``fields``: what is
    known all the same (the target a failed map was made for), kept on the error record."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.fields = dict(fields or {})


def quiet_stdout_pipe() -> None:
    """After a BrokenPipeError (``cvtool … | head``), exit quietly like other Unix tools."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
