"""Issue 14's faults, each with the repro that showed it. Signals, pipes and special files are
exercised on real processes (``run_cvtool``); the atomic writer's rules also directly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, jsonl, run_cvtool


def _one_line_error(res, code: int = 2) -> str:
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("cvtool: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """``main()`` run in-process installs its SIGTERM/SIGHUP handlers: restore pytest's."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


# ---- 2. outputs that cannot be written: one line, exit 2, before any work --------------------

@pytest.mark.parametrize("args", [
    ("classify", "{cat}", "-o", "/sys/x.jsonl"),
    ("classify", "{cat}", "--save", "/sys/x"),
    ("detect", "{cat}", "--save-crops", "/proc/x"),
    ("visualize", "saliency", "{cat}", "--save", "/sys/x"),
    ("train", "digits", "--model", "linear", "--epochs", "1", "--runs-dir", "/sys/x"),
])
def test_unwritable_outputs_are_a_one_line_usage_error(samples, args):
    try:
        Path("/sys/cvtool-probe").touch()
    except OSError:
        pass
    else:
        pytest.skip("/sys is writable here")
    res = run_cvtool(*[a.format(cat=samples / "cat.jpg") for a in args])
    line = _one_line_error(res)
    assert "/sys" in line or "/proc" in line
    assert res.stdout == ""  # no records: nothing was run


def test_output_folder_without_permission(samples, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        from cvtool.io.atomic import SinkError, check_folder_writable

        with pytest.raises(SinkError, match="cannot write in"):
            if os.geteuid() == 0:  # root passes permission bits: use a read-only mount instead
                check_folder_writable("/proc", "-o /proc/x")
            else:
                check_folder_writable(locked, f"-o {locked}/x")
    finally:
        locked.chmod(0o700)


# ---- 3. special files are written through, symlinks followed ---------------------------------

def test_devices_fifos_and_stdout_are_written_through(samples, tmp_path):
    cat = samples / "cat.jpg"
    res = run_cvtool("classify", cat, "-o", "/dev/null", "-q")
    assert res.returncode == 0, res.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    res = run_cvtool("classify", cat, "-o", "/dev/stdout", "-q")
    assert res.returncode == 0, res.stderr
    assert jsonl(res.stdout)[0]["label"] == "tiger cat"

    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    res = run_cvtool("classify", cat, "-o", fifo, "--overwrite", "-q")
    got = reader.communicate(timeout=60)[0]
    assert res.returncode == 0, res.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO, not replaced by a file
    assert jsonl(got)[0]["source"].endswith("cat.jpg")

    target = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(target.name)
    res = run_cvtool("classify", cat, "-o", link, "-q")
    assert res.returncode == 0 and link.is_symlink() and len(jsonl(target.read_text())) == 1
    res = run_cvtool("classify", cat, "-o", link, "-q")  # the target exists now
    assert "already exists" in _one_line_error(res)
    res = run_cvtool("classify", cat, samples / "coffee.jpg", "-o", link, "--overwrite", "-q")
    assert res.returncode == 0 and link.is_symlink() and len(jsonl(target.read_text())) == 2


def test_atomic_writer_never_replaces_a_device_even_with_overwrite():
    from cvtool.io.atomic import AtomicFile

    f = AtomicFile("/dev/null", overwrite=True)
    assert f.special  # opened and written directly, no temporary, no rename
    with f as fh:
        fh.write("x\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ---- 4. SIGTERM and SIGHUP clean up as Ctrl-C does --------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_leave_no_temporary_file(samples, tmp_path, sig):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        shutil.copy(samples / "cat.jpg", folder / f"c{i:03d}.jpg")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "cvtool", "classify", str(folder), "-o", str(out),
                             "--batch", "1", "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    tmp = []
    while time.time() < deadline and proc.poll() is None:  # wait until records are being written
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl.") and p.stat().st_size > 0]
        if tmp:
            break
        time.sleep(0.05)
    assert tmp, "the run ended before it wrote a record"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many"]  # neither out.jsonl nor a .tmp


# ---- 5. train-only architectures; 8. models list --task, models info labels ------------------

def test_train_only_models_say_where_weights_come_from(samples):
    res = run_cvtool("classify", samples / "cat.jpg", "--model", "knn")
    line = _one_line_error(res)
    assert "To get them: or" not in line and "cvtool train DATA --model knn" in line
    line = _one_line_error(run_cvtool("models", "pull", "cnn"))
    assert "cvtool train DATA --model cnn" in line
    listed = {r["name"]: r for r in jsonl(run_cvtool("models", "list", "-f", "jsonl").stdout)}
    assert {listed[n]["weights"] for n in ("knn", "linear", "mlp", "cnn")} == {"train it"}
    assert not any(r["weights"] == "missing" for r in listed.values())


def test_models_list_unknown_task_and_info_labels():
    line = _one_line_error(run_cvtool("models", "list", "--task", "bogus"))
    assert "bogus" in line and "classify" in line and "caption" in line
    assert {r["task"] for r in jsonl(run_cvtool("models", "list", "--task", "depth", "-f", "jsonl").stdout)} == {"depth"}
    res = run_cvtool("models", "info", "labels")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["task"] == "caption" and info["uses"] == ["efficientnet_lite0", "ssd_mobilenet_v2_coco"]


# ---- 6. a cache that cannot be used ----------------------------------------------------------

@pytest.mark.parametrize("cmd", ["classify", "detect", "caption"])
def test_cvtool_home_on_a_file_is_a_clear_setup_error(samples, tmp_path, cmd):
    afile = tmp_path / "home"
    afile.write_text("not a folder")
    args = (cmd, samples / "cat.jpg") + (("--model", "labels") if cmd == "caption" else ())
    for home in (afile, afile / "below"):
        line = _one_line_error(run_cvtool(*args, env={"CVTOOL_HOME": str(home)}))
        assert "CVTOOL_HOME" in line and "not a folder" in line


# ---- 7. two runs writing one file: never a silent replacement ---------------------------------

def test_the_final_file_is_created_exclusively(tmp_path):
    from cvtool.io.atomic import AtomicFile, SinkError

    out = tmp_path / "out.jsonl"
    first, second = AtomicFile(out), AtomicFile(out)  # both checked before either finished
    with first as fh:
        fh.write("first\n")
    with pytest.raises(SinkError, match="already exists"):
        with second as fh:
            fh.write("second\n")
    assert out.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # the loser's temporary is gone
    with AtomicFile(out, overwrite=True) as fh:  # asked for: replaced
        fh.write("third\n")
    assert out.read_text() == "third\n"


def test_a_run_that_loses_the_race_says_so(samples, tmp_path, monkeypatch, capsys):
    """The second writer's records are not written, it says so and exits 1 (not 0)."""
    from cvtool.cli import output as common

    out = tmp_path / "out.jsonl"
    real_close = common.Output.close

    def close_after_another_run(self, interrupted=False):
        out.write_text("the other run\n")  # lands between this run's checks and its rename
        return real_close(self, interrupted)

    monkeypatch.setattr(common.Output, "close", close_after_another_run)
    monkeypatch.setattr(sys, "argv", ["cvtool", "classify", str(samples / "cat.jpg"), "-o", str(out)])
    from cvtool.cli.app import main

    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 1
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "the other run\n"


# ---- 9. closed pipes -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("models", "list", "-f", "jsonl"), ("visualize", "layers", "-f", "jsonl")])
def test_a_closed_pipe_exits_0(args):
    proc = subprocess.Popen([sys.executable, "-m", "cvtool", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert json.loads(first) and err == ""


# ---- 10. --device mps where there is none ----------------------------------------------------

@pytest.mark.skipif(sys.platform == "darwin", reason="MPS may exist on macOS")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_mps_on_linux_is_an_error_not_a_silent_cpu_run(samples, backend):
    res = run_cvtool("classify", samples / "cat.jpg", "--device", "mps", "--backend", backend)
    assert "--device mps" in _one_line_error(res)
    if backend == "auto":
        res = run_cvtool("classify", samples / "cat.jpg", "--device", "mps", "--allow-cpu-fallback")
        assert res.returncode == 0 and "running on the CPU" in res.stderr
        assert jsonl(res.stdout)[0]["device"] == "cpu"


# ---- 11. CVTOOL_MAX_PIXELS validated as --max-pixels ------------------------------------------

def test_max_pixels_environment_variable_is_validated(samples):
    cat = samples / "cat.jpg"  # 451 × 300 = 135,300 pixels
    for bad in ("abc", "-5", "0", "1.5"):
        line = _one_line_error(run_cvtool("classify", cat, env={"CVTOOL_MAX_PIXELS": bad}))
        assert "CVTOOL_MAX_PIXELS" in line
    res = run_cvtool("classify", cat, env={"CVTOOL_MAX_PIXELS": "135299"})
    assert res.returncode == 1 and "over the limit of 135,299" in jsonl(res.stdout)[0]["error"]
    res = run_cvtool("classify", cat, env={"CVTOOL_MAX_PIXELS": "135300"})
    assert res.returncode == 0


# ---- 12. a video cut short -------------------------------------------------------------------

def test_a_video_cut_short_is_reported(tmp_path):
    import cv2
    import numpy as np

    whole = tmp_path / "whole.avi"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(60):
        w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    w.release()
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 55 // 100])  # the header still says 60 frames
    res = run_cvtool("classify", whole, "-q")
    assert res.returncode == 0 and len(jsonl(res.stdout)) == 60 and "warning" not in res.stderr
    res = run_cvtool("classify", cut, "-q")
    n = len(jsonl(res.stdout))
    assert 0 < n < 60
    assert f"ends after {n} of the 60 frames" in res.stderr


# ---- 13. record formats by --format and file name ---------------------------------------------

def test_table_into_a_file_is_refused_and_json_is_json(samples, tmp_path):
    cat, coffee = samples / "cat.jpg", samples / "coffee.jpg"
    line = _one_line_error(run_cvtool("classify", cat, "-o", tmp_path / "t.txt", "--format", "table"))
    assert "--format table" in line
    assert not (tmp_path / "t.txt").exists()
    res = run_cvtool("classify", cat, coffee, "-o", tmp_path / "x.json", "-q")
    assert res.returncode == 0, res.stderr
    as_json = json.loads((tmp_path / "x.json").read_text())
    res = run_cvtool("classify", cat, coffee, "-q")
    as_lines = jsonl(res.stdout)
    assert [r["topk"] for r in as_json] == [r["topk"] for r in as_lines] and len(as_json) == 2
    res = run_cvtool("classify", cat, "-o", tmp_path / "empty.json", "-q", "--max-pixels", "1")
    assert json.loads((tmp_path / "empty.json").read_text())[0]["ok"] is False
    listed = json.loads(run_cvtool("models", "list", "--task", "depth", "-f", "json").stdout)
    assert [r["task"] for r in listed] == ["depth"] * len(listed) and listed


# ---- 14. a picture and its label file share a stem --------------------------------------------

def test_saved_pictures_and_label_files_share_stems(samples, tmp_path):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    bgr = cv2.imread(str(samples / "coffee.jpg"))
    for ext in (".bmp", ".tiff", ".webp"):
        cv2.imwrite(str(src / f"plain{ext}"), bgr)
    res = run_cvtool("detect", src / "plain.bmp", src / "plain.tiff", src / "plain.webp", "--save",
                     tmp_path / "pics", "--yolo-txt", tmp_path / "labels", "-q")
    assert res.returncode == 0, res.stderr
    recs = jsonl(res.stdout)
    pics = [Path(r["saved"]).stem for r in recs]
    labels = [Path(r["yolo_txt"]).stem for r in recs]
    assert pics == labels == ["plain", "plain_1", "plain_2"]


# ---- 17. bugs are not usage errors -------------------------------------------------------------

def _crash(*_a, **_k):
    raise RuntimeError("boom: a cvtool bug")


def test_an_unexpected_exception_is_an_internal_error_not_usage(monkeypatch, capsys):
    from cvtool.cli.app import main
    from cvtool.models import registry

    monkeypatch.setattr(registry, "list_models", _crash)
    monkeypatch.setattr(sys, "argv", ["cvtool", "models", "list"])
    monkeypatch.setenv("CVTOOL_DEBUG", "0")  # recorded, so that --debug setting it is undone too
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 3
    assert "internal error: RuntimeError: boom: a cvtool bug" in err and "--debug" in err
    assert "Traceback" not in err
    monkeypatch.setattr(sys, "argv", ["cvtool", "--debug", "models", "list"])
    with pytest.raises(RuntimeError, match="boom"):  # --debug: the real exception, traceback and all
        main()
    monkeypatch.setenv("CVTOOL_DEBUG", "0")
    monkeypatch.setattr(sys, "argv", ["cvtool", "models", "list"])
    with pytest.raises(SystemExit):
        main()
    monkeypatch.setenv("CVTOOL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):  # or CVTOOL_DEBUG=1
        main()
    # a user's mistake stays one line and exit 2, also when debugging
    monkeypatch.setattr(sys, "argv", ["cvtool", "models", "info", "nosuch"])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2


def test_an_onnx_export_failure_is_said_even_under_quiet(cli, samples, monkeypatch):
    from cvtool.models import loader

    monkeypatch.setattr(loader.LoadedModel, "onnx_path", _crash)
    res = cli("classify", samples / "cat.jpg", "-q", "-f", "jsonl")
    assert res.exit_code == 0
    assert "ONNX export failed (RuntimeError: boom: a cvtool bug); running on torch instead" in res.stderr
    assert jsonl(res.stdout)[0]["backend"] == "torch"


def test_visualize_does_not_turn_bugs_into_usage_errors(monkeypatch, capsys, samples, tmp_path):
    from cvtool.cli import output as common
    from cvtool.cli.app import main

    monkeypatch.setattr(common.Output, "__init__", _crash)
    monkeypatch.setattr(sys, "argv", ["cvtool", "visualize", "saliency", str(samples / "cat.jpg"),
                                      "--save", str(tmp_path)])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 3 and "internal error" in capsys.readouterr().err


# ---- 18. the suite's own environment ----------------------------------------------------------

def test_the_suite_uses_a_private_hugging_face_cache(cvtool_home):
    assert Path(os.environ["HF_HOME"]).is_relative_to(cvtool_home)
    assert Path(os.environ["TORCH_HOME"]).is_relative_to(cvtool_home)
    assert "HF_HUB_CACHE" not in os.environ and "TRANSFORMERS_CACHE" not in os.environ
    from huggingface_hub import constants

    assert Path(constants.HF_HUB_CACHE).is_relative_to(cvtool_home)


def test_the_suite_removes_its_home_at_the_end(tmp_path):
    """Run a tiny pytest session with this conftest; its private home must be gone afterwards."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_home.py").write_text(
        "import os\n\ndef test_home():\n    open(os.path.join(os.environ['CVTOOL_HOME'], 'f'), 'w').write('x')\n"
        "    print('HOME=' + os.environ['CVTOOL_HOME'])\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    home = next(ln.split("HOME=", 1)[1] for ln in res.stdout.splitlines() if "HOME=" in ln).strip()
    assert home and not Path(home).exists()
