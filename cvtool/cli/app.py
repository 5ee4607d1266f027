"""The `cvtool` command: wires the subcommands. Heavy libraries are imported inside commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cvtool import __version__
from cvtool.cli import attack as attack_cmd
from cvtool.cli import caption as caption_cmd
from cvtool.cli import classify as classify_cmd
from cvtool.cli import depth as depth_cmd
from cvtool.cli import detect as detect_cmd
from cvtool.cli import export as export_cmd
from cvtool.cli import models as models_cmd
from cvtool.cli import report as report_cmd
from cvtool.cli import segment as segment_cmd
from cvtool.cli import train as train_cmd
from cvtool.cli import visualize as visualize_cmd

app = typer.Typer(
    name="cvtool",
    help="Vision jobs from the shell: classify images, detect objects, caption them, segment pictures (segment), estimate relative depth (depth), look inside a classifier (visualize), attack it with adversarial pictures (attack), train classifiers (train), look at a run in one web page (report), export models to ONNX, manage models. Records go to stdout as JSON "
         "Lines when piped; messages to stderr. Exit code 0 = all inputs ok, 1 = some failed, 2 = usage.",
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
def _root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Show the version and exit.")] = None) -> None:
    pass


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
app.add_typer(models_cmd.app, name="models")


def main() -> None:
    app()
