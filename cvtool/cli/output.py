"""Where a command's records go: JSON Lines, CSV or one JSON array on stdout or in ``--output``
(written atomically), a table on a terminal, progress and the closing summary on stderr, and the
``--report`` page at the end."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from cvtool.cli.common import EXIT_FAILED, EXIT_OK


SOURCE_WIDTH = 32  # the widest the source column gets before it folds (of 80 columns)


class Output:
    """Routes records to stdout, a file or a table; shows progress; counts failures."""

    def __init__(self, fmt: str, output: Path | None, overwrite: bool, quiet: bool,
                 total: int | None, table_row: Callable[[dict], list[str]] | None = None,
                 table_columns: list[str] | None = None, noun: str = "image", report: Path | None = None):
        from cvtool.io.sinks import AtomicFile, RecordWriter, SinkError, format_for

        self.quiet, self.total, self.noun = quiet, total, noun
        self.table_row, self.table_columns = table_row, table_columns or []
        self.rows: list[list[str]] = []
        self.n = self.failed = 0
        self.t0 = time.perf_counter()
        self._file = None
        self.writer = None
        self.table = False
        self.report, self.overwrite = report, overwrite
        self.records: list[dict] = []  # kept for --report only
        if report is not None and os.path.lexists(report) and not overwrite:
            raise SinkError(f"--report {report}: exists (give --overwrite to replace it)")
        if output is not None:
            record_fmt = format_for(str(output), fmt)
            self._file = AtomicFile(output, overwrite=overwrite)
            self.writer = RecordWriter(self._file.__enter__(), record_fmt)
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
        if self.report is not None:
            self.records.append(record)
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
            self._write(self.writer.write, record)
        if self.progress is not None:
            self.progress.advance(self.task_id)

    def _write(self, write: Callable, *args) -> None:
        """Write through the record writer; an OSError (a full disk) names the file written."""
        try:
            write(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            from cvtool.io.atomic import name_the_file

            name_the_file(e, self._file.path if self._file is not None else "<stdout>")
            raise

    def close(self, interrupted: bool = False) -> int:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self._write(self.writer.close)
        lost = None
        if self._file is not None:
            from cvtool.io.atomic import SinkError

            exc = KeyboardInterrupt if interrupted else None
            try:
                self._file.__exit__(exc, None, None)
            except SinkError as e:  # e.g. another run created the file meanwhile: never replaced
                lost = str(e)
        if self.table and self.rows:
            from rich.console import Console
            from rich.table import Table

            t = Table(header_style="bold")
            # Sources up to SOURCE_WIDTH keep their width, so that a file name is not cut in two
            # while the free-text columns wrap at word boundaries; longer paths fold, as all did.
            keep = max((len(r[0]) for r in self.rows), default=0) <= SOURCE_WIDTH
            for i, name in enumerate(self.table_columns):
                t.add_column(name, overflow="fold", no_wrap=keep and i == 0)
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
        if lost is not None:
            print(f"cvtool: error: {lost}; the {self.n} records of this run were not written", file=sys.stderr)
            return EXIT_FAILED
        if self.report is not None and not interrupted and not write_report_page(
                self.records, self.report, seconds=dt, overwrite=self.overwrite, quiet=self.quiet):
            return EXIT_FAILED
        return EXIT_FAILED if self.failed else EXIT_OK


def write_report_page(records: list[dict], path: Path, *, seconds: float | None = None, overwrite: bool = False,
                      quiet: bool = False, runs: list[str] | None = None) -> bool:
    """``--report FILE``: the HTML page of the records a run emitted; False (after saying why) when
    it cannot be written."""
    from cvtool.render.report import report_from_records

    try:
        size = report_from_records(records, path, seconds=seconds, overwrite=overwrite, runs=runs)
    except Exception as e:  # SinkError, OSError: the run's records are safe; say why the page is not
        print(f"cvtool: error: --report {path}: not written ({e})", file=sys.stderr)
        return False
    if not quiet:
        print(f"cvtool: report written to {path} ({size / 1024:.0f} KB)", file=sys.stderr)
    return True
