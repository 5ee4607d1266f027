"""`cvtool classify` end to end on the real bundled EfficientNet-Lite0 and real photos."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from conftest import jsonl, run_cvtool

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
COMMON_KEYS = {"source", "frame", "timestamp", "task", "model", "backend", "provider", "device", "ok",
               "error", "image_size", "time_ms", "batch_size"}


@pytest.fixture(scope="module")
def lite0():
    from cvtool.models.loader import load

    return load("efficientnet_lite0")


def _classify_lib(model, paths, backend, topk=5, batch=4):
    from cvtool.io.sources import expand
    from cvtool.tasks.base import RunOptions, make_runner, run
    from cvtool.tasks.classify import Classifier

    runner = make_runner(model, backend, "cpu", notify=lambda m: None)
    return [r.to_dict() for r, _ in run("classify", model, runner, expand(paths), Classifier(model, topk),
                                         RunOptions(batch=batch, device="cpu"))]


def test_bundled_model_recognises_the_sample_photos(cli, samples):
    res = cli("classify", samples / "cat.jpg", samples / "coffee.jpg", "--topk", "5")
    assert res.exit_code == 0, res.stderr
    cat, coffee = jsonl(res.stdout)
    assert cat["label"] in CAT_CLASSES and cat["score"] > 0.3
    assert coffee["label"] in {"espresso", "cup", "coffee mug"} and coffee["score"] > 0.5
    assert cat["backend"] == "onnxruntime" and cat["provider"] == "CPUExecutionProvider"
    assert [t["rank"] for t in cat["topk"]] == [1, 2, 3, 4, 5]
    scores = [t["score"] for t in cat["topk"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6
    assert sum(t["label"] in CAT_CLASSES for t in cat["topk"][:3]) >= 2


def test_onnx_and_torch_agree(lite0, samples):
    paths = [str(samples)]
    onnx = _classify_lib(lite0, paths, "onnx")
    torch_ = _classify_lib(lite0, paths, "torch")
    assert len(onnx) == len(torch_) == 6
    for a, b in zip(onnx, torch_):
        assert a["backend"] == "onnxruntime" and b["backend"] == "torch"
        assert a["class_id"] == b["class_id"], (a["source"], a["label"], b["label"])
        pa = {t["class_id"]: t["score"] for t in a["topk"]}
        pb = {t["class_id"]: t["score"] for t in b["topk"]}
        for k in set(pa) & set(pb):
            assert abs(pa[k] - pb[k]) < 1e-3


def test_batch_size_does_not_change_results(lite0, samples):
    one = _classify_lib(lite0, [str(samples)], "onnx", batch=1)
    many = _classify_lib(lite0, [str(samples)], "onnx", batch=6)
    for a, b in zip(one, many):
        assert a["source"] == b["source"] and a["class_id"] == b["class_id"]
        assert abs(a["score"] - b["score"]) < 1e-4


def test_jsonl_contract_for_a_folder(samples):
    proc = run_cvtool("classify", samples, "--topk", "2")
    assert proc.returncode == 0, proc.stderr
    recs = jsonl(proc.stdout)
    assert [r["source"] for r in recs] == sorted(str(p) for p in samples.glob("*.jpg"))
    for r in recs:
        assert COMMON_KEYS <= set(r) and r["ok"] is True and r["error"] is None
        assert r["task"] == "classify" and r["model"] == "efficientnet_lite0" and r["frame"] is None
        assert r["device"] == "cpu" and r["image_size"]["width"] > 0
        assert set(r["time_ms"]) == {"decode", "preprocess", "inference"} and r["batch_size"] == 6
        assert all(v >= 0 for v in r["time_ms"].values())
        assert len(r["topk"]) == 2 and r["label"] == r["topk"][0]["label"]
    assert "Traceback" not in proc.stderr


def _bad_inputs(tmp_path, samples):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    data = (samples / "coffee.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "dir.jpg").mkdir()
    return [samples / "cat.jpg", tmp_path / "missing.jpg", tmp_path / "empty.jpg", tmp_path / "notes.jpg",
            tmp_path / "truncated.jpg", str(tmp_path / "dir*.jpg"), samples / "coffee.jpg"]


def test_bad_inputs_give_one_error_record_each_and_the_run_goes_on(tmp_path, samples):
    inputs = _bad_inputs(tmp_path, samples)
    proc = run_cvtool("classify", *inputs, "--batch", "2")
    assert proc.returncode == 1
    recs = jsonl(proc.stdout)
    assert len(recs) == len(inputs)
    assert [r["ok"] for r in recs] == [True, False, False, False, False, False, True]
    reasons = [r["error"] for r in recs[1:6]]
    for want, got in zip(["no such file", "empty file", "not a recognised image", "truncated",
                          "is a directory"], reasons):
        assert want in got
    assert recs[0]["label"] in CAT_CLASSES and recs[-1]["ok"]
    for r in recs[1:6]:
        assert COMMON_KEYS <= set(r) and "label" not in r
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cvtool: ") and ": " in ln[8:]]
    assert sum(("missing.jpg" in ln) for ln in err_lines) == 1
    assert "Traceback" not in proc.stderr


def test_too_large_image_is_refused_by_the_pixel_limit(cli, samples):
    res = cli("classify", samples / "cat.jpg", samples / "astronaut.jpg", "--max-pixels", "200000")
    assert res.exit_code == 1
    cat, astro = jsonl(res.stdout)
    assert cat["ok"] and not astro["ok"] and "over the limit of 200,000" in astro["error"]


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_unreadable_file(tmp_path, samples):
    locked = tmp_path / "locked.jpg"
    shutil.copy(samples / "cat.jpg", locked)
    locked.chmod(0)
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:  # root reads everything: run as an unprivileged user instead
        import pwd

        try:
            nobody = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            pytest.skip("no unprivileged user")
        code = ("import sys; from cvtool.io.decode import decode_image, DecodeError\n"
                "try:\n decode_image(sys.argv[1])\nexcept DecodeError as e:\n print(e)\n")
        import subprocess

        try:
            out = subprocess.run([sys.executable, "-c", code, str(locked)], capture_output=True,
                                 text=True, user=nobody, env={**os.environ, "PYTHONPATH": str(samples.parent)})
        except PermissionError:
            pytest.skip("the unprivileged user cannot run this interpreter")
        if not out.stdout and ("Permission denied" in out.stderr or "ModuleNotFoundError" in out.stderr):
            pytest.skip("the unprivileged user cannot run this interpreter or import cvtool")
        assert out.stdout.strip() == "permission denied", out.stderr
    else:
        proc = run_cvtool("classify", locked)
        assert proc.returncode == 1 and "permission denied" in jsonl(proc.stdout)[0]["error"]


def test_paths_from_stdin(samples, tmp_path):
    listing = f"{samples / 'coffee.jpg'}\n{tmp_path / 'gone.png'}\n{samples / 'cat.jpg'}\n"
    proc = run_cvtool("classify", "-", "--topk", "1", input=listing)
    assert proc.returncode == 1
    recs = jsonl(proc.stdout)
    assert [r["source"] for r in recs] == [str(samples / "coffee.jpg"), str(tmp_path / "gone.png"),
                                           str(samples / "cat.jpg")]
    assert [r["ok"] for r in recs] == [True, False, True]


def _make_video(path, samples, frames=12, size=(320, 240)):
    import cv2

    pics = [cv2.resize(cv2.imread(str(samples / n)), size) for n in ("cat.jpg", "coffee.jpg")]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert w.isOpened()
    for i in range(frames):
        w.write(pics[i // (frames // 2)])
    w.release()
    return path


def test_video_frames_stream_with_stride(cli, tmp_path, samples):
    video = _make_video(tmp_path / "clip.mp4", samples)
    res = cli("classify", video, "--topk", "1", "--batch", "4")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert [r["frame"] for r in recs] == list(range(12))
    assert recs[0]["timestamp"] == 0.0 and abs(recs[5]["timestamp"] - 0.5) < 1e-6
    assert recs[0]["label"] in CAT_CLASSES and recs[-1]["label"] in {"espresso", "cup", "coffee mug"}
    assert recs[0]["image_size"] == {"width": 320, "height": 240}
    res = cli("classify", video, "--vid-stride", "5")
    assert [r["frame"] for r in jsonl(res.stdout)] == [0, 5, 10]


def test_broken_video_is_one_error_record(cli, tmp_path, samples):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    res = cli("classify", bad, samples / "cat.jpg")
    assert res.exit_code == 1
    recs = jsonl(res.stdout)
    assert len(recs) == 2 and not recs[0]["ok"] and "video" in recs[0]["error"] and recs[1]["ok"]


def test_output_file_is_atomic_and_never_overwritten_unless_asked(cli, tmp_path, samples):
    out = tmp_path / "labels.jsonl"
    res = cli("classify", samples / "cat.jpg", "-o", out, "-q")
    assert res.exit_code == 0 and res.stdout == ""
    first = out.read_text()
    assert jsonl(first)[0]["source"].endswith("cat.jpg")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    res = cli("classify", samples / "coffee.jpg", "-o", out)
    assert res.exit_code == 2 and "already exists" in res.stderr and out.read_text() == first
    res = cli("classify", samples / "coffee.jpg", "-o", out, "--overwrite", "-q")
    assert res.exit_code == 0 and jsonl(out.read_text())[0]["source"].endswith("coffee.jpg")


def test_csv_output(cli, tmp_path, samples):
    import csv

    out = tmp_path / "labels.csv"
    res = cli("classify", samples / "cat.jpg", tmp_path / "nope.jpg", "-o", out, "-k", "3", "-q")
    assert res.exit_code == 1
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    assert rows[0]["label"] in CAT_CLASSES and rows[0]["image_size.width"] == "451"
    assert len(json.loads(rows[0]["topk"])) == 3
    assert rows[0]["ok"] == "true" and rows[1]["ok"] == "false" and "no such file" in rows[1]["error"]
    assert b"\r\n" not in out.read_bytes()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_draws_labels_on_copies(cli, tmp_path, samples):
    import cv2

    out = tmp_path / "annotated"
    video = _make_video(tmp_path / "clip.mp4", samples, frames=6)
    res = cli("classify", samples / "cat.jpg", video, "--save", out, "-q")
    assert res.exit_code == 0, res.stderr
    recs = jsonl(res.stdout)
    saved = out / "cat.jpg"
    assert recs[0]["saved"] == str(saved)
    drawn, orig = cv2.imread(str(saved)), cv2.imread(str(samples / "cat.jpg"))
    assert drawn.shape == orig.shape
    diff = np.abs(drawn.astype(int) - orig.astype(int)).sum(axis=2) > 60
    assert diff[:60, :200].mean() > 0.1 and diff[150:, 250:].mean() < 0.01  # label panel top-left only
    video_out = recs[1]["saved"]
    assert video_out.startswith(str(out / "clip.")) and video_out.endswith((".webm", ".mp4"))
    assert all(r["saved"] == video_out for r in recs[1:])
    cap, n = cv2.VideoCapture(video_out), 0
    while cap.read()[0]:
        n += 1
    assert n == 6
    assert oct(os.stat(video_out).st_mode & 0o777) == oct(0o666 & ~_umask())
    res = cli("classify", samples / "cat.jpg", "--save", out, "-q")
    assert res.exit_code == 2 and "--overwrite" in res.stderr and not res.stdout  # tests/test_cli_options.py


@pytest.mark.parametrize("args, message", [
    (["--model", "no_such_model"], "unknown model 'no_such_model'"),
    (["--model", "efficentnet_lite0"], "Did you mean efficientnet_lite0"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--backend", "tensorflow"], "--backend 'tensorflow'"),
    (["--format", "xml"], "--format 'xml'"),
    (["--topk", "0"], ""),
    (["--weights", "/nonexistent.pth"], "no such file"),
])
def test_usage_errors_exit_2_without_traceback(samples, args, message):
    proc = run_cvtool("classify", samples / "cat.jpg", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


def test_cuda_request_without_gpu_is_a_clear_error(samples):
    from cvtool.runtime.device import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("this machine has a GPU")
    proc = run_cvtool("classify", samples / "cat.jpg", "--device", "cuda")
    assert proc.returncode == 2 and "--device cuda" in proc.stderr and "Traceback" not in proc.stderr


def test_exported_onnx_file_works_as_model(cli, lite0, samples, tmp_path):
    path, _ = lite0.onnx_path()
    copy = tmp_path / "lite0.onnx"
    shutil.copy(path, copy)
    res = cli("classify", samples / "cat.jpg", "--model", copy, "-k", "1")
    assert res.exit_code == 0
    rec = jsonl(res.stdout)[0]
    assert rec["label"] in CAT_CLASSES and rec["model"] == "efficientnet_lite0"
    res = cli("classify", samples / "cat.jpg", "--model", copy, "--backend", "torch")
    assert res.exit_code == 2 and "ONNX file runs only on --backend onnx" in res.stderr


def test_checkpoint_from_train_loads_with_its_own_labels(cli, samples, tmp_path):
    """A checkpoint in `cvtool train`'s format: a 3-class Lite0 built and saved here."""
    import torch

    from cvtool.models.zoo.efficientnet_lite import efficientnet_lite0

    torch.manual_seed(0)
    net = efficientnet_lite0(num_classes=3)
    ckpt = {"cvtool": {"format": 1, "arch": "efficientnet_lite0", "task": "classify", "name": "pets3",
                       "labels": ["cat", "dog", "cup"],
                       "preprocess": {"resize": 256, "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3}},
            "state_dict": net.state_dict()}
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    for backend in ("torch", "onnx"):
        res = cli("classify", samples / "cat.jpg", "--model", path, "--backend", backend, "-k", "3")
        assert res.exit_code == 0, res.stderr
        rec = jsonl(res.stdout)[0]
        assert rec["model"] == "pets3" and {t["label"] for t in rec["topk"]} == {"cat", "dog", "cup"}
    torch.save({"some": "dict"}, tmp_path / "plain.pt")
    res = cli("classify", samples / "cat.jpg", "--model", tmp_path / "plain.pt")
    assert res.exit_code == 2 and "not a checkpoint written by `cvtool train`" in res.stderr


def test_help_does_not_import_heavy_libraries():
    proc = run_cvtool("--help", python_flags=("-X", "importtime"))
    assert proc.returncode == 0 and "classify" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "cv2", "onnxruntime", "numpy"}, imported & {"torch", "cv2", "onnxruntime"}


def test_warm_cache_run_does_not_import_torch(samples, lite0):
    lite0.onnx_path()  # make sure the export is cached
    proc = run_cvtool("classify", samples / "cat.jpg", python_flags=("-X", "importtime"))
    assert proc.returncode == 0
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported and "torch" not in imported


def test_table_format_for_terminals(cli, samples, tmp_path):
    res = cli("classify", samples / "cat.jpg", tmp_path / "nope.jpg", "--format", "table", "-k", "2")
    assert res.exit_code == 1
    assert "┃ source" in res.stdout and any(name in res.stdout for name in CAT_CLASSES)
    assert "error: no such file" in res.stdout and "{" not in res.stdout


def test_version_and_module_entry_point():
    proc = run_cvtool("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("cvtool 0.")


def test_the_table_at_80_columns_keeps_names_whole_and_has_no_empty_column(samples):
    """Issue 24.14: with -k 1 the table had an empty "top-1" column (it holds the labels after the
    first), and at 80 columns the file names were cut in two (`sample_images/astronaut` / `.jpg`)
    while the labels wrapped mid-word. Checked on the real table a terminal of 80 columns gets."""
    from conftest import run_cvtool

    for k, header in (("1", ["source", "label", "score"]), ("5", ["source", "label", "score", "runners-up"])):
        proc = run_cvtool("classify", "sample_images", "-k", k, "--format", "table", "-q", env={"COLUMNS": "80"})
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert all(len(line) <= 80 and line[-1] in "┓┃┩│┘" for line in lines), proc.stdout
        assert [c.strip() for c in lines[1].strip("┃").split("┃")] == header, lines[1]
        names = sorted(p.name for p in samples.glob("*.jpg"))
        assert [n for n in names if any(f"sample_images/{n}" in line for line in lines)] == names, proc.stdout
    assert "bobsled 0.11," in proc.stdout and "punching bag 0.05," in proc.stdout  # words kept whole
