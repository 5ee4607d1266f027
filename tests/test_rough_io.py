"""Issue 24's rough edges around inputs and outputs, each on a real process (``run_cvtool``): the
exit code a shell sees, what stderr says, and what is (not) left on disk."""

from __future__ import annotations

import json

import pytest

from conftest import jsonl, run_cvtool


def _one_line_error(res, code: int = 2) -> str:
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cvtool: error: "), err
    return err


# ---- 3. an output name cvtool does not know is refused, not written as JSON Lines --------------

@pytest.mark.parametrize("name", ["out.parquet", "out.txt", "records"])
@pytest.mark.parametrize("command", [("classify",), ("visualize", "saliency", "--save", "{tmp}/vis")])
def test_an_unknown_output_extension_is_a_usage_error(samples, tmp_path, name, command):
    out = tmp_path / name
    res = run_cvtool(*[a.format(tmp=tmp_path) for a in command], samples / "cat.jpg", "-o", out, "--device", "cpu")
    line = _one_line_error(res)
    assert str(out) in line and ".jsonl, .csv, .json" in line
    assert res.stdout == "" and list(tmp_path.iterdir()) == []  # nothing written, nothing run


def test_known_extensions_and_an_explicit_format_still_write(samples, tmp_path):
    cat = samples / "cat.jpg"
    assert run_cvtool("classify", cat, "-o", tmp_path / "a.JSONL", "-q").returncode == 0
    assert jsonl((tmp_path / "a.JSONL").read_text())[0]["label"] == "tiger cat"
    res = run_cvtool("classify", cat, "-o", tmp_path / "b.txt", "--format", "json", "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "b.txt").read_text())[0]["label"] == "tiger cat"
    res = run_cvtool("classify", cat, "-o", "/dev/stdout", "-q")  # a special file: JSON Lines
    assert res.returncode == 0 and jsonl(res.stdout)[0]["label"] == "tiger cat"


# ---- 8. a bad command line is one line, for every command and option ---------------------------

@pytest.mark.parametrize("args, named", [
    (("classify", "{cat}", "--batch", "0"), "--batch"),
    (("detect", "{cat}", "--conf", "-0.1"), "--conf"),
    (("segment", "{cat}", "--batch", "abc"), "--batch"),
    (("classify", "{cat}", "--batch-size", "4"), "--batch-size"),
    (("attack", "fgsm", "{cat}", "--steps", "0"), "--steps"),
    (("models", "info"), "model"),
    (("models", "list", "--task"), "--task"),
    (("--bogus",), "--bogus"),
])
def test_usage_errors_are_one_line(samples, args, named):
    res = run_cvtool(*[a.format(cat=samples / "cat.jpg") for a in args])
    line = _one_line_error(res)
    assert named in line and "╭" not in line, line
    assert res.stdout == ""
