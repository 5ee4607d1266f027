"""The `cvtool` command: wires the subcommands. Heavy libraries are imported inside commands."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:
    from typer._click import exceptions as click_errors  # typer >= 0.24 carries its own copy of click
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from cvtool import __version__
from cvtool.settings import SettingError, check_environment, debugging
from cvtool.cli import attack as attack_cmd
from cvtool.cli import caption as caption_cmd
from cvtool.cli import classify as classify_cmd
from cvtool.cli import depth as depth_cmd
from cvtool.cli import detect as detect_cmd
from cvtool.cli import doctor as doctor_cmd
from cvtool.cli import export as export_cmd
from cvtool.cli import models as models_cmd
from cvtool.cli import report as report_cmd
from cvtool.cli import segment as segment_cmd
from cvtool.cli import train as train_cmd
from cvtool.cli import visualize as visualize_cmd


def _usage_error(e: click_errors.ClickException) -> typer.Exit:
    """A bad command line (an unknown option, a bad value, a missing argument), from any command:
    one line like cvtool's other errors, instead of click's usage text and rich's boxed panel."""
    ctx = getattr(e, "ctx", None)
    names = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    msg = " ".join(e.format_message().split()).rstrip(".")
    if msg[:1].isupper() and msg[1:2].islower():
        msg = msg[0].lower() + msg[1:]
    hint = ""
    if isinstance(e, click_errors.UsageError) and ctx is not None:  # where the parser knew the command
        hint = f" (see `{' '.join(['cvtool', *names])} --help`)"
    print(f"cvtool: error: {msg}{hint}", file=sys.stderr)
    return typer.Exit(e.exit_code)


class _Group(TyperGroup):
    """The root group: every usage error of every command and option goes through here (its own
    options are parsed in make_context, each subcommand's in invoke)."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.ClickException as e:
            raise _usage_error(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.ClickException as e:
            raise _usage_error(e) from None


app = typer.Typer(
    name="cvtool",
    cls=_Group,
    help="Vision jobs from the shell: classify images, detect objects, caption them, segment pictures (segment), estimate relative depth (depth), look inside a classifier (visualize), attack it with adversarial pictures (attack), train classifiers (train), look at a run in one web page (report), export models to ONNX, manage models, check the installation (doctor). Records go to stdout as JSON "
         "Lines when piped; messages to stderr. Exit code 0 = all inputs ok, 1 = some failed, 2 = usage, "
         "3 = internal error (a bug; --debug shows the traceback).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"cvtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Show the version and exit.")] = None,
          debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors (also CVTOOL_DEBUG=1).")] = False,
          ) -> None:
    if debug:
        os.environ["CVTOOL_DEBUG"] = "1"
    if ctx.invoked_subcommand == "doctor":
        return  # it reports these problems itself, among the others, instead of refusing to start
    from cvtool.models.cache import WeightsError, check_cache_home

    try:  # set-up problems every command would hit: one line, exit 2, before any work
        check_environment()
        check_cache_home()
    except (SettingError, WeightsError) as e:
        from cvtool.cli.common import fail

        raise fail(str(e)) from None


app.command("classify", no_args_is_help=True)(classify_cmd.classify)
app.command("detect", no_args_is_help=True)(detect_cmd.detect)
app.command("caption", no_args_is_help=True)(caption_cmd.caption)
app.command("segment", no_args_is_help=True)(segment_cmd.segment)
app.command("depth", no_args_is_help=True)(depth_cmd.depth)
app.command("export", no_args_is_help=True)(export_cmd.export)
app.command("attack", no_args_is_help=True)(attack_cmd.attack)
app.command("visualize", no_args_is_help=True)(visualize_cmd.visualize)
app.command("train", no_args_is_help=True)(train_cmd.train)
app.command("report", no_args_is_help=True)(report_cmd.report)
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(models_cmd.app, name="models")


EXIT_INTERNAL = 3
_signal_received: list[int] = []


def _on_signal(signum, _frame) -> None:
    """SIGTERM and SIGHUP end a run as Ctrl-C does: the commands catch KeyboardInterrupt, discard
    unfinished files and say so; temporaries are removed on the way out (io/atomic)."""
    _signal_received.append(signum)
    raise KeyboardInterrupt


def main() -> None:
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) == signal.SIG_DFL:
            signal.signal(getattr(signal, name), _on_signal)
    try:
        app()
    except KeyboardInterrupt:
        print("cvtool: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # click's sign of a closed pipe (`| head`)
            from cvtool.cli.common import quiet_stdout_pipe

            quiet_stdout_pipe()
            code = 0  # as classify does, and as other Unix tools do
    except BrokenPipeError:
        from cvtool.cli.common import quiet_stdout_pipe

        quiet_stdout_pipe()
        code = 0
    except Exception as e:
        from cvtool.io.atomic import is_environment_error

        if is_environment_error(e):  # no space, no quota, a read-only file system: not a bug, exit 2
            code = _environment_error(e)
        else:  # a bug, not a user's mistake: say so in one line, not as "usage"
            if debugging():
                raise
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"cvtool: internal error: {type(e).__name__}{': ' + first if first else ''} (a bug in cvtool; "
                  "rerun with `cvtool --debug …` or CVTOOL_DEBUG=1 for the traceback, and report it)",
                  file=sys.stderr)
            code = EXIT_INTERNAL
    if _signal_received and code in (1, 130):  # click reports an interrupt outside a command as 1
        code = 128 + _signal_received[0]  # as a shell reports a process ended by that signal
    sys.exit(code)


def _environment_error(e: OSError) -> int:
    """One line naming the file that could not be written and why (the atomic writer has removed
    its temporary, so nothing partial is left), exit 2."""
    from cvtool.cli.common import EXIT_USAGE, quiet_stdout_pipe

    if e.filename == "<stdout>":
        quiet_stdout_pipe()  # what is still buffered for stdout cannot go there either
        what = " standard output"
    else:
        what = f" {e.filename}" if e.filename else ""
    print(f"cvtool: error: cannot write{what}: {e.strerror or e}", file=sys.stderr)
    return EXIT_USAGE
