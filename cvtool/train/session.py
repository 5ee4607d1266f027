"""What one ``cvtool train`` invocation does, as library calls: a training run, a resumed run,
an evaluation of a checkpoint, or a sweep. The CLI only parses options and draws progress.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cvtool.train import checkpoints as ck
from cvtool.train import data as D
from cvtool.train.config import SMALL_NETS, TrainConfig, TrainError
from cvtool.train.ddp import Dist, from_env
from cvtool.train.loop import Events, Result, Trainer, write_eval, write_metrics
from cvtool.train.models import Built, build, count_params, geometry, is_checkpoint


@dataclass
class Prepared:
    data: D.Dataset
    built: Built
    device: torch.device
    dist: Dist


def _device(cfg: TrainConfig, dist: Dist) -> torch.device:
    from cvtool.runtime.device import DeviceError, parse_device, torch_device

    try:
        dev = torch_device(parse_device(cfg.device))
    except DeviceError as e:
        raise TrainError(str(e)) from None
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
    if dev.type == "mps":
        dev = torch.device("cpu") if cfg.device == "auto" else dev
    return dev


def load_data(cfg: TrainConfig, events: Events, *, resize: int | None = None, crop: int | None = None,
              for_eval: bool = False) -> tuple[D.Dataset, int, int]:
    """The dataset at the network's input size, split into train/val/test as configured."""
    kind = D.resolve_source(cfg.data)
    say = events.message
    if kind == "builtin":
        ds = D.load_fashion_mnist(say) if cfg.data == "fashion-mnist" else D.load_digits()
        native = int(ds.train.x.shape[-1])
        if crop is None:
            resize, crop = geometry(cfg, kind, native)
        if crop != native:
            ds.train, ds.test = D.resize_set(ds.train, crop), D.resize_set(ds.test, crop)
    else:
        from cvtool.models.preprocess import Preprocess

        if crop is None:
            resize, crop = geometry(cfg, kind, None)
        splits = D.scan_folder(Path(cfg.data)) if kind == "folder" else D.scan_csv(Path(cfg.data))
        n = sum(len(v[0]) for k, v in splits.items() if k in ("train", "val", "test"))
        say(f"decoding {n} pictures from {cfg.data} (network input {crop}x{crop}, shorter side {resize})")
        ds = D.load_files(cfg.data, kind, splits, Preprocess(resize=resize, crop=crop),
                          keep_full=bool(cfg.crop) and not for_eval, workers=cfg.workers, max_pixels=cfg.max_pixels,
                          report=lambda src, why: events.message(f"{src}: {why} (skipped)"))
    if cfg.grey and not ds.grey:
        ds.train, ds.val, ds.test = D.to_grey(ds.train), D.to_grey(ds.val), D.to_grey(ds.test)
        ds.grey = True
    if not for_eval:
        frac = cfg.val_split if cfg.val_split is not None else (0.1 if kind == "builtin" else 0.2)
        if ds.val is None and frac > 0:
            keep, held = D.stratified_split(ds.train.y, frac)
            ds.train, ds.val = ds.train.subset(keep), ds.train.subset(held)
        if cfg.max_train and len(ds.train) > cfg.max_train:
            ds.train = ds.train.subset(D.stratified_subset(ds.train.y, cfg.max_train))
    if cfg.max_eval:
        for split in ("val", "test"):
            s = getattr(ds, split)
            if s is not None and len(s) > cfg.max_eval:
                setattr(ds, split, s.subset(D.stratified_subset(s.y, cfg.max_eval)))
    return ds, resize, crop


def prepare(cfg: TrainConfig, events: Events, dist: Dist) -> Prepared:
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg, dist)
    ck.seed_everything(cfg.seed)
    data, resize, crop = load_data(cfg, events)
    # Small nets normalise with the training pictures' statistics; registry models and
    # checkpoints keep their own.
    mean, std = D.channel_stats(data.train.x, data.grey) if cfg.model in SMALL_NETS else (None, None)
    ck.seed_everything(cfg.seed)  # the network's initialisation does not depend on the data loading
    built = build(cfg, len(data.classes), data.grey, resize, crop, mean, std, events.message)
    if dist.enabled:
        ck.seed_everything(cfg.seed + dist.rank)  # different augmentation draws per process
    return Prepared(data, built, device, dist)


def _resolved(cfg: TrainConfig, p: Prepared, argv: list[str] | None) -> dict:
    from importlib.metadata import version

    total, trainable = count_params(p.built.net)
    return {
        "lr": cfg.resolved_lr(),
        "arch": p.built.arch, "arch_kwargs": p.built.arch_kwargs, "grey_input": p.built.grey_input,
        "preprocess": dataclasses.asdict(p.built.preprocess), "classes": p.data.classes,
        "images": p.data.counts(), "skipped": len(p.data.skipped), "parameters": total,
        "trainable_parameters": trainable, "model_note": p.built.note, "device": str(p.device),
        "processes": p.dist.world, "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": version("torchvision")},
        "command": argv,
    }


def run_name(cfg: TrainConfig, suffix: str = "") -> str:
    if cfg.name:
        return cfg.name
    data = Path(cfg.data).name if cfg.data not in D.BUILTINS else cfg.data
    model = Path(cfg.model).stem if is_checkpoint(cfg.model) else cfg.model
    return ck.auto_name(f"{data}-{model}{suffix}", Path(cfg.runs_dir))


def _describe_data(p: Prepared, events: Events) -> None:
    c = p.data.counts()
    events.message(f"data {p.data.name}: {len(p.data.classes)} classes, {c['train']} train / {c['val']} val / "
                   f"{c['test']} test pictures at {p.built.preprocess.crop}x{p.built.preprocess.crop}"
                   + (" (grey)" if p.data.grey else "")
                   + (f"; {len(p.data.skipped)} skipped" if p.data.skipped else ""))


def train(cfg: TrainConfig, events: Events, *, overwrite: bool = False, argv: list[str] | None = None) -> Result:
    dist = from_env(cfg.device)
    try:
        if dist.enabled and cfg.model == "knn":
            raise TrainError("knn has no gradient training to distribute: run it without torchrun")
        ck.check_runs_dir_writable(cfg.runs_dir)  # before any work
        p = prepare(cfg, events, dist)
        name = run_name(cfg)
        name = dist.broadcast(name)
        run_dir = Path(cfg.runs_dir) / name
        ck.check_run_dir(run_dir, overwrite)  # every rank decides alike, before any of them writes
        dist.barrier()
        if dist.main:
            ck.prepare_run_dir(run_dir, overwrite)
        dist.barrier()
        cfg.resolved = _resolved(cfg, p, argv)
        cfg.name = name
        if dist.main:
            ck.atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
        _describe_data(p, events)
        what = ("no trainable parameters (it keeps the training pictures)" if cfg.model == "knn" else
                f"{cfg.resolved['trainable_parameters']:,} trainable parameters")
        events.message(f"model {p.built.note or p.built.arch}: {what}; run directory {run_dir}")
        if cfg.model == "knn":
            return _train_knn(cfg, p, events, run_dir, name)
        if cfg.patience and p.data.val is None:
            events.message("--patience needs a validation set (--val-split above 0, or a val/ folder); "
                           "training runs all epochs")
        t = Trainer(cfg, p.data, p.built, p.device, dist, events, run_dir, name)
        if t.augment.active:
            events.message(f"augmentation: {t.augment.describe()}")
        res = t.fit()
        res.skipped = p.data.skipped
        return res
    finally:
        dist.close()


def resume(run: Path, events: Events, *, epochs: int | None = None, device: str | None = None,
           threads: int | None = None) -> Result:
    """Continue ``run`` from its ``last.pt`` exactly where it stopped."""
    run = Path(run)
    if run.is_file():
        run = run.parent
    last = run / "last.pt"
    if not (run / "config.json").is_file() or not last.is_file():
        raise TrainError(f"--resume {run}: not a run directory with config.json and last.pt")
    ckpt = ck.load_checkpoint(last)
    if "train_state" not in ckpt:
        raise TrainError(f"--resume {run}: last.pt holds no training state (a kNN run has nothing to resume)")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    cfg.runs_dir, cfg.name = str(run.parent), run.name
    if device:
        cfg.device = device
    if threads:
        cfg.threads = threads
    st = ckpt["train_state"]
    if epochs is not None:
        if epochs < len(st["history"]):
            raise TrainError(f"--epochs {epochs}: the run has already trained {len(st['history'])} epochs")
        if epochs != cfg.epochs:
            events.message(f"changing the run's length from {cfg.epochs} to {epochs} epochs (the learning-rate "
                           "schedule follows the new length from here on)")
        cfg.epochs = epochs
    if st.get("stopped_early"):
        raise TrainError(f"--resume {run}: the run stopped early after {len(st['history'])} epochs "
                         f"(--patience {cfg.patience}); nothing to resume")
    if len(st["history"]) >= cfg.epochs and st["batch"] == 0:
        raise TrainError(f"--resume {run}: the run has finished all {cfg.epochs} epochs "
                         "(pass a larger --epochs to train further)")
    dist = from_env(cfg.device)
    try:
        saved_world = int(st.get("world", 1))
        if saved_world != dist.world:
            events.message(f"note: the run was trained by {saved_world} process(es), resumed by {dist.world}")
        p = prepare(cfg, events, dist)
        built = p.built
        # Same architecture and preprocessing as the checkpoint says (data statistics included).
        from cvtool.models.preprocess import Preprocess

        built.preprocess = Preprocess.from_dict(ckpt["cvtool"]["preprocess"])
        built.net.load_state_dict(ckpt["state_dict"])
        _describe_data(p, events)
        t = Trainer(cfg, p.data, built, p.device, dist, events, run, run.name)
        best = run / "best.pt"
        best_state = ck.load_checkpoint(best)["state_dict"] if best.is_file() else None
        t.load_train_state(st, best_state)
        events.message(f"resuming {run} at epoch {t.epoch + 1}"
                       + (f", batch {t.batch_done + 1}" if t.batch_done else ""))
        if dist.main and epochs is not None:
            saved = json.loads((run / "config.json").read_text())
            saved["epochs"] = cfg.epochs
            ck.atomic_write_text(run / "config.json", json.dumps(saved, indent=2, sort_keys=True) + "\n")
        res = t.fit()
        res.skipped = p.data.skipped
        return res
    finally:
        dist.close()


def _train_knn(cfg: TrainConfig, p: Prepared, events: Events, run_dir: Path, name: str) -> Result:
    from cvtool.train import knn
    from cvtool.train.plots import line_plot

    t0 = time.perf_counter()
    pre = p.built.preprocess
    p_norm = 1 if cfg.distance == "l1" else 2
    events.message(f"knn: choosing k among {', '.join(map(str, cfg.k))} by {cfg.folds}-fold cross-validation "
                   f"({cfg.distance.upper()} distance, up to {cfg.cv_samples} training pictures)")
    net, table, k = knn.fit(p.data.train, len(p.data.classes), p.data.channels, pre.crop, pre.mean, pre.std,
                            list(cfg.k), p_norm, cfg.folds, cfg.cv_samples, cfg.seed)
    for r in table:
        events.message(f"  k={r['k']:<3d} cross-validated accuracy {r['cv_acc']:.4f} ± {r['cv_std']:.4f}")
    p.built.net = net
    p.built.arch_kwargs = {"in_channels": p.data.channels, "size": pre.crop, "n_train": len(p.data.train),
                           "k": k, "p": p_norm}
    t = Trainer.__new__(Trainer)  # evaluation only: no optimiser
    _eval_init(t, cfg, p, events, run_dir, name)
    val = t.evaluate(p.data.val) if p.data.val is not None else None
    row = {"epoch": 1, "lr": None, "train_loss": None, "train_acc": None,
           "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
           "seconds": round(time.perf_counter() - t0, 3), "images_per_s": None, "k": k}
    t.history = [row]
    t.best = {"epoch": 1, "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
    if val is not None:
        events.message(f"knn: validation accuracy {val['acc']:.2%} with k = {k} "
                       f"({time.perf_counter() - t0:.1f} s)")
    meta = ck.model_meta(p.built, name, p.data.classes, 1, row, cfg.to_dict())
    meta["knn_cv"] = [{k2: v for k2, v in r.items() if k2 != "folds"} for r in table]
    ck.save_checkpoint(run_dir / "best.pt", meta, net.state_dict())
    ck.save_checkpoint(run_dir / "last.pt", meta, net.state_dict())
    write_metrics(run_dir, t.history)
    ck.atomic_write_text(run_dir / "knn_cv.json", json.dumps(table, indent=1) + "\n")
    line_plot([r["k"] for r in table], [{"y": [r["cv_acc"] for r in table], "label": "cross-validation"}],
              run_dir / "curves.png", f"{name}: kNN ({cfg.distance.upper()}), accuracy against k", "k",
              "accuracy")
    res = t._finish(0, 0.0, time.perf_counter() - t0, val_eval=val)  # the weights did not change
    res.skipped = p.data.skipped
    return res


def _eval_init(t: Trainer, cfg: TrainConfig, p: Prepared, events: Events, run_dir: Path | None, name: str,
               model=None) -> None:
    """A Trainer that can only evaluate (kNN, --eval-only)."""
    from cvtool.models.wrap import Normalized
    from cvtool.train.optim import Criterion

    t.cfg, t.data, t.built, t.device, t.dist, t.events = cfg, p.data, p.built, p.device, p.dist, events
    t.run_dir, t.name, t.classes = run_dir, name, p.data.classes
    t.write = p.dist.main and run_dir is not None
    pre = p.built.preprocess
    t.model = (model if model is not None else Normalized(p.built.net, pre.mean, pre.std)).to(p.device)
    t.criterion = Criterion("softmax")
    t.amp = False
    t.history, t.best, t.best_state, t.stopped_early = [], {"epoch": None, "val_acc": None}, None, False


def evaluate_only(cfg: TrainConfig, model: str, split: str | None, events: Events) -> dict:
    """Accuracy and per-class metrics of ``model`` (a checkpoint or registry classifier) on one
    split of the data, preprocessed exactly as the model says (as ``cvtool classify`` would)."""
    from cvtool.models.loader import ModelError, load
    from cvtool.train.metrics import summarize

    if split is not None and split not in ("train", "val", "test"):
        raise TrainError(f"--split {split!r}: expected train, val or test")
    try:
        m = load(model, task="classify")
        net = m.torch_module()
    except ModelError as e:
        raise TrainError(str(e)) from None
    device = _device(cfg, Dist())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pre = m.preprocess
    kind = D.resolve_source(cfg.data)
    if kind == "builtin":
        data = D.load_fashion_mnist(events.message) if cfg.data == "fashion-mnist" else D.load_digits()
        split = split or "test"
        if split == "val":
            raise TrainError(f"{cfg.data} has train and test splits (no val)")
        s = D.resize_set(getattr(data, split), pre.crop)
        label = split
    else:
        splits = D.scan_folder(Path(cfg.data)) if kind == "folder" else D.scan_csv(Path(cfg.data))
        present = [sp for sp in ("test", "val", "train") if sp in splits]
        split = split or present[0]
        if split not in splits:
            raise TrainError(f"{cfg.data} has no {split} split (it has: {', '.join(present)})")
        label = "all" if present == ["train"] else split  # no splits: every picture
        one = {"classes": splits["classes"], "train": splits[split],
               "ignored": [(sp, p) for sp, p in splits["ignored"] if sp == split]}
        events.message(f"decoding {len(one['train'][0])} pictures from {cfg.data}")
        data = D.load_files(cfg.data, kind, one, pre,
                            keep_full=False, workers=cfg.workers, max_pixels=cfg.max_pixels,
                            report=lambda src, why: events.message(f"{src}: {why} (skipped)"), for_eval=True)
        s = data.train
    if cfg.max_eval and len(s) > cfg.max_eval:
        s = s.subset(D.stratified_subset(s.y, cfg.max_eval))
    labels = list(m.labels)
    index = {c: i for i, c in enumerate(labels)}
    if not any(c in index for c in data.classes):
        raise TrainError(f"none of the classes of {cfg.data} ({', '.join(data.classes[:4])}…) is a label of "
                         f"{m.name} ({', '.join(labels[:4])}…)")
    remap = torch.tensor([index.get(c, -1) for c in data.classes])
    y = remap[s.y]
    keep = y >= 0
    if not bool(keep.all()):
        dropped = sorted({data.classes[i] for i in s.y[~keep].tolist()})
        events.message(f"{int((~keep).sum())} pictures of classes the model does not know skipped: {', '.join(dropped)}")
    s = D.ImageSet(s.x[keep], y[keep], None)
    data.classes = labels
    p = Prepared(data, Built(net.net, m.spec.name if m.spec else m.name, {}, False, pre), device, Dist())
    t = Trainer.__new__(Trainer)
    _eval_init(t, cfg, p, events, None, m.name, model=net)
    events.message(f"evaluating {model} on {len(s)} pictures of {cfg.data} ({label})")
    r = t.evaluate(s)
    out = summarize(r["confusion"], labels)
    if len(labels) > 50:  # e.g. ImageNet heads: report only the classes present
        present_ids = set(s.y.tolist())
        out["per_class"] = [c for i, c in enumerate(out["per_class"]) if i in present_ids]
        out.pop("confusion")
    out.update(loss=round(r["loss"], 5), model=m.name, data=cfg.data, split=label, skipped=len(data.skipped))
    return out


def sweep(cfg: TrainConfig, spec: str, trials: int, sweep_epochs: int, events: Events, *,
          overwrite: bool = False, argv: list[str] | None = None) -> dict:
    """Random search: ``trials`` short runs sharing the data; summary table, plot, best config."""
    from cvtool.train import sweep as S
    from cvtool.train.loop import Diverged
    from cvtool.train.plots import sweep_plot

    params = S.parse(spec)
    if trials < 1:
        raise TrainError("--trials must be at least 1")
    if cfg.model == "knn":
        raise TrainError("--sweep tunes gradient training; for knn, --k already cross-validates k")
    dist = from_env(cfg.device)
    if dist.enabled:
        dist.close()
        raise TrainError("--sweep runs in one process (start it without torchrun)")
    cfg.check()
    ck.check_runs_dir_writable(cfg.runs_dir)  # before any work
    if cfg.val_split == 0:
        raise TrainError("--sweep judges trials on a validation set: --val-split must be above 0")
    name = run_name(cfg, "-sweep")
    run_dir = Path(cfg.runs_dir) / name
    ck.check_run_dir(run_dir, overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg, dist)
    data, resize, crop = load_data(cfg, events)
    if data.val is None:
        raise TrainError("--sweep needs a validation set")
    ck.prepare_run_dir(run_dir, overwrite)
    cfg.name = name
    base = dataclasses.replace(cfg, epochs=sweep_epochs, save_checkpoints=False)
    cfg.resolved = {"sweep": spec, "trials": trials, "sweep_epochs": sweep_epochs, "params": params,
                    "images": data.counts(), "command": argv}
    ck.atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
    rng = random.Random(cfg.seed)
    results = []
    events.message(f"sweep: {trials} trials of {sweep_epochs} epoch(s) over {', '.join(params)}; "
                   f"data {data.name}: {len(data.train)} train / {len(data.val)} val")
    for i in range(trials):
        values = S.sample(params, rng)
        tcfg = dataclasses.replace(base, **values, name=f"trial-{i + 1:02d}")
        try:
            tcfg.check()
        except TrainError as e:
            results.append({"trial": i + 1, "params": values, "status": f"invalid: {e}", "val_acc": None})
            continue
        trial_dir = run_dir / "trials" / tcfg.name
        trial_dir.mkdir(parents=True)
        ck.atomic_write_text(trial_dir / "config.json", tcfg.to_json() + "\n")
        events.message(f"trial {i + 1}/{trials}: {S.as_options(values)}")
        mean, std = D.channel_stats(data.train.x, data.grey) if cfg.model in SMALL_NETS else (None, None)
        ck.seed_everything(cfg.seed)
        built = build(tcfg, len(data.classes), data.grey, resize, crop, mean, std)
        t = Trainer(tcfg, data, built, device, Dist(), _TrialEvents(events), trial_dir, tcfg.name)
        t0 = time.perf_counter()
        rec = {"trial": i + 1, "params": values}
        try:
            res = t.fit()
            write_metrics(trial_dir, res.history)
            best = max(res.history, key=lambda r: r["val_acc"] or 0)
            rec.update(status="ok", val_acc=best["val_acc"], val_loss=best["val_loss"], best_epoch=best["epoch"],
                       train_loss=res.history[-1]["train_loss"], train_acc=res.history[-1]["train_acc"])
        except Diverged as e:
            rec.update(status="diverged", val_acc=None, error=str(e))
            events.message(f"trial {i + 1}: {e}")
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        if rec.get("val_acc") is not None:
            events.message(f"trial {i + 1}/{trials}: val accuracy {rec['val_acc']:.4f} (epoch {rec['best_epoch']}), "
                           f"{rec['seconds']:.1f} s")
        results.append(rec)
        _write_sweep(run_dir, results, params)
    ok = [r for r in results if r.get("val_acc") is not None]
    best = max(ok, key=lambda r: r["val_acc"]) if ok else None
    sweep_plot(results, params, run_dir / "sweep.png", f"{name}: validation accuracy after {sweep_epochs} epoch(s)")
    summary = {"run": str(run_dir), "trials": results, "best": best, "params": params,
               "files": {"sweep.csv": str(run_dir / "sweep.csv"), "sweep.png": str(run_dir / "sweep.png"),
                         "best.json": str(run_dir / "best.json")}}
    if best is not None:
        full = dataclasses.replace(cfg, **best["params"], resolved={}, name=None)
        best_cfg = {"params": best["params"], "val_acc": best["val_acc"], "trial": best["trial"],
                    "options": S.as_options(best["params"]), "config": full.to_dict()}
        ck.atomic_write_text(run_dir / "best.json", json.dumps(best_cfg, indent=2) + "\n")
        summary["best_options"] = best_cfg["options"]
    return summary


class _TrialEvents(Events):
    """A trial's progress: the batch bar, no per-epoch lines (the sweep prints one per trial)."""

    def __init__(self, outer: Events):
        self.outer = outer

    def message(self, text: str) -> None:
        self.outer.message(text)

    def epoch_start(self, *a) -> None:
        self.outer.epoch_start(*a)

    def batch(self, *a) -> None:
        self.outer.batch(*a)

    def epoch_end(self, row: dict) -> None:
        close = getattr(self.outer, "end_bar", None)
        if close:
            close()


def _write_sweep(run_dir: Path, results: list[dict], params: dict) -> None:
    import csv
    import io

    cols = ["trial", *params, "val_acc", "val_loss", "best_epoch", "train_loss", "seconds", "status"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in results:
        w.writerow([r.get("trial"), *[r["params"].get(p) for p in params],
                    *["" if r.get(c) is None else r.get(c) for c in cols[1 + len(params):]]])
    ck.atomic_write_text(run_dir / "sweep.csv", buf.getvalue())
    ck.atomic_write_text(run_dir / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in results))

