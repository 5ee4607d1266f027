"""The one home of the options that several subcommands share.

Each shared option is declared once here (flag, type, help, checks). A command asks for the ones it
takes by name or by group with :func:`shared`; they are appended to its own parameters, typer
parses them as usual, and the command receives them packed in one :class:`Options` object::

    @o.shared(*o.RECORDS, *o.ENGINE, batch=4)
    def segment(sources: o.Sources, model: ..., *, opts: o.Options) -> None:
        run_task_command(TASK, sources, opts, ...)

A new shared option is added in three places of this file (the declaration, :class:`Options` and
a group) and every command of that group gets it the same way. Options that several commands take
with a meaning of their own (``--save``, ``--imgsz``, ``--eval``, ``--seed``) have one factory
here each, so their flag and type are written once and only the help text is the command's.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

# -- Declarations -----------------------------------------------------------------------------

Sources = Annotated[list[str], typer.Argument(
    help="Image files, folders (searched recursively for image files), globs, video files, or - to read paths from stdin (one per line; NUL-separated with -0).",
    show_default=False)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name, cvtool .onnx file, or `cvtool train` checkpoint.")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="Weights file for a registry model (overrides cache and packages).")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hugging Face models: the Hub commit, tag or branch to use from Hugging Face's cache (or to download); records name the commit that ran.", show_default=False)]

_DECLARED: dict[str, tuple[Any, Any]] = {  # parameter name -> (annotation, default)
    "batch": (Annotated[int, typer.Option("--batch", "-b", min=1, max=4096, help="Images per inference batch.")], 8),
    "device": (Annotated[str, typer.Option("--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")], "auto"),
    "backend": (Annotated[str, typer.Option("--backend", help="auto (ONNX Runtime, torch as fallback), onnx or torch.")], "auto"),
    "threads": (Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU inference threads (default: all cores).")], None),
    "workers": (Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: min(4, cores)).")], None),
    "allow_cpu_fallback": (Annotated[bool, typer.Option("--allow-cpu-fallback", help="With --device cuda: run on the CPU (and say so) when CUDA cannot load, instead of failing.")], False),
    "fmt": (Annotated[str, typer.Option("--format", "-f", help="auto (table on a terminal, JSON Lines otherwise), jsonl, csv, json (one array) or table.")], "auto"),
    "output": (Annotated[Optional[Path], typer.Option("--output", "-o", help="Write records to this file (.jsonl, .csv or .json), atomically; never over an existing file without --overwrite.")], None),
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")], False),
    "quiet": (Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, per-error messages or summary on stderr.")], False),
    "report": (Annotated[Optional[Path], typer.Option("--report", help="At the end, also write one self-contained HTML page of the run's records (docs/report.md).")], None),
    "vid_stride": (Annotated[int, typer.Option("--vid-stride", min=1, help="Use every N-th video frame.")], 1),
    "max_pixels": (Annotated[Optional[int], typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this (decompression-bomb guard; default 89,478,485).")], None),
    "null": (Annotated[bool, typer.Option("--null", "-0", help="The paths that - reads from stdin are separated by NUL characters, as `find -print0` writes them (names may hold newlines).")], False),
    # --engine ray (docs/scale.md)
    "engine": (Annotated[str, typer.Option("--engine", help="local (this machine) or ray (a Ray cluster through Ray Data; records go to --output-dir).")], "local"),
    "address": (Annotated[Optional[str], typer.Option("--address", help="--engine ray: cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: a running local Ray, else a new one).")], None),
    "gpus_per_worker": (Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="--engine ray: GPUs each inference worker reserves (1, or 0.5 to share one).")], 0.0),
    "output_dir": (Annotated[Optional[str], typer.Option("--output-dir", help="--engine ray (required): folder or URI (s3://, gs://) for the record shards.")], None),
    "output_format": (Annotated[str, typer.Option("--output-format", help="--engine ray: jsonl or parquet shards.")], "jsonl"),
    "resume": (Annotated[bool, typer.Option("--resume", help="--engine ray: skip inputs that already have records in --output-dir.")], False),
}
# With --engine, --workers also sizes the Ray actor pool.
_RAY_WORKERS = Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: min(4, cores)); with --engine ray, inference workers (default: one per GPU share, else one per node).")]

# Groups, in the order the options appear in --help.
RUNTIME = ("device", "threads")  # where and how wide torch/ONNX Runtime run
INFERENCE = ("batch", "backend", "allow_cpu_fallback", "workers")
OUTPUT = ("fmt", "output", "overwrite", "quiet", "report")  # where the records go
INPUT = ("vid_stride", "max_pixels", "null")  # how inputs are read
RECORDS = INFERENCE + RUNTIME + OUTPUT + INPUT  # everything an inference subcommand takes
ENGINE = ("engine", "address", "gpus_per_worker", "output_dir", "output_format", "resume")


@dataclass
class Options:
    """The shared options of one command invocation (those it does not take keep these defaults)."""

    batch: int = 8
    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    workers: int | None = None
    allow_cpu_fallback: bool = False
    fmt: str = "auto"
    output: Path | None = None
    overwrite: bool = False
    quiet: bool = False
    report: Path | None = None
    vid_stride: int = 1
    max_pixels: int | None = None
    null: bool = False
    engine: str = "local"
    address: str | None = None
    gpus_per_worker: float = 0.0
    output_dir: str | None = None
    output_format: str = "jsonl"
    resume: bool = False

    @property
    def ray_requested(self) -> bool:
        """Whether any --engine ray option was given (they only apply to that engine)."""
        return (self.engine != "local" or self.output_dir is not None or self.resume
                or self.address is not None or bool(self.gpus_per_worker))


assert set(_DECLARED) == {f.name for f in dataclasses.fields(Options)}, "declare each shared option in both places"


def _refuse_filled_save(folder: Path, overwrite: bool) -> None:
    """``--save DIR`` into a folder that already holds files: one line and exit 2, before any work."""
    from cvtool.cli.common import fail
    from cvtool.io.savers import refuse_filled_folder
    from cvtool.io.atomic import SinkError

    try:
        refuse_filled_folder(folder, overwrite)
    except SinkError as e:
        raise fail(str(e)) from None


def shared(*names: str, writes_nothing: Callable[[dict], bool] = lambda _kw: False,
           **overrides: Any) -> Callable[[Callable], Callable]:
    """Append the shared options ``names`` to a command's parameters and pass them as ``opts``.

    A command with a ``save`` parameter (``--save DIR``) has that folder checked here, once for all
    of them and before the command runs: a folder that already holds files is refused unless
    ``--overwrite`` (:func:`cvtool.io.savers.refuse_filled_folder`). ``writes_nothing(kwargs)``
    says when a call saves nothing (``visualize layers``), so the check is skipped.

    ``overrides`` change a default (``batch=4``) or, given an ``Annotated`` type, the whole
    declaration (a command whose ``--backend`` means something of its own). The command must take a
    keyword parameter ``opts``; typer sees the declared options in its place.
    """
    unknown = [n for n in (*names, *overrides) if n not in _DECLARED]
    if unknown:
        raise ValueError(f"not shared options: {unknown}")
    if set(overrides) - set(names):
        raise ValueError(f"overrides for options not taken: {sorted(set(overrides) - set(names))}")

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        if "opts" not in sig.parameters:
            raise TypeError(f"{fn.__name__} must take a keyword parameter 'opts'")
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{fn.__name__} declares shared options itself: {sorted(clash)}")
        added = []
        for name in dict.fromkeys(names):  # once each, in order
            annotation, default = _DECLARED[name]
            if name == "workers" and "engine" in names:
                annotation = _RAY_WORKERS
            value = overrides.get(name, default)
            if getattr(value, "__metadata__", None) is not None:  # an Annotated replacement
                annotation, value = value, default
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value,
                                           annotation=annotation))
        taken = [p.name for p in added]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            opts = Options(**{n: kwargs.pop(n) for n in taken if n in kwargs})
            if kwargs.get("save") is not None and not writes_nothing(kwargs):
                _refuse_filled_save(kwargs["save"], opts.overwrite)
            return fn(*args, **kwargs, opts=opts)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  if p.kind is inspect.Parameter.VAR_KEYWORD else p for p in own]
        command.__signature__ = sig.replace(parameters=params + added)
        command.__annotations__ = {**{p.name: p.annotation for p in params + added},
                                   "return": sig.return_annotation}
        del command.__wrapped__  # typer must read the new signature, not the function's own
        command.shared_options = tuple(taken)
        return command

    return decorate


# -- Options that several commands take with a meaning of their own --------------------------

def Save(help: str, default_folder: Path | None = None) -> Any:  # noqa: N802 (a type factory)
    """``--save FOLDER``: where a command writes its pictures."""
    if default_folder is not None:
        return Annotated[Path, typer.Option("--save", help=help)]
    return Annotated[Optional[Path], typer.Option("--save", help=help)]


def Imgsz(help: str, min: int = 32) -> Any:  # noqa: N802,A002
    """``--imgsz N``: the network input size, where the model allows another."""
    return Annotated[Optional[int], typer.Option("--imgsz", min=min, help=help, show_default=False)]


def Eval(help: str) -> Any:  # noqa: N802
    """``--eval GROUND_TRUTH``: score the run against ground truth."""
    return Annotated[Optional[Path], typer.Option("--eval", help=help)]


def Seed(help: str, min: int | None = None) -> Any:  # noqa: N802,A002
    """``--seed N``: makes random choices repeatable."""
    return Annotated[int, typer.Option("--seed", min=min, help=help)]


def Format(help: str) -> Any:  # noqa: N802
    """A command's own wording of ``--format`` (pass as ``shared(..., fmt=Format(...))``), for a
    command whose output is not a stream of records."""
    return Annotated[str, typer.Option("--format", "-f", help=help)]


def Backend(help: str) -> Any:  # noqa: N802
    """A command's own wording of ``--backend`` (pass as ``shared(..., backend=Backend(...))``)."""
    return Annotated[str, typer.Option("--backend", help=help)]
