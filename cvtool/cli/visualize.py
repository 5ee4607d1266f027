"""`cvtool visualize`: attributions, layers, filters, feature maps and synthesised images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli.output import Output
from cvtool.cli import run
from cvtool.cli import options as o

ATTRIBUTIONS = ("saliency", "smoothgrad", "integrated-gradients", "guided-backprop", "gradcam",
                "gradcam++", "occlusion")
INSIDE = ("filters", "activations", "layers")
SYNTHESIS = ("class-model", "deepdream", "invert", "style")
METHODS = ATTRIBUTIONS + INSIDE + SYNTHESIS
_NO_SOURCES = ("filters", "layers", "class-model", "style")


@o.shared(*o.RUNTIME, *o.OUTPUT, *o.INPUT, writes_nothing=lambda kw: kw.get("method") == "layers")
def visualize(
    method: Annotated[str, typer.Argument(help="saliency, smoothgrad, integrated-gradients, guided-backprop, gradcam, gradcam++, occlusion; filters, activations, layers; class-model, deepdream, invert, style.", show_default=False)],
    sources: Annotated[Optional[list[str]], typer.Argument(help="Images, folders, globs or videos (not for filters, layers, class-model, style).", show_default=False)] = None,
    model: o.ModelOpt = "efficientnet_lite0",
    weights: o.WeightsOpt = None,
    target: Annotated[Optional[list[str]], typer.Option("--target", "-t", help="Class name or id to explain or synthesise (default: the top prediction). Attribution methods take it repeated: one map (and record) per target, named <stem>_<method>_<target>.")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", "-l", help="Layer name (see `cvtool visualize layers`); default per method (style: the content layer).")] = None,
    save: o.Save("Folder for the pictures and .npy arrays.", default_folder=Path("visualize")) = Path("visualize"),
    cmap: Annotated[str, typer.Option("--cmap", help="Heatmap colours: jet, turbo, inferno, viridis, magma, gray.")] = "jet",
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Heatmap opacity at the hottest places.")] = 0.6,
    samples: Annotated[int, typer.Option("--samples", min=1, max=1000, help="smoothgrad: noisy copies.")] = 24,
    noise: Annotated[float, typer.Option("--noise", min=0.0, max=1.0, help="smoothgrad: noise std as a fraction of the pixel range.")] = 0.15,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=100000, help="integrated-gradients path steps (128); optimisation steps for class-model, deepdream (per octave), invert, style.")] = None,
    window: Annotated[int, typer.Option("--window", min=1, help="occlusion: patch size in network-input pixels.")] = 32,
    stride: Annotated[int, typer.Option("--stride", min=1, help="occlusion: patch step.")] = 16,
    top: Annotated[int, typer.Option("--top", min=1, max=4096, help="activations: how many of the strongest channels to show.")] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Synthesis: step size.")] = None,
    octaves: Annotated[Optional[int], typer.Option("--octaves", min=1, max=10, help="deepdream: number of scales.")] = None,
    l2: Annotated[Optional[float], typer.Option("--l2", min=0.0, help="class-model: L2 decay of the image.")] = None,
    blur_every: Annotated[Optional[int], typer.Option("--blur-every", min=0, help="class-model: blur every N steps (0 = never).")] = None,
    jitter: Annotated[Optional[int], typer.Option("--jitter", min=0, help="class-model, deepdream: random shift in pixels per step.")] = None,
    tv_weight: Annotated[Optional[float], typer.Option("--tv-weight", min=0.0, help="invert, style: total-variation prior weight.")] = None,
    style_weight: Annotated[Optional[float], typer.Option("--style-weight", min=0.0, help="style: weight of the Gram-matrix loss.")] = None,
    content: Annotated[Optional[str], typer.Option("--content", help="style: the content image.")] = None,
    style: Annotated[Optional[str], typer.Option("--style", help="style: the style image.")] = None,
    max_size: Annotated[Optional[int], typer.Option("--max-size", min=32, max=4096, help="deepdream, style: longer side of the working picture.")] = None,
    seed: o.Seed("Random seed (noise, jitter).") = 0,
    *,
    opts: o.Options,
) -> None:
    """Look inside a classifier: what it looks at, what its layers hold, what it "imagines".

    Every method writes a picture and the raw array (.npy) under --save (default ./visualize)
    and one record per input to stdout.

    Examples:
      cvtool visualize gradcam sample_images/cat.jpg
      cvtool visualize saliency photos/ --target tabby --save maps/
      cvtool visualize layers
      cvtool visualize activations cat.jpg --layer _blocks.5
      cvtool visualize class-model --target goldfinch
      cvtool visualize style --content cat.jpg --style flower.jpg
    """
    c.calm_cpu_threads()
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise c.fail(f"unknown method {method!r}.{hint} Methods: {', '.join(METHODS)}")
    c.check_format(opts.fmt)
    if cmap not in ("jet", "turbo", "inferno", "viridis", "magma", "gray"):
        raise c.fail(f"--cmap {cmap!r}: expected jet, turbo, inferno, viridis, magma or gray")
    sources = list(sources or [])
    if method in _NO_SOURCES and sources:
        if method == "style":
            raise c.fail("style takes --content IMAGE and --style IMAGE, not positional inputs")
        raise c.fail(f"{method} takes no input images (it shows the model itself)")
    if method not in _NO_SOURCES and not sources:
        raise c.fail(f"{method} needs at least one input image")
    if method == "style" and (content is None or style is None):
        raise c.fail("style needs both --content IMAGE and --style IMAGE")
    targets = list(target or [])
    if len(targets) > 1 and method not in ATTRIBUTIONS:
        raise c.fail(f"{method} takes one --target; several are for the attribution methods "
                     f"({', '.join(ATTRIBUTIONS)})")
    if method == "class-model" and not targets:
        raise c.fail("class-model needs --target CLASS (a class name or id)")

    from cvtool.explain.layers import LayerError, find_layer
    from cvtool.io.sinks import ArtifactSaver, SinkError
    from cvtool.models.differentiable import TargetError, load_classifier
    from cvtool.models.loader import ModelError
    from cvtool.runtime.device import DeviceError

    try:
        c.check_output(opts.fmt, opts.output, opts.overwrite)  # before any work
        saver = ArtifactSaver(save, opts.overwrite) if method != "layers" else None
        clf = load_classifier(model, weights, opts.device, opts.threads)
        target_ids = [clf.target_index(t) for t in targets]
        target_id = target_ids[0] if target_ids else None
        if layer is not None and method not in ("filters",):
            find_layer(clf.net, layer)
        if method == "activations" and layer is None:
            raise LayerError("activations needs --layer NAME; `cvtool visualize layers` lists them")
        if method in ("deepdream", "invert") and layer is None:
            from cvtool.explain.synthesis import default_layer

            layer = default_layer(clf, method)
    except (ModelError, DeviceError, TargetError, LayerError, SinkError) as e:
        raise c.fail(str(e)) from None

    dev = str(clf.device)
    if method == "layers":
        _print_layers(clf, opts.fmt, opts.output, opts.overwrite)
        return
    slug = method.replace("+", "p")
    knobs = dict(samples=samples, noise=noise, steps=steps, window=window, stride=stride, top=top, lr=lr,
                octaves=octaves, l2=l2, blur_every=blur_every, jitter=jitter, tv_weight=tv_weight,
                style_weight=style_weight, max_size=max_size, seed=seed, layer=layer)

    if method in ("filters", "class-model", "style"):
        _run_once(method, clf, saver, slug, target_id, knobs, content, style, dev, opts.fmt, opts.output,
                  opts.overwrite, opts.quiet, opts.max_pixels)
        return

    def process(frame) -> dict:
        return _process(method, clf, saver, slug, frame, target_ids, knobs, cmap, alpha, opts.quiet)

    run.run_picture_command(
        "visualize", sources, opts, model_name=clf.name, device=dev, process=process, table_row=_row,
        table_columns=["source", "method", "target", "saved"])


def _summary(clf, x, target_id):
    top_id, top_label, top_p = clf.top(x)
    tid = top_id if target_id is None else target_id
    p = float(clf.probs(x)[0, tid])
    return tid, {"prediction": clf.label_record(top_id, top_p), "target": clf.label_record(tid, p)}


def _process(method, clf, saver, slug, frame, target_ids, opts, cmap, alpha, quiet) -> dict | list:
    """One input's result; for the attribution methods a list, one map per target (the top
    prediction, or each --target in turn, each file named after its target)."""
    import numpy as np

    from cvtool.cli.common import InputError
    from cvtool.io.sinks import SinkError

    x = clf.prepare(frame.rgb)
    stem = saver.stem({"source": frame.source, "frame": frame.frame})
    if method in ATTRIBUTIONS:
        return [_attribution(method, clf, saver, frame, x, f"{stem}_{slug}" + (
                    "_" + clf.labels[tid].replace(" ", "_").replace("/", "_") if tid is not None else ""),
                    tid, opts, cmap, alpha) for tid in (target_ids or [None])]
    record = {"method": method}
    try:
        saver.check(f"{stem}_{slug}")
        if method == "activations":
            from cvtool.explain.inside import activations

            _, preds = _summary(clf, x, None)
            record.update(preds)
            v = activations(clf, x, opts["layer"], top=opts["top"])
            picture, array = v.image, v.array
            record.update(v.info)
        else:  # deepdream, invert
            from cvtool.explain import synthesis

            progress = _progress(quiet, f"{method} {frame.source}")
            kw = {k: opts[k] for k in ("steps", "lr", "jitter", "octaves", "tv_weight", "max_size")
                  if opts[k] is not None}
            try:
                if method == "deepdream":
                    kw.pop("tv_weight", None)
                    r = synthesis.deepdream(clf, frame.rgb, opts["layer"], seed=opts["seed"],
                                            progress=progress.update if progress else None, **kw)
                else:
                    for k in ("jitter", "octaves", "max_size"):
                        kw.pop(k, None)
                    r = synthesis.invert(clf, frame.rgb, opts["layer"], seed=opts["seed"],
                                         progress=progress.update if progress else None, **kw)
            finally:
                if progress:
                    progress.close()
            record["layer"] = opts["layer"]
            record.update(r.info)
            picture = r.image
            array = r.array if r.array is not None else r.image.astype(np.float32) / 255.0
        record["saved"] = {"picture": str(saver.png(f"{stem}_{slug}", picture)),
                           "array": str(saver.npy(f"{stem}_{slug}", array))}
    except SinkError as e:
        raise InputError(f"not saved: {e}") from None
    except ValueError as e:  # a method's own validation (e.g. a layer without feature maps)
        raise InputError(str(e)) from None
    return record


def _attribution(method, clf, saver, frame, x, name, target_id, opts, cmap, alpha):
    """One attribution map of one picture for one target (None: the top prediction), saved as
    ``name``; its fields, or an :class:`InputError` that still names the method and target."""
    from cvtool.cli.common import InputError
    from cvtool.explain.attribution import attribute
    from cvtool.io.sinks import SinkError
    from cvtool.render.heatmap import overlay_on_source

    record = {"method": method}
    try:
        tid, preds = _summary(clf, x, target_id)
        record.update(preds)
        saver.check(name)
        a = attribute(method, clf, x, tid, layer=opts["layer"], samples=opts["samples"],
                      noise=opts["noise"], steps=opts["steps"] or 128, window=opts["window"],
                      stride=opts["stride"], seed=opts["seed"])
        box = clf.preprocess.crop_box(frame.rgb.shape[1], frame.rgb.shape[0])
        picture = overlay_on_source(frame.rgb, a.heat, box, alpha=alpha, cmap=cmap)
        record.update(_peak(a.raw if a.raw.shape == a.heat.shape else a.heat, box))
        record.update(a.info)
        record["saved"] = {"picture": str(saver.png(name, picture)), "array": str(saver.npy(name, a.raw))}
    except SinkError as e:
        return InputError(f"not saved: {e}", record)
    except ValueError as e:  # a method's own validation (e.g. a layer without feature maps)
        return InputError(str(e), record)
    return record


def _peak(heat, box) -> dict:
    """Where the map is hottest, in the input picture's pixel coordinates: the largest magnitude
    of the unclipped map (the display map is clipped at a percentile, where hundreds of pixels
    tie at 1.0 and an argmax would take the topmost)."""
    import numpy as np

    s = heat.shape[0]
    mag = np.abs(np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0))
    y, x = np.unravel_index(int(np.argmax(mag)), mag.shape)
    x0, y0, x1, y1 = box
    return {"peak": {"x": round(x0 + (x + 0.5) * (x1 - x0) / s, 1),
                     "y": round(y0 + (y + 0.5) * (y1 - y0) / s, 1)}}


class _Bar:
    def __init__(self, title: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=True)
        self.p.start()
        self.task = self.p.add_task(title, total=None)

    def update(self, step: int, total: int) -> None:
        self.p.update(self.task, completed=step, total=total)

    def close(self) -> None:
        self.p.stop()


def _progress(quiet: bool, title: str):
    return None if quiet or not sys.stderr.isatty() else _Bar(title)


def _run_once(method, clf, saver, slug, target_id, opts, content, style, dev, fmt, output,
              overwrite, quiet, max_pixels) -> None:
    """filters, class-model, style: one result, not one per input."""
    import time

    import numpy as np

    from cvtool.io.decode import DecodeError, decode_image
    from cvtool.io.sinks import SinkError
    from cvtool.tasks.base import Record

    t0 = time.perf_counter()
    fields: dict = {"method": method}
    if method == "filters":
        name = clf.name
    elif method == "style":
        name = content
    else:
        name = f"{clf.name}_{clf.labels[target_id]}".replace(" ", "_").replace("/", "_")
    stem = saver.stem({"source": name, "frame": None})
    try:
        saver.check(f"{stem}_{slug}")
    except SinkError as e:
        raise c.fail(str(e), c.EXIT_FAILED) from None
    if method == "filters":
        from cvtool.explain.inside import filters

        source = f"{clf.name}:filters"
        try:
            v = filters(clf, opts["layer"])
        except ValueError as e:
            raise c.fail(str(e)) from None
        picture, array = v.image, v.array
        fields.update(v.info)
    else:
        from cvtool.explain import synthesis

        kw = {k: opts[k] for k in ("steps", "lr", "jitter", "l2", "blur_every", "tv_weight",
                                   "style_weight", "max_size") if opts[k] is not None}
        progress = _progress(quiet, method)
        try:
            if method == "class-model":
                source = f"{clf.name}:class-model:{clf.labels[target_id]}"
                for k in ("tv_weight", "style_weight", "max_size"):
                    kw.pop(k, None)
                r = synthesis.class_model(clf, target_id, seed=opts["seed"],
                                          progress=progress.update if progress else None, **kw)
                fields["target"] = clf.label_record(target_id)
            else:
                source = content
                for k in ("jitter", "l2", "blur_every"):
                    kw.pop(k, None)
                pictures = []
                for flag, path in (("--content", content), ("--style", style)):
                    try:
                        pictures.append(decode_image(path, max_pixels).rgb)
                    except DecodeError as e:
                        raise c.fail(f"{flag} {path}: {e}", c.EXIT_FAILED) from None
                c_rgb, s_rgb = pictures
                if opts["layer"] is not None:
                    kw["content_layer"] = opts["layer"]
                r = synthesis.style_transfer(clf, c_rgb, s_rgb, seed=opts["seed"],
                                             progress=progress.update if progress else None, **kw)
                fields["style_image"] = style
        except ValueError as e:
            raise c.fail(str(e)) from None
        finally:
            if progress:
                progress.close()
        fields.update(r.info)
        picture = r.image
        array = r.array if r.array is not None else r.image.astype(np.float32) / 255.0
    error = None
    try:
        fields["saved"] = {"picture": str(saver.png(f"{stem}_{slug}", picture)),
                           "array": str(saver.npy(f"{stem}_{slug}", array))}
    except SinkError as e:
        error = f"not saved: {e}"
    if method == "class-model":
        p = float(clf.probs(clf.to_tensor(picture))[0, target_id])
        fields["target"]["score_8bit"] = round(p, 6)
    rec = Record(source=source, task="visualize", model=clf.name, backend="torch", device=dev,
                 image_size=(picture.shape[1], picture.shape[0]) if method != "filters" else None,
                 error=error, fields=fields, batch_size=1,
                 time_ms={"total": round((time.perf_counter() - t0) * 1e3, 3)})
    out = _output(fmt, output, overwrite, quiet)
    out.add(rec.to_dict())
    raise typer.Exit(out.close())


def _output(fmt, output, overwrite, quiet):
    from cvtool.io.atomic import SinkError

    try:
        return Output(fmt, output, overwrite, quiet, 1, table_row=_row,
                        table_columns=["source", "method", "target", "saved"])
    except SinkError as e:
        raise c.fail(str(e)) from None


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    t = d.get("target") or {}
    target = f"{t.get('label')} {t['score']:.2f}" if "score" in t else str(t.get("label", ""))
    return [name, d.get("method", ""), target, (d.get("saved") or {}).get("picture", "")]


def _print_layers(clf, fmt, output, overwrite) -> None:
    from cvtool.explain.inside import layers

    rows = layers(clf)
    if fmt == "table" or (fmt == "auto" and output is None and sys.stdout.isatty()):
        from rich.console import Console
        from rich.table import Table

        t = Table(header_style="bold", title=f"{clf.name}: layers in forward order ({clf.input_size}² input)")
        for col in ("name", "type", "output shape", "params"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r["name"], r["type"], "×".join(map(str, r["shape"][1:])) if r["shape"] else "-",
                      f"{r['params']:,}")
        Console().print(t)
        return
    from cvtool.io.sinks import AtomicFile, RecordWriter, SinkError, format_for

    try:
        if output is not None:
            with AtomicFile(output, overwrite=overwrite) as fh:
                w = RecordWriter(fh, format_for(str(output), fmt))
                for r in rows:
                    w.write(r)
                w.close()
        else:
            w = RecordWriter(sys.stdout, format_for(None, fmt))
            for r in rows:
                w.write(r)
            w.close()
    except SinkError as e:
        raise c.fail(str(e)) from None
