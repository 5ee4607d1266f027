"""`cvtool models`: list, inspect, download and import model weights."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import options as o

app = typer.Typer(help="List models, show where their weights come from, fetch or import weights.",
                  no_args_is_help=True, add_completion=False)


@app.command("list")
@o.shared("fmt")
def list_cmd(
    task: Annotated[str, typer.Option("--task", help="Only models for this task.")] = "",
    *,
    opts: o.Options,
) -> None:
    """List registered models and whether their weights are available offline."""
    from cvtool.models import registry
    from cvtool.models.weights import _package_file, cached_file, imported_unverified, offline

    fmt = c.check_format(opts.fmt)
    rows = []
    try:
        specs = registry.list_models(task or None)
    except registry.UnknownModel as e:
        raise c.fail(str(e)) from None
    for spec in specs:
        if spec.weights.train_only:
            where = "train it"  # no weights anywhere but the user's own `cvtool train` checkpoints
        elif spec.weights.hf_repo:
            from cvtool.models.weights import hf_where

            where = hf_where(spec) or ("download" if not offline() else "missing (offline)")
        elif cached_file(spec).is_file():
            where = "cache" if not imported_unverified(spec) else "cache (imported, unverified)"
        elif _package_file(spec) is not None:
            where = "package"
        else:
            where = ("download" if not offline() else "missing (offline)") if spec.weights.url else "missing"
        rows.append({"name": spec.name, "task": spec.task, "weights": where,
                     "license": spec.weights.license.split(";")[0],
                     "top1": spec.weights.metrics.get("imagenet_top1"), "description": spec.description})
    rows += _imported_rows(task)
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


def _imported_rows(task: str) -> list[dict]:
    """ONNX files from other tools brought in with `models import NAME FILE.onnx`."""
    from cvtool.models.foreign import ForeignError, describe
    from cvtool.models.loader import imported_dir

    rows = []
    for path in sorted(imported_dir().glob("*.onnx")) if imported_dir().is_dir() else []:
        try:
            d = describe(path)
        except ForeignError:
            continue
        if not task or d.task == task:
            rows.append({"name": path.stem, "task": d.task, "weights": "imported", "license": "",
                         "top1": None, "description": f"ONNX file ({d.format}, {d.kind}, {len(d.labels)} classes)"})
    return rows


def _emit(rows: list[dict], fmt: str) -> None:
    """JSON Lines, or CSV with ``-f csv``, or one JSON array with ``-f json``, on stdout."""
    from cvtool.io.sinks import RecordWriter

    writer = RecordWriter(sys.stdout, fmt if fmt in ("csv", "json") else "jsonl")
    for r in rows:
        writer.write(r)
    writer.close()


@app.command("info")
def info_cmd(model: Annotated[str, typer.Argument(help="Registry name or cvtool .onnx file.")],
             weights: Annotated[Optional[str], typer.Option("--weights", help="Hugging Face models: describe this model folder instead of the one cvtool would find.")] = None,
             revision: o.RevisionOpt = None) -> None:
    """Show a model's task, preprocessing, labels, weights source, licence and cache state.

    For a Hugging Face model whose weights are here, ``resolved`` names the folder, the Hub
    commit (revision) of its files and the preprocessing read from its preprocessor_config.json."""
    from cvtool.models import registry
    from cvtool.models.loader import ModelError, load
    from cvtool.models.weights import _package_file, cached_file, imported_unverified

    from cvtool.tasks.caption import LABELS_MODEL, labels_model_info

    if model == LABELS_MODEL:
        print(json.dumps(labels_model_info(), indent=2))
        return
    if model.lower().endswith(".onnx") or (not registry.is_registered(model) and "/" not in model):
        try:
            m = load(model, weights_option=None, option="MODEL")
        except ModelError as e:
            raise c.fail(str(e)) from None
        if m.foreign is not None:  # another exporter's file: what cvtool recognised, and from where
            print(json.dumps({"name": m.name, **m.foreign.to_dict()}, indent=2))
            return
        from cvtool.runtime.onnx import read_metadata

        meta = {k: v for k, v in read_metadata(m.onnx_file).items() if k not in ("labels", "preprocess")}
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
                            "imported_unverified": imported_unverified(spec),
                            "train_only": w.train_only,
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
             revision: o.RevisionOpt = None) -> None:
    """Download a model's official weights into the cache (needs internet)."""
    from cvtool.models import registry
    from cvtool.models.weights import WeightsError, cached_file, fetch, resolve

    try:
        spec = registry.get(model)
        if spec.weights.train_only:
            from cvtool.models.weights import how_to_get

            raise WeightsError(f"nothing to pull for {spec.name!r}: {how_to_get(spec, None, pulling=True)}")
        if spec.weights.hf_repo:
            from cvtool.models.weights import pull_hf

            print(str(pull_hf(spec, revision)))
            return
        if cached_file(spec).is_file():
            print(f"{spec.name}: already cached at {cached_file(spec)}", file=sys.stderr)
            return
        rw = resolve(spec, weights_option=None) if spec.weights.url is None else None
        path = rw.path if rw else fetch(spec, weights_option=None, pulling=True)
    except (registry.UnknownModel, WeightsError) as e:
        raise c.fail(str(e)) from None
    print(str(path))


@app.command("import")
def import_cmd(
    model: Annotated[str, typer.Argument(help="Registry name (weights file), or a new name for an ONNX file.")],
    file: Annotated[str, typer.Argument(help="Weights file (or, for Hugging Face models, the model folder) brought from another machine, or an ONNX file from another exporter.")],
    force: Annotated[bool, typer.Option("--force", help="Import even if the checksum differs from the official file; replace an imported ONNX model of that name.")] = False,
    task: Annotated[str | None, typer.Option("--task", help="ONNX files without metadata: classify, detect, segment or pose.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="ONNX files: class names: imagenet, coco, voc, or a text file (one per line).")] = None,
    resize: Annotated[int | None, typer.Option("--resize", min=0, help="ONNX classifiers: shorter side after resizing (default: the crop).")] = None,
    crop: Annotated[int | None, typer.Option("--crop", min=1, help="ONNX classifiers: square centre crop (default: the input's size).")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="ONNX detectors: letterbox size (default: the input's size).")] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="ONNX files: per-channel mean of the [0, 1] picture, e.g. 0.485,0.456,0.406 (default 0).")] = None,
    std: Annotated[str | None, typer.Option("--std", help="ONNX files: per-channel std, e.g. 0.229,0.224,0.225 (default 1).")] = None,
    layout: Annotated[str | None, typer.Option("--layout", help="ONNX files: detect: yolo or end2end; classify: logits or probabilities.")] = None,
    bgr: Annotated[bool, typer.Option("--bgr", help="ONNX files: the network expects BGR channel order.")] = False,
) -> None:
    """Check a weights file (checksum, loads into the architecture) and put it in the cache; or
    take an ONNX file from another exporter under a name of your choosing (--model NAME)."""
    from cvtool.models import registry
    from cvtool.models.weights import WeightsError, import_weights

    if file.lower().endswith(".onnx") or task is not None:
        side = {k: v for k, v in dict(task=task, labels=labels, resize=resize, crop=crop, imgsz=imgsz, mean=mean,
                                      std=std, layout=layout, bgr=bgr or None).items() if v is not None}
        from cvtool.models.foreign import ForeignError, import_onnx

        try:
            dest = import_onnx(model, file, side or None, force=force)
        except ForeignError as e:
            raise c.fail(str(e)) from None
        print(str(dest))
        return
    try:
        dest = import_weights(registry.get(model), file, force=force)
    except (registry.UnknownModel, WeightsError) as e:
        raise c.fail(str(e)) from None
    print(str(dest))


@app.command("bench")
@o.shared("threads", "fmt")
def bench_cmd(
    model: Annotated[str, typer.Argument(help="Registry name, .onnx file or checkpoint.")],
    weights: o.WeightsOpt = None,
    batches: Annotated[str, typer.Option("--batches", help="Batch sizes to try for throughput.")] = "1,2,4,8,16,32",
    seconds: Annotated[float, typer.Option("--seconds", min=0.05, help="Time per measurement.")] = 1.0,
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Skip torch eager.")] = False,
    *,
    opts: o.Options,
) -> None:
    """Latency (batch 1) and throughput (best batch) on every backend/provider that loads here."""
    from cvtool.export.onnx import ExportError
    from cvtool.models.loader import ModelError, load
    from cvtool.export.bench import bench

    fmt, threads = c.check_format(opts.fmt), opts.threads
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
