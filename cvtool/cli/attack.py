"""`cvtool attack`: adversarial examples against a classifier, and robust accuracy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o

METHOD_HELP = ("fgsm, bim, pgd, mifgsm, deepfool, cw (white box: need gradients) or square "
               "(black box: scores only, works on ONNX files too).")


@o.shared("backend", *o.RUNTIME, *o.OUTPUT, *o.INPUT, backend=o.Backend("auto (torch; ONNX Runtime for .onnx files), torch, or onnx (square only)."))
def attack(
    method: Annotated[str, typer.Argument(help=METHOD_HELP, show_default=False)],
    sources: o.Sources,
    model: o.ModelOpt = "efficientnet_lite0",
    weights: o.WeightsOpt = None,
    eps: Annotated[Optional[str], typer.Option("--eps", help="Perturbation budget in [0, 1] pixel units; fractions allowed. Default 4/255 (linf), 0.5 (l2); none for deepfool and cw.", show_default=False)] = None,
    alpha: Annotated[Optional[str], typer.Option("--alpha", help="Step size (bim, pgd, mifgsm). Default eps/steps (bim, mifgsm), 2.5·eps/steps (pgd).", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Iterations: bim/pgd/mifgsm 10, deepfool at most 50, cw 100 per search round.", show_default=False)] = None,
    restarts: Annotated[int, typer.Option("--restarts", help="pgd: random restarts (a new one only while none has succeeded).")] = 1,
    norm: Annotated[Optional[str], typer.Option("--norm", help="linf (default) or l2. cw is l2; square is linf.", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Targeted attack: the class (name or id) to reach. Default: untargeted.", show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="True classes: JSON object, CSV or TSV of file name → class name or id (docs/attack.md). Default: the clean prediction.", show_default=False)] = None,
    queries: Annotated[Optional[int], typer.Option("--queries", help="square: query budget per picture (default 1000).", show_default=False)] = None,
    cw_c: Annotated[Optional[float], typer.Option("--c", help="cw: initial trade-off constant (default 1).", show_default=False)] = None,
    search_steps: Annotated[Optional[int], typer.Option("--search-steps", help="cw: binary-search rounds on c (default 3).", show_default=False)] = None,
    eval_model: Annotated[Optional[str], typer.Option("--eval-model", help="Also score the adversarial pictures on this model (transfer): registry name, checkpoint or .onnx file.", show_default=False)] = None,
    save: o.Save("Folder for PNGs: <stem>_adv.png, <stem>_perturbation.png (amplified), <stem>_clean.png, at the --resolution attacked (the photo's size, or the network's).") = None,
    resolution: Annotated[str, typer.Option("--resolution", help="photo: perturb the photo's own pixels, attacked through the preprocessing, so `cvtool classify` on the saved photo is fooled; network: the network-sized picture; auto: photo when the photo is larger than the network input (gradient attacks), else network.")] = "auto",
    seed: o.Seed("Seed for random starts and square's random squares.") = 0,
    *,
    opts: o.Options,
) -> None:
    """Attack a classifier: adversarial pictures, with clean and robust accuracy.

    Perturbations live in pixel space [0, 1]: of the photo itself when it is larger than the network input (attacked through the resizing and cropping, so `cvtool classify` on the saved photo is fooled), else of the network-sized picture (--resolution). Normalisation stays inside the model. The result is rounded to 8 bits, kept within --eps and scored again: the record says whether the saved picture still fools the model. One record per input; a summary of clean accuracy, robust accuracy and success rate goes to stderr.

    Examples:
      cvtool attack pgd sample_images/ --eps 4/255
      cvtool attack fgsm sample_images/cat.jpg --save adv/
      cvtool attack pgd sample_images/cat.jpg --target 'goldfish' --steps 20
      cvtool attack square sample_images/cat.jpg --model lite0.onnx --queries 500
      cvtool attack mifgsm photos/ --labels truth.csv --eval-model ckpt.pt -o results.jsonl
    """
    c.calm_cpu_threads()
    from cvtool.attack import METHODS, WHITE_BOX

    c.check_format(opts.fmt)
    method = method.lower()
    if method not in METHODS:
        raise c.fail(f"unknown attack {method!r}: choose one of {', '.join(METHODS)}")
    from cvtool.attack.evaluate import RESOLUTIONS

    if resolution not in RESOLUTIONS:
        raise c.fail(f"--resolution {resolution!r}: expected {', '.join(RESOLUTIONS)}")
    if resolution == "photo" and method == "square":
        raise c.fail("--resolution photo needs a gradient attack; square works on the network-sized picture")
    victim, eval_victim, cfg, target_id, label_map, saver = _setup(
        method, model, weights, eps, alpha, steps, restarts, norm, target, labels, queries, cw_c, search_steps,
        eval_model, save, opts.backend, opts.device, opts.threads, seed, opts.overwrite, opts.quiet,
        need_gradients=method in WHITE_BOX, fmt=opts.fmt, output=opts.output)

    from cvtool.attack.evaluate import Attacker, PictureError

    attacker = Attacker(victim, cfg, target_id, label_map, eval_victim, saver, resolution=resolution)

    def process(item) -> dict:
        try:
            return attacker(item.source, item.frame, item.rgb)
        except PictureError as e:
            raise c.InputError(str(e)) from None

    def finish(out) -> None:
        if opts.quiet or attacker.tally.n == 0:
            return
        from rich.console import Console
        from rich.table import Table

        print(attacker.tally.line(), file=sys.stderr)
        cols, rows = attacker.tally.rows()
        t = Table(header_style="bold")
        for i, name in enumerate(cols):
            t.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            t.add_row(*row)
        Console(stderr=True).print(t)

    run.run_picture_command(
        "attack", sources, opts, model_name=victim.name, device=victim.device, process=process, table_row=_row,
        table_columns=["source", "truth", "clean", "adversarial (8-bit)", "success", "L∞·255", "L2", "iters/queries"],
        finish=finish, backend=victim.backend)


def _setup(method, model, weights, eps, alpha, steps, restarts, norm, target, labels, queries, cw_c,
           search_steps, eval_model, save, backend, device, threads, seed, overwrite, quiet, need_gradients,
           fmt="auto", output=None):
    """Everything that can fail before the first record: a usage error exits 2."""
    from cvtool.attack.config import ConfigError, build_config
    from cvtool.attack.labels import LabelsError, read_labels_file
    from cvtool.attack.save import AttackSaver
    from cvtool.attack.victim import check_backend, load_classifier_model, open_victim
    from cvtool.io.sinks import SinkError
    from cvtool.models.differentiable import TargetError, resolve_target
    from cvtool.models.loader import ModelError
    from cvtool.runtime.device import DeviceError, parse_device

    try:
        opts = dict(norm=norm, eps=eps, alpha=alpha, steps=steps, restarts=restarts, queries=queries,
                    c=cw_c, search_steps=search_steps, seed=seed)
        build_config(method, **opts)  # option mistakes first, before anything is loaded
        c.check_output(fmt, output, overwrite)
        parse_device(device)
        hush = (lambda _m: None) if quiet else None  # -q: no "downloading ... weights" line either
        loaded = load_classifier_model(model, weights, notify=hush)
        use_onnx = check_backend(loaded, model, backend, need_gradients)
        cfg = build_config(method, **opts, input_size=loaded.preprocess.crop)
        if method == "square" and cfg.eps * 255 < 1 - 1e-6:
            raise ConfigError("square needs --eps of at least one 8-bit level (1/255)")
        target_id = None if target is None else resolve_target(target, loaded.labels)
        label_map = None if labels is None else read_labels_file(labels, loaded.labels)
        eval_loaded = eval_onnx = None
        if eval_model is not None:
            eval_loaded = load_classifier_model(eval_model, option="--eval-model", notify=hush)
            eval_onnx = check_backend(eval_loaded, eval_model, "auto", False, option="--eval-model")
            if tuple(eval_loaded.labels) != tuple(loaded.labels):
                raise ModelError(f"--eval-model {eval_model}: its {len(eval_loaded.labels)} classes are not "
                                 f"the attacked model's {len(loaded.labels)}, so predictions cannot be compared")
        saver = AttackSaver(save, overwrite) if save is not None else None
        notify = None if quiet else (lambda msg: print(f"cvtool: {msg}", file=sys.stderr))
        victim = open_victim(loaded, use_onnx, device, threads, notify)
        eval_victim = None if eval_loaded is None else open_victim(eval_loaded, eval_onnx, device, threads, notify)
        if eval_victim is not None and eval_victim.name == victim.name:
            eval_victim.name = Path(eval_model).name  # e.g. an ONNX export of the same model: name it by its file
    except (ConfigError, TargetError, LabelsError, ModelError, DeviceError, SinkError) as e:
        raise c.fail(str(e)) from None
    return victim, eval_victim, cfg, target_id, label_map, saver


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    adv = d["adversarial"]
    return [name, d["truth"]["label"], f"{d['clean']['label']} {d['clean']['score']:.2f}",
            f"{adv['label']} {adv['score']:.2f}", "yes" if d["success_8bit"] else "no",
            str(d["norms"]["linf_255"]), f"{d['norms']['l2']:.3f}", f"{d['iterations']}/{d['queries']}"]
