"""`cvtool train`: short real trainings, exact resume, checkpoints that work in classify/export,
DDP with two processes, sweeps, evaluation, and honest errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, jsonl, run_cvtool

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
RUN_FILES = {"config.json", "metrics.csv", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "confusion.png",
             "eval.json"}


def _result(res) -> dict:
    recs = jsonl(res.stdout)
    assert len(recs) == 1, res.stdout
    return recs[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def digits_cnn(runs):
    """A small CNN trained on the 8×8 digits, shared by the round-trip tests."""
    from typer.testing import CliRunner

    from cvtool.cli.app import app

    res = CliRunner().invoke(app, ["train", "digits", "--model", "cnn", "--epochs", "4", "--runs-dir", str(runs),
                                   "--name", "digits-cnn", "--threads", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    return runs / "digits-cnn", _result(res)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, samples) -> Path:
    """train/ and val/ folders of three classes cut from three sample photos (random square crops
    at 96×96), plus one broken picture and one stray text file in the training set."""
    import cv2

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 5)):
        for cls in ("cat", "coffee", "rocket"):
            img = cv2.imread(str(samples / f"{cls}.jpg"))
            h, w = img.shape[:2]
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                s = int(min(h, w) * rng.uniform(0.5, 0.9))
                y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
                cv2.imwrite(str(d / f"{i}.jpg"), cv2.resize(img[y:y + s, x:x + s], (96, 96), interpolation=cv2.INTER_AREA))
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "coffee" / "notes.txt").write_text("not a picture")
    return root


def _load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- the ladder on digits


def test_digits_cnn_run_directory_and_accuracy(digits_cnn):
    run, rec = digits_cnn
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert rec["test_acc"] > 0.85 and rec["val_acc"] > 0.85 and rec["epochs"] == 4  # chance is 0.10
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "cnn" and cfg["resolved"]["images"] == {"train": 1295, "val": 143, "test": 359}
    assert cfg["resolved"]["preprocess"]["crop"] == 8 and cfg["resolved"]["arch_kwargs"]["in_channels"] == 1
    best, last = _load(run / "best.pt"), _load(run / "last.pt")  # weights_only=True works
    meta = best["cvtool"]
    assert meta["arch"] == "cnn" and meta["labels"] == [str(i) for i in range(10)] and meta["task"] == "classify"
    assert "train_state" not in best and {"optimizer", "schedule", "rng", "history"} <= set(last["train_state"])
    ev = json.loads((run / "eval.json").read_text())
    assert ev["test"]["accuracy"] == rec["test_acc"] and len(ev["test"]["per_class"]) == 10
    import cv2

    for png in ("curves.png", "confusion.png"):
        img = cv2.imread(str(run / png))
        assert img is not None and img.shape[0] > 300 and img.std() > 10


@pytest.mark.parametrize("args, floor", [
    (["--model", "knn"], 0.95),
    (["--model", "linear", "--epochs", "6", "--lr", "0.05"], 0.85),
    (["--model", "linear", "--loss", "svm", "--optimizer", "sgd", "--lr", "0.5", "--epochs", "6"], 0.85),
    (["--model", "mlp", "--hidden", "128", "--epochs", "6", "--optimizer", "nesterov", "--schedule", "step",
      "--warmup", "1"], 0.85),
])
def test_digits_ladder(cli, runs, args, floor):
    res = cli("train", "digits", *args, "--runs-dir", runs, "--threads", "1")
    assert res.exit_code == 0, res.stderr
    rec = _result(res)
    assert rec["test_acc"] >= floor, (args, rec)
    meta = _load(Path(rec["run"]) / "best.pt")["cvtool"]
    assert meta["arch"] == args[1]
    if args[1] == "knn":
        assert meta["arch_kwargs"]["k"] in (1, 3, 5, 7, 9, 11, 15, 21) and meta["arch_kwargs"]["n_train"] == 1295
        assert "cross-validated accuracy" in res.stderr


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist "
                                                  "(/usr/share/datasets/fashion-mnist/)")
def test_fashion_mnist_subset(cli, runs):
    res = cli("train", "fashion-mnist", "--max-train", "3000", "--max-eval", "1000", "--epochs", "3",
              "--widths", "16,32", "--runs-dir", runs, "--threads", "1", "--flip")
    assert res.exit_code == 0, res.stderr
    rec = _result(res)
    assert rec["test_acc"] > 0.75, rec  # chance is 0.10; the full benchmark reaches over 0.91
    cfg = json.loads((Path(rec["run"]) / "config.json").read_text())
    assert cfg["resolved"]["images"] == {"train": 3000, "val": 1000, "test": 1000}
    assert cfg["resolved"]["classes"][0] == "T-shirt/top"


def test_fashion_mnist_missing_is_a_clear_error(monkeypatch, tmp_path):
    from cvtool.train import data as D
    from cvtool.train.config import DataError

    monkeypatch.setattr(D, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.delenv("CVTOOL_FASHION_MNIST", raising=False)
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        D.load_fashion_mnist(lambda m: None)


# --------------------------------------------------------------------------- image folders


def test_image_folder_with_augmentations_reports_bad_files(cli, runs, tiny_folder):
    res = cli("train", tiny_folder, "--model", "cnn", "--imgsz", "32", "--epochs", "8", "--flip", "--crop", "0.5",
              "--jitter", "0.3", "--erase", "0.25", "--mixup", "0.2", "--runs-dir", runs, "--threads", "1")
    assert res.exit_code == 1, res.stderr  # trained, but two inputs failed
    rec = _result(res)
    assert rec["skipped"] == 2 and rec["val_acc"] >= 0.8, rec  # chance is 1/3
    err = res.stderr
    assert "broken.jpg: not a recognised image format (skipped)" in err
    assert "notes.txt: not an image file" in err and "Traceback" not in err
    assert "RandomHorizontalFlip" in err and "mixup" in err
    meta = _load(Path(rec["run"]) / "best.pt")["cvtool"]
    assert meta["labels"] == ["cat", "coffee", "rocket"]
    assert meta["preprocess"]["crop"] == 32 and meta["preprocess"]["resize"] == 37


def test_csv_data_with_split_column(cli, runs, tiny_folder, tmp_path):
    rows = ["path,label,split"]
    for split in ("train", "val"):
        for p in sorted((tiny_folder / split).glob("*/*.jpg")):
            rows.append(f"{p},{p.parent.name},{split}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    res = cli("train", tmp_path / "data.csv", "--model", "linear", "--imgsz", "16", "--epochs", "10",
              "--runs-dir", runs, "--threads", "1")
    assert res.exit_code == 1 and "broken.jpg" in res.stderr  # the broken picture is listed in the CSV too
    rec = _result(res)
    assert rec["val_acc"] >= 0.8 and rec["skipped"] == 1


def test_transfer_learning_from_the_bundled_efficientnet(cli, runs, tiny_folder):
    res = cli("train", tiny_folder, "--model", "efficientnet_lite0", "--pretrained", "--freeze-backbone",
              "--imgsz", "48", "--epochs", "2", "--lr", "0.01", "--runs-dir", runs, "--threads", "2")
    assert res.exit_code == 1, res.stderr  # the broken picture
    rec = _result(res)
    assert rec["val_acc"] >= 0.9, rec
    cfg = json.loads((Path(rec["run"]) / "config.json").read_text())["resolved"]
    assert cfg["trainable_parameters"] == 1280 * 3 + 3  # only the new head
    assert "new head _fc.bias, _fc.weight for 3 classes; backbone frozen" in cfg["model_note"]
    assert cfg["preprocess"]["mean"] == [127 / 255] * 3  # the pretrained weights' own normalisation
    assert cfg["preprocess"]["antialias"] is False  # and their own resize (TF bilinear)
    res = cli("classify", ROOT / "sample_images" / "coffee.jpg", "--model", Path(rec["run"]) / "best.pt",
              "-k", "1", "--backend", "torch")
    assert res.exit_code == 0, res.stderr
    assert jsonl(res.stdout)[0]["label"] == "coffee"


# --------------------------------------------------------------------------- checkpoints elsewhere


def test_checkpoint_works_in_classify_and_export(digits_cnn, cli, samples, tmp_path):
    run, _ = digits_cnn
    best = run / "best.pt"
    out = {}
    for backend in ("torch", "onnx"):
        res = cli("classify", samples / "cat.jpg", samples / "coffee.jpg", "--model", best, "--backend", backend,
                  "-k", "10")
        assert res.exit_code == 0, res.stderr
        out[backend] = jsonl(res.stdout)
        assert out[backend][0]["model"] == "digits-cnn" and len(out[backend][0]["topk"]) == 10
    for a, b in zip(out["torch"], out["onnx"]):
        pa = {t["label"]: t["score"] for t in a["topk"]}
        pb = {t["label"]: t["score"] for t in b["topk"]}
        assert a["label"] == b["label"] and max(abs(pa[k] - pb[k]) for k in pa) < 1e-4
    onnx_file = tmp_path / "digits.onnx"
    res = cli("export", best, "-o", onnx_file)
    assert res.exit_code == 0, res.stderr
    res = cli("classify", samples / "cat.jpg", "--model", onnx_file, "-k", "10")
    assert res.exit_code == 0 and jsonl(res.stdout)[0]["label"] == out["torch"][0]["label"]


def test_checkpoint_module_sees_grey_and_matches_training_input(digits_cnn, samples):
    """The wrapped module (what visualize/attack use) turns a colour photo into the grey 8×8 picture
    the digits net was trained on: the photo and its luma copy give the same logits."""
    import torch

    from cvtool.io.decode import decode_image
    from cvtool.models.loader import load

    run, _ = digits_cnn
    m = load(str(run / "best.pt"), task="classify")
    net = m.torch_module()
    x = m.preprocess(decode_image(str(samples / "coffee.jpg")).rgb)  # (8, 8, 3) uint8
    grey = np.round(x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    with torch.no_grad():
        a = net(torch.from_numpy(x[None]))
        b = net(torch.from_numpy(np.repeat(grey[..., None], 3, axis=2)[None]))
        c = net(torch.from_numpy(x[None]).permute(0, 3, 1, 2).float() / 255)  # float (B, 3, H, W) in [0, 1]
    assert a.shape == (1, 10) and torch.allclose(a, c, atol=1e-5)
    assert torch.allclose(a, b, atol=0.05)  # equal up to rounding the luma to uint8
    # the gradient path visualize and attack use: float pixels in, a gradient on every pixel out
    from cvtool.models.differentiable import load_classifier

    clf = load_classifier(str(run / "best.pt"), device="cpu")
    px = clf.prepare(decode_image(str(samples / "coffee.jpg")).rgb).requires_grad_(True)
    clf(px)[0, 3].backward()
    assert px.grad.shape == (1, 3, 8, 8) and float(px.grad.abs().sum()) > 0


def test_eval_only_matches_the_runs_own_evaluation(digits_cnn, cli):
    run, rec = digits_cnn
    res = cli("train", "digits", "--eval-only", "--model", run / "best.pt")
    assert res.exit_code == 0, res.stderr
    report = _result(res)
    assert report["split"] == "test" and report["images"] == 359
    assert report["accuracy"] == rec["test_acc"]
    assert [c["class"] for c in report["per_class"]] == [str(i) for i in range(10)]
    assert {"precision", "recall", "f1", "support"} <= set(report["per_class"][0])
    res = cli("train", "digits", "--eval-only", "--model", run / "best.pt", "--format", "table")
    assert res.exit_code == 0 and "precision" in res.stdout and "accuracy" in res.stdout


# --------------------------------------------------------------------------- resume, interrupt


def test_resume_after_ctrl_c_equals_the_uninterrupted_run(tmp_path):
    """Ctrl-C (a real SIGINT) in the middle of epoch 2, then --resume: the same weights, optimiser
    state and metrics as a run that was never stopped (dropout, flips and erasing draw random
    numbers, so the generators' states must come back too)."""
    import torch
    from typer.testing import CliRunner

    from cvtool.cli.app import app
    from cvtool.train import session
    from cvtool.train.config import TrainConfig
    from cvtool.train.loop import Events, Interrupted

    def cfg(name):
        return TrainConfig(data="digits", model="cnn", epochs=3, batch=64, flip=True, erase=0.3, seed=7,
                           runs_dir=str(tmp_path), name=name, threads=1, schedule="onecycle", patience=5)

    session.train(cfg("whole"), Events())

    class CtrlC(Events):
        def __init__(self):
            self.epoch = 0

        def epoch_start(self, epoch, epochs, batches, done):
            self.epoch = epoch

        def batch(self, done, loss, acc):
            if self.epoch == 2 and done == 7:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="epoch 2 after batch 7"):
        session.train(cfg("cut"), CtrlC())
    st = _load(tmp_path / "cut" / "last.pt")["train_state"]
    assert st["epoch"] == 1 and st["batch"] == 7 and len(st["history"]) == 1
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut"), "--threads", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert "resuming" in res.stderr and "epoch 2, batch 8" in res.stderr
    a, b = _load(tmp_path / "whole" / "last.pt"), _load(tmp_path / "cut" / "last.pt")
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    sa, sb = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    drop = ("seconds", "images_per_s")
    ha = [{k: v for k, v in r.items() if k not in drop} for r in a["train_state"]["history"]]
    hb = [{k: v for k, v in r.items() if k not in drop} for r in b["train_state"]["history"]]
    assert ha == hb and len(ha) == 3
    # finished: nothing left to resume
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut")], catch_exceptions=False)
    assert res.exit_code == 2 and "finished all 3 epochs" in res.stderr
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut"), "--lr", "0.1"], catch_exceptions=False)
    assert res.exit_code == 2 and "drop --lr" in res.stderr


def test_early_stopping(cli, runs):
    res = cli("train", "digits", "--model", "linear", "--epochs", "40", "--patience", "2", "--lr", "0.3",
              "--optimizer", "sgd", "--schedule", "none", "--runs-dir", runs, "--threads", "1")
    assert res.exit_code == 0, res.stderr
    rec = _result(res)
    assert rec["stopped_early"] and rec["epochs"] < 40 and "early stop" in res.stderr


# --------------------------------------------------------------------------- runs are never overwritten


def test_run_directory_is_never_overwritten(cli, runs):
    args = ("train", "digits", "--model", "linear", "--epochs", "1", "--runs-dir", runs, "--threads", "1")
    first = _result(cli(*args, "--name", "keep"))
    before = (Path(first["run"]) / "best.pt").read_bytes()
    res = cli(*args, "--name", "keep", "--lr", "0.5")
    assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert (Path(first["run"]) / "best.pt").read_bytes() == before
    auto1, auto2 = Path(_result(cli(*args))["run"]).name, Path(_result(cli(*args))["run"]).name
    assert auto1 != auto2 and auto1.startswith("digits-linear") and auto2.startswith("digits-linear-")
    res = cli(*args, "--name", "keep", "--lr", "0.5", "--overwrite")
    assert res.exit_code == 0 and (Path(first["run"]) / "best.pt").read_bytes() != before
    (runs / "precious").mkdir()
    (runs / "precious" / "thesis.tex").write_text("years of work")
    res = cli(*args, "--name", "precious", "--overwrite")
    assert res.exit_code == 2 and "not a cvtool run directory" in res.stderr
    assert (runs / "precious" / "thesis.tex").read_text() == "years of work"


# --------------------------------------------------------------------------- sweep


def test_sweep_writes_its_table_plot_and_best_config(cli, runs):
    res = cli("train", "digits", "--model", "linear", "--sweep", "lr=1e-3:1:log,weight_decay=1e-6:1e-2:log,optimizer=sgd|adam",
              "--trials", "3", "--sweep-epochs", "1", "--runs-dir", runs, "--name", "sweep", "--threads", "1")
    assert res.exit_code == 0, res.stderr
    trials = jsonl(res.stdout)
    assert [t["trial"] for t in trials] == [1, 2, 3] and all(t["status"] == "ok" for t in trials)
    run = runs / "sweep"
    rows = list(csv.DictReader(open(run / "sweep.csv")))
    assert len(rows) == 3 and {"lr", "weight_decay", "optimizer", "val_acc"} <= set(rows[0])
    best = json.loads((run / "best.json").read_text())
    assert best["val_acc"] == max(t["val_acc"] for t in trials)
    assert best["config"]["lr"] == best["params"]["lr"] and "--lr" in best["options"]
    assert (run / "sweep.png").stat().st_size > 1000 and "best trial" in res.stderr
    assert sorted(p.name for p in (run / "trials").iterdir()) == ["trial-01", "trial-02", "trial-03"]


# --------------------------------------------------------------------------- DDP


def test_ddp_with_two_cpu_processes(runs):
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cvtool",
           "train", "digits", "--model", "cnn", "--epochs", "2", "--runs-dir", str(runs), "--name", "ddp"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    rec = _result(p)  # one summary, from rank 0 only
    assert rec["test_acc"] > 0.5, rec
    cfg = json.loads((runs / "ddp" / "config.json").read_text())["resolved"]
    assert cfg["processes"] == 2
    assert p.stderr.count("cvtool: epoch 1 ") == 1  # rank 0 alone reports
    assert len((runs / "ddp" / "metrics.jsonl").read_text().splitlines()) == 2
    st = _load(runs / "ddp" / "last.pt")["train_state"]
    assert st["world"] == 2 and len(st["rng"]) == 2


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, message", [
    (["digits", "--model", "nope"], "unknown model 'nope'"),
    (["/no/such/folder"], "no such folder or file"),
    (["digits", "--model", "resnet18", "--freeze-backbone"], "--freeze-backbone needs --pretrained"),
    (["digits", "--loss", "svm", "--mixup", "0.2"], "--loss svm takes hard labels"),
    (["digits", "--optimizer", "lbfgs"], "--optimizer 'lbfgs'"),
    (["digits", "--sweep", "learning_rate=1:2"], "cannot tune 'learning_rate'"),
    (["digits", "--sweep", "lr=0:1:log"], "a log scale needs LO > 0"),
    (["digits", "--model", "cnn", "--pretrained"], "cnn has no pretrained weights"),
    (["digits", "--model", "resnet18", "--pretrained"], "no weights for model 'resnet18'"),
    (["digits", "--eval-only"], "--eval-only needs --model"),
])
def test_usage_errors_are_one_line_and_exit_2(cli, runs, args, message):
    res = cli("train", *args, "--runs-dir", runs)
    assert res.exit_code == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("cvtool: error: ")


# --------------------------------------------------------------------------- the pieces


def test_schedules_hinge_loss_and_sweep_sampling():
    import random

    import torch

    from cvtool.train.optim import Schedule, multiclass_hinge
    from cvtool.train.sweep import parse, sample

    def lrs(kind, **kw):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = Schedule(opt, kind, steps_per_epoch=10, epochs=10, **kw)
        out = [s.lr]
        for _ in range(99):
            s.step()
            out.append(s.lr)
        return s, out

    _, cos = lrs("cosine", warmup_epochs=1)
    assert cos[0] < 0.1 and abs(cos[10] - 1.0) < 1e-9 and cos[99] < 1e-3  # warm-up, peak, annealed
    _, step = lrs("step", step_size=3, gamma=0.1)
    assert step[29] == 1.0 and abs(step[30] - 0.1) < 1e-12 and abs(step[60] - 0.01) < 1e-12
    _, one = lrs("onecycle")
    assert abs(one[0] - 1 / 25) < 1e-9 and max(one) == one[30] and one[99] < 1e-3
    s, _ = lrs("plateau", plateau_patience=1)
    for loss in (1.0, 0.9, 0.95, 0.95):
        s.epoch_end(loss)
    assert abs(s.lr - 0.1) < 1e-12  # two epochs without a lower loss (patience 1): ÷10
    # hinge: scores (3, 1, -2) for class 0 → max(0, 1-3+1) + max(0, -2-3+1) = 0; class 1 → (3-1+1) + 0 = 3
    scores = torch.tensor([[3.0, 1.0, -2.0], [3.0, 1.0, -2.0]])
    assert float(multiclass_hinge(scores, torch.tensor([0, 1]))) == pytest.approx((0 + 3) / 2)
    params = parse("lr=1e-4:1e-1:log,batch=16:64,optimizer=adam|sgd,dropout=0.1:0.5")
    assert params["lr"]["kind"] == "log" and params["batch"]["kind"] == "int"
    rng = random.Random(0)
    for _ in range(50):
        v = sample(params, rng)
        assert 1e-4 <= v["lr"] <= 1e-1 and 16 <= v["batch"] <= 64 and isinstance(v["batch"], int)
        assert v["optimizer"] in ("adam", "sgd") and 0.1 <= v["dropout"] <= 0.5
