"""`cvtool models`: list, inspect, download and import model weights."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c

app = typer.Typer(help="List models, show where their weights come from, fetch or import weights.",
                  no_args_is_help=True, add_completion=False)


@app.command("list")
def list_cmd(
    task: Annotated[str, typer.Option("--task", help="Only models for this task.")] = "",
    fmt: c.FormatOpt = "auto",
) -> None:
    """List registered models and whether their weights are available offline."""
    from cvtool.models import registry
    from cvtool.models.weights import _package_file, cached_file, offline

    c.check_format(fmt)
    rows = []
    for spec in registry.list_models(task or None):
        if spec.weights.hf_repo:
            from cvtool.models.weights import hf_where

            where = hf_where(spec) or ("download" if not offline() else "missing (offline)")
        elif cached_file(spec).is_file():
            where = "cache"
        elif _package_file(spec) is not None:
            where = "package"
        else:
            where = ("download" if not offline() else "missing (offline)") if spec.weights.url else "missing"
        rows.append({"name": spec.name, "task": spec.task, "weights": where,
                     "license": spec.weights.license.split(";")[0],
                     "top1": spec.weights.metrics.get("imagenet_top1"), "description": spec.description})
    if fmt == "table" or (fmt == "auto" and sys.stdout.isatty()):
        from rich.console import Console
        from rich.table import Table

        t = Table(header_style="bold")
        for col in ("name", "task", "weights", "ImageNet top-1", "license"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r["name"], r["task"], r["weights"], "" if r["top1"] is None else f"{r['top1']:.1f}",
                      r["license"])
        Console().print(t)
    else:
        _emit(rows, fmt)


def _emit(rows: list[dict], fmt: str) -> None:
    """JSON Lines, or CSV with ``-f csv``, on stdout."""
    from cvtool.io.sinks import RecordWriter

    writer = RecordWriter(sys.stdout, "csv" if fmt == "csv" else "jsonl")
    for r in rows:
        writer.write(r)
    writer.close()


@app.command("info")
def info_cmd(model: Annotated[str, typer.Argument(help="Registry name or cvtool .onnx file.")],
             weights: Annotated[Optional[str], typer.Option("--weights", help="Hugging Face models: describe this model folder instead of the one cvtool would find.")] = None,
             revision: c.RevisionOpt = None) -> None:
    """Show a model's task, preprocessing, labels, weights source, licence and cache state.

    For a Hugging Face model whose weights are here, ``resolved`` names the folder, the Hub
    commit (revision) of its files and the preprocessing read from its preprocessor_config.json."""
    from cvtool.models import registry
    from cvtool.models.loader import ModelError, load
    from cvtool.models.weights import _package_file, cached_file

    if model.lower().endswith(".onnx"):
        try:
            m = load(model)
        except ModelError as e:
            raise c.fail(str(e)) from None
        from cvtool.runtime.onnx import read_metadata

        meta = {k: v for k, v in read_metadata(model).items() if k not in ("labels", "preprocess")}
        info = {"name": m.name, "file": str(m.onnx_file), "task": m.task,
                "preprocess": json.loads(m.preprocess.to_json()), "num_labels": len(m.labels),
                "labels_head": list(m.labels[:5]), "weights_sha256": m.weights_sha256, "metadata": meta}
    else:
        try:
            spec = registry.get(model)
        except registry.UnknownModel as e:
            raise c.fail(str(e)) from None
        w = spec.weights
        pkg = _package_file(spec)
        info = {"name": spec.name, "task": spec.task, "description": spec.description,
                "weights": {"file": w.filename, "source": w.source, "license": w.license, "url": w.url,
                            **({"hf_repo": w.hf_repo, "hf_revision": w.hf_revision} if w.hf_repo else {}),
                            "package": w.package, "sha256": w.sha256, "sha256_prefix": w.sha256_prefix,
                            "cached": str(cached_file(spec)) if cached_file(spec).is_file() else None,
                            "in_package": str(pkg) if pkg else None},
                "preprocess": json.loads(w.preprocess.to_json()), "labels": w.labels,
                "metrics": w.metrics}
        if w.hf_repo:
            info["resolved"] = _resolved_hf(spec, weights, revision)
        elif weights is not None or revision is not None:
            raise c.fail("--weights/--revision: `models info` resolves folders of Hugging Face models only")
    print(json.dumps(info, indent=2))


def _resolved_hf(spec, weights: str | None, revision: str | None) -> dict | None:
    """The folder cvtool would use now (offline look-up, nothing downloaded), its revision and
    the preprocessing its preprocessor_config.json gives; None when there is none here."""
    from cvtool.models.hf_preprocess import PreprocessConfigError, from_folder
    from cvtool.models.weights import WeightsError, resolve

    try:
        rw = resolve(spec, weights, download=False, revision=revision)
    except WeightsError as e:
        if weights is not None:
            raise c.fail(str(e)) from None
        return None
    try:
        pre = from_folder(rw.path, spec.weights.preprocess).describe()
    except PreprocessConfigError as e:
        pre = {"error": str(e)}
    return {"path": str(rw.path), "origin": rw.origin, "revision": rw.revision, "preprocess": pre}


@app.command("pull")
def pull_cmd(model: Annotated[str, typer.Argument(help="Registry name.")],
             revision: c.RevisionOpt = None) -> None:
    """Download a model's official weights into the cache (needs internet)."""
    from cvtool.models import registry
    from cvtool.models.weights import WeightsError, cached_file, fetch, resolve

    try:
        spec = registry.get(model)
        if spec.weights.hf_repo:
            from cvtool.models.weights import pull_hf

            print(str(pull_hf(spec, revision)))
            return
        if cached_file(spec).is_file():
            print(f"{spec.name}: already cached at {cached_file(spec)}", file=sys.stderr)
            return
        rw = resolve(spec) if spec.weights.url is None else None
        path = rw.path if rw else fetch(spec)
    except (registry.UnknownModel, WeightsError) as e:
        raise c.fail(str(e)) from None
    print(str(path))


@app.command("import")
def import_cmd(
    model: Annotated[str, typer.Argument(help="Registry name.")],
    file: Annotated[str, typer.Argument(help="Weights file (or, for Hugging Face models, the model folder) brought from another machine.")],
    force: Annotated[bool, typer.Option("--force", help="Import even if the checksum differs from the official file.")] = False,
) -> None:
    """Check a weights file (checksum, loads into the architecture) and put it in the cache."""
    from cvtool.models import registry
    from cvtool.models.weights import WeightsError, import_weights

    try:
        dest = import_weights(registry.get(model), file, force=force)
    except (registry.UnknownModel, WeightsError) as e:
        raise c.fail(str(e)) from None
    print(str(dest))


@app.command("bench")
def bench_cmd(
    model: Annotated[str, typer.Argument(help="Registry name, .onnx file or checkpoint.")],
    weights: c.WeightsOpt = None,
    batches: Annotated[str, typer.Option("--batches", help="Batch sizes to try for throughput.")] = "1,2,4,8,16,32",
    seconds: Annotated[float, typer.Option("--seconds", min=0.05, help="Time per measurement.")] = 1.0,
    threads: c.ThreadsOpt = None,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Skip torch eager.")] = False,
    fmt: c.FormatOpt = "auto",
) -> None:
    """Latency (batch 1) and throughput (best batch) on every backend/provider that loads here."""
    from cvtool.export.onnx import ExportError
    from cvtool.models.loader import ModelError, load
    from cvtool.export.bench import bench

    c.check_format(fmt)
    try:
        sizes = tuple(int(b) for b in batches.split(",") if b.strip())
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        raise c.fail(f"--batches {batches!r}: expected positive integers separated by commas") from None
    try:
        rows = bench(load(model, weights), sizes, seconds, threads, include_torch=not no_torch)
    except (ModelError, ExportError) as e:
        raise c.fail(str(e)) from None
    if fmt == "table" or (fmt == "auto" and sys.stdout.isatty()):
        from rich.console import Console
        from rich.table import Table

        t = Table("backend", "provider", "device", "latency ms (batch 1)", "img/s (best batch)", "best batch",
                  title=f"{model}", header_style="bold")
        for r in rows:
            if "error" in r:
                t.add_row(r["backend"], r["provider"], "", r["error"], "", "")
            else:
                lat = "n/a (fixed batch)" if r["latency_ms_batch1"] is None else f"{r['latency_ms_batch1']:.2f}"
                t.add_row(r["backend"], r["provider"], r["device"], lat,
                          f"{r['throughput_img_s']:.1f}", str(r["best_batch"]))
        Console().print(t)
    else:
        _emit([{"model": model, **r} for r in rows], fmt)
