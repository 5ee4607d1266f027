"""`cvtool train`: train a classifier (kNN to fine-tuned CNNs), resume it, sweep it, evaluate it."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli.output import write_report_page
from cvtool.cli import options as o

# Options that may accompany --resume (everything else comes from the run's config.json).
_RESUME_OK = {"resume", "epochs", "device", "threads", "quiet", "fmt", "data", "ctx"}


@o.shared(*o.RUNTIME, "workers", "max_pixels", "quiet", "report")
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(
        help="fashion-mnist, digits, a folder (DATA/train/CLASS/*.jpg with optional val/ and test/, or "
             "DATA/CLASS/*.jpg), or a CSV of path,label[,split].", show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="knn, linear, mlp, cnn, a registry classifier "
                                       "(resnet18, efficientnet_lite0, …), or a checkpoint to fine-tune; with "
                                       "--eval-only, the checkpoint to evaluate.")] = "cnn",
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start a registry classifier from its ImageNet weights (new head for your classes).")] = False,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone", help="With --pretrained: train only the new head.")] = False,
    epochs: Annotated[int, typer.Option("--epochs", "-e", min=1, help="Passes over the training set.")] = 10,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Pictures per optimiser step (global, over all DDP processes).")] = 128,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw.")] = "adamw",
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: 0.05 for the SGD family, 0.01 adagrad, 1e-3 rmsprop/adam, 2e-3 adamw).")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", "--wd", min=0.0, help="L2 penalty (adamw: decoupled decay); not applied to biases and norms.")] = 5e-4,
    momentum: Annotated[float, typer.Option("--momentum", min=0.0, max=1.0, help="For momentum and nesterov.")] = 0.9,
    schedule: Annotated[str, typer.Option("--schedule", help="none, step, cosine, onecycle or plateau.")] = "cosine",
    warmup: Annotated[float, typer.Option("--warmup", min=0.0, help="Epochs of linear learning-rate warm-up.")] = 0.0,
    step_size: Annotated[int, typer.Option("--step-size", min=0, help="step schedule: epochs between decays (0: a third of the run).")] = 0,
    gamma: Annotated[float, typer.Option("--gamma", min=0.0, max=1.0, help="step schedule: decay factor.")] = 0.1,
    plateau_patience: Annotated[int, typer.Option("--plateau-patience", min=0, help="plateau schedule: epochs without a lower validation loss before the rate is divided by 10.")] = 2,
    loss: Annotated[str, typer.Option("--loss", help="softmax (cross-entropy) or svm (multiclass hinge).")] = "softmax",
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0.0, max=0.99, help="Softmax loss: share of the target spread over all classes.")] = 0.0,
    amp: Annotated[str, typer.Option("--amp", help="Mixed precision: auto (on with CUDA), on or off.")] = "auto",
    widths: Annotated[str, typer.Option("--widths", help="cnn: channels per conv block, comma-separated.")] = "32,64",
    depth: Annotated[int, typer.Option("--depth", min=1, help="cnn: conv layers per block.")] = 1,
    hidden: Annotated[Optional[str], typer.Option("--hidden", help="mlp: hidden layer sizes, comma-separated (default 256); cnn: the FC size (128).")] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", min=0.0, max=0.95, help="mlp/cnn dropout (default 0.2 / 0.3).")] = None,
    k: Annotated[str, typer.Option("--k", help="knn: candidate k values, chosen by cross-validation.")] = "1,3,5,7,9,11,15,21",
    distance: Annotated[str, typer.Option("--distance", help="knn: l2 or l1.")] = "l2",
    folds: Annotated[int, typer.Option("--folds", min=2, help="knn: cross-validation folds.")] = 5,
    cv_samples: Annotated[int, typer.Option("--cv-samples", min=10, help="knn: at most this many training pictures in the cross-validation.")] = 10000,
    imgsz: Annotated[Optional[int], typer.Option("--imgsz", min=4, help="Network input size (default: 28/8 for the built-in sets with small nets, 64 for folders, the model's own for registry models).")] = None,
    grey: Annotated[bool, typer.Option("--grey", help="Train on grey pictures (RGB input is converted to luma, in training and in every later use).")] = False,
    val_split: Annotated[Optional[float], typer.Option("--val-split", min=0.0, max=0.9, help="Share of the training pictures held out for validation when there is no val/ (default 0.1 built-in sets, 0.2 otherwise; 0: none).")] = None,
    max_train: Annotated[Optional[int], typer.Option("--max-train", min=1, help="Use a stratified subset of at most N training pictures.")] = None,
    max_eval: Annotated[Optional[int], typer.Option("--max-eval", min=1, help="Use at most N validation and N test pictures.")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Augment: random horizontal flips.")] = False,
    crop: Annotated[float, typer.Option("--crop", min=0.0, max=1.0, help="Augment: random resized crops keeping at least this share of the picture (0: off).")] = 0.0,
    jitter: Annotated[float, typer.Option("--jitter", min=0.0, max=1.0, help="Augment: colour jitter strength (brightness, contrast, saturation).")] = 0.0,
    erase: Annotated[float, typer.Option("--erase", min=0.0, max=1.0, help="Augment: probability of random erasing (cutout).")] = 0.0,
    mixup: Annotated[float, typer.Option("--mixup", min=0.0, help="Augment: mixup alpha (0: off).")] = 0.0,
    seed: o.Seed("Seed for initialisation, order and augmentation.", min=0) = 0,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Stop after N epochs without a better validation accuracy (0: never).")] = 0,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name: the run goes to RUNS_DIR/NAME (default DATA-MODEL, numbered when taken).")] = None,
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Folder of run directories.")] = "runs",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same --name.")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue runs/NAME from its last.pt exactly (options come from its config.json).")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Random search, e.g. 'lr=1e-4:1e-1:log,weight_decay=1e-6:1e-3:log,optimizer=adam|sgd'.")] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, help="--sweep: number of trials.")] = 10,
    sweep_epochs: Annotated[int, typer.Option("--sweep-epochs", min=1, help="--sweep: epochs per trial.")] = 2,
    eval_only: Annotated[bool, typer.Option("--eval-only", help="Evaluate --model on DATA (accuracy, per-class metrics) instead of training.")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="--eval-only: train, val or test (default: test when there is one).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Summary on stdout: auto (table on a terminal, JSON otherwise), json or table.")] = "auto",
    *,
    opts: o.Options,
) -> None:
    """Train an image classifier and write a run directory (config, metrics, best.pt/last.pt,
    curves.png, confusion.png); the checkpoints work as --model in classify, export, visualize
    and attack.

    Examples:
      cvtool train fashion-mnist --model cnn --epochs 12
      cvtool train digits --model knn
      cvtool train photos/ --model efficientnet_lite0 --pretrained --freeze-backbone --flip --crop 0.5
      cvtool train --resume runs/fashion-mnist-cnn
      cvtool train digits --model linear --sweep 'lr=1e-3:1:log,weight_decay=1e-6:1e-2:log' --trials 8
      cvtool train fashion-mnist --eval-only --model runs/fashion-mnist-cnn/best.pt
      torchrun --standalone --nproc_per_node 2 -m cvtool train digits --model cnn
    """
    device, threads, workers, max_pixels, quiet = opts.device, opts.threads, opts.workers, opts.max_pixels, opts.quiet
    if fmt not in ("auto", "json", "table"):
        raise c.fail(f"--format {fmt!r}: expected auto, json or table")
    report_page = opts.report
    if report_page is not None and os.path.lexists(report_page) and not overwrite:
        raise c.fail(f"--report {report_page}: exists (give --overwrite to replace it)")
    # OpenMP threads that sleep instead of spinning while they wait: on a busy machine spinning
    # threads fight other processes for the cores, and training with 2 threads ran 10x slower
    # than with 1 (docs/train.md, "Speed"). Must be set before torch starts its thread pool.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main_rank = os.environ.get("RANK", "0") in ("0", "")
    events = _Events(quiet or not main_rank)

    from cvtool.train.config import TrainConfig, TrainError
    from cvtool.train.loop import Interrupted

    def ints(text: str, what: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
        except ValueError:
            raise c.fail(f"{what} {text!r}: expected comma-separated integers") from None
        if not vals or min(vals) < 1:
            raise c.fail(f"{what} {text!r}: expected positive integers")
        return vals

    try:
        if resume is not None:
            given = [p for p in ctx.params if p not in _RESUME_OK and _given(ctx, p)]
            if given:
                raise c.fail("--resume continues a run with its own config.json; drop "
                             + ", ".join("--" + g.replace("_", "-") for g in given)
                             + " (only --epochs, --device, --threads, --quiet and --format may change)")
            from cvtool.train.session import resume as do_resume

            res = do_resume(resume, events, epochs=epochs if _given(ctx, "epochs") else None,
                            device=device if _given(ctx, "device") else None, threads=threads)
            events.close()
            _emit_result(res, fmt, main_rank)
            _write_page(report_page, res, main_rank, quiet, overwrite)
            raise typer.Exit(c.EXIT_FAILED if res.skipped else c.EXIT_OK)
        if data is None:
            raise c.fail("DATA is missing: fashion-mnist, digits, a folder or a CSV file (see --help)")
        cfg = TrainConfig(
            data=data, model=model, pretrained=pretrained, freeze_backbone=freeze_backbone, epochs=epochs,
            batch=batch, optimizer=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum,
            schedule=schedule, warmup_epochs=warmup, step_size=step_size, gamma=gamma,
            plateau_patience=plateau_patience, loss=loss,
            label_smoothing=label_smoothing, amp=amp, widths=ints(widths, "--widths"), depth=depth,
            hidden=ints(hidden, "--hidden") if hidden else (), dropout=dropout, k=ints(k, "--k"),
            distance=distance, folds=folds, cv_samples=cv_samples, imgsz=imgsz, grey=grey, val_split=val_split,
            max_train=max_train, max_eval=max_eval, max_pixels=max_pixels, workers=workers, flip=flip, crop=crop,
            jitter=jitter, erase=erase, mixup=mixup, seed=seed, patience=patience, device=device,
            threads=threads, name=name, runs_dir=runs_dir)
        if eval_only:
            if model == "cnn" and not _given(ctx, "model"):
                raise c.fail("--eval-only needs --model: the checkpoint (or registry classifier) to evaluate")
            from cvtool.train.session import evaluate_only

            report = evaluate_only(cfg, model, split, events)
            events.close()
            _emit_eval(report, fmt)
            raise typer.Exit(c.EXIT_FAILED if report.get("skipped") else c.EXIT_OK)
        if sweep is not None:
            from cvtool.train.session import sweep as do_sweep

            summary = do_sweep(cfg, sweep, trials, sweep_epochs, events, overwrite=overwrite, argv=sys.argv)
            events.close()
            _emit_sweep(summary, fmt)
            raise typer.Exit(c.EXIT_OK if summary.get("best") else c.EXIT_FAILED)
        from cvtool.train.session import train as do_train

        res = do_train(cfg, events, overwrite=overwrite, argv=sys.argv)
        events.close()
        _emit_result(res, fmt, main_rank)
        _write_page(report_page, res, main_rank, quiet, overwrite)
        raise typer.Exit(c.EXIT_FAILED if res.skipped else c.EXIT_OK)
    except Interrupted as e:
        events.close()
        if main_rank:
            where = resume or "the run directory"
            print(f"cvtool: interrupted: {e}; last.pt holds this point: continue with "
                  f"`cvtool train --resume {_run_of(e, where)}`", file=sys.stderr)
        raise typer.Exit(130)
    except KeyboardInterrupt:
        events.close()
        if main_rank:
            print("cvtool: interrupted; the run directory keeps what was complete (last.pt, if written, "
                  "is the last finished epoch)", file=sys.stderr)
        raise typer.Exit(130)
    except TrainError as e:
        events.close()
        from cvtool.train.loop import Diverged

        if isinstance(e, Diverged):
            if main_rank:
                print(f"cvtool: error: training failed: {e}", file=sys.stderr)
            raise typer.Exit(c.EXIT_FAILED)
        if main_rank:
            raise c.fail(str(e))
        raise typer.Exit(c.EXIT_USAGE)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option ``name`` (not just its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and getattr(src, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")


def _run_of(e, fallback: str) -> str:
    return getattr(e, "run_dir", None) or fallback


class _Events:
    """Progress on stderr: a rich bar per epoch on a terminal, one line per epoch always."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.progress = None
        self.task = None
        self._last = 0.0

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        self._print(f"cvtool: {text}")

    def epoch_start(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        if not self.tty:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=batches, completed=done, stats="")

    def batch(self, done: int, loss: float, acc: float) -> None:
        if self.progress is None or self.task is None:
            return
        now = time.perf_counter()
        if now - self._last > 0.1:
            self._last = now
            self.progress.update(self.task, completed=done, stats=f"loss {loss:.4f} acc {acc:.2%}")

    def end_bar(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def epoch_end(self, row: dict) -> None:
        self.end_bar()
        parts = [f"epoch {row['epoch']}"]
        if row.get("train_loss") is not None:
            parts.append(f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}")
        if row.get("val_acc") is not None:
            parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}")
        if row.get("lr") is not None:
            parts.append(f"lr {row['lr']:.2e}")
        if row.get("seconds") is not None:
            rate = f", {row['images_per_s']:.0f} img/s" if row.get("images_per_s") else ""
            parts.append(f"{row['seconds']:.1f} s{rate}")
        self._print("cvtool: " + "  ".join(parts) + ("  *best*" if row.get("best") and row.get("val_acc") is not None else ""))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _table_wanted(fmt: str) -> bool:
    return fmt == "table" or (fmt == "auto" and sys.stdout.isatty())


def _write_page(path, res, main_rank: bool, quiet: bool, overwrite: bool) -> None:
    """--report FILE: the run's page (curves, confusion matrix, per-class metrics)."""
    if path is not None and main_rank and not write_report_page([], path, overwrite=overwrite, quiet=quiet,
                                                                  runs=[str(res.run_dir)]):
        raise typer.Exit(c.EXIT_FAILED)


def _emit_result(res, fmt: str, main_rank: bool) -> None:
    if not main_rank:
        return
    last = res.history[-1] if res.history else {}
    rec = {
        "run": str(res.run_dir), "epochs": res.epochs_run, "best_epoch": res.best_epoch,
        "val_acc": res.val["accuracy"] if res.val else None,
        "test_acc": res.test["accuracy"] if res.test else None,
        "train_acc": last.get("train_acc"), "images_per_s": res.images_per_s or None, "seconds": res.seconds,
        "stopped_early": res.stopped_early, "skipped": len(res.skipped), "files": res.files,
    }
    if _table_wanted(fmt):
        from rich.console import Console
        from rich.table import Table

        t = Table(header_style="bold", show_header=False)
        t.add_column("", style="bold")
        t.add_column("")
        for key, val in rec.items():
            if key == "files":
                val = "\n".join(val.values())
            elif isinstance(val, float):
                val = f"{val:.4f}" if key.endswith("acc") else f"{val:g}"
            t.add_row(key, "" if val is None else str(val))
        Console().print(t)
    else:
        print(json.dumps(rec))


def _emit_eval(report: dict, fmt: str) -> None:
    if _table_wanted(fmt):
        from rich.console import Console
        from rich.table import Table

        con = Console()
        con.print(f"{report['model']} on {report['data']} ({report['split']}, {report['images']} pictures): "
                  f"accuracy {report['accuracy']:.2%}, balanced {report['balanced_accuracy']:.2%}, "
                  f"macro F1 {report['macro_f1']:.3f}")
        t = Table(header_style="bold")
        for col in ("class", "precision", "recall", "f1", "support"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for r in report["per_class"]:
            t.add_row(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
        con.print(t)
    else:
        print(json.dumps(report))


def _emit_sweep(summary: dict, fmt: str) -> None:
    params = list(summary["params"])
    best = summary.get("best")
    if _table_wanted(fmt):
        from rich.console import Console
        from rich.table import Table

        t = Table(header_style="bold")
        for col in ("trial", *params, "val acc", "status"):
            t.add_column(col, justify="right")
        for r in sorted(summary["trials"], key=lambda r: -(r.get("val_acc") or -1)):
            t.add_row(str(r["trial"]), *[str(r["params"].get(p)) for p in params],
                      "" if r.get("val_acc") is None else f"{r['val_acc']:.4f}", r.get("status", ""))
        con = Console()
        con.print(t)
        if best:
            con.print(f"best: trial {best['trial']}, val accuracy {best['val_acc']:.4f}: {summary['best_options']}")
    else:
        for r in summary["trials"]:
            print(json.dumps(r))
    if best:
        print(f"cvtool: best trial {best['trial']} (val accuracy {best['val_acc']:.4f}): {summary['best_options']}; "
              f"saved in {summary['files']['best.json']}", file=sys.stderr)
