"""Issue 24's rough edges around inputs and outputs, each on a real process (``run_cvtool``): the
exit code a shell sees, what stderr says, and what is (not) left on disk."""

from __future__ import annotations

import errno
import json
import os

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


# ---- 16. a full disk, a quota, a read-only file system: the user's environment, not a bug ------

@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB tmpfs, filled to the last block (needs root and permission to mount)."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        with open(mnt / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _only_the_filler(mnt) -> None:
    assert sorted(p.name for p in mnt.rglob("*") if p.is_file()) == ["filler"]  # nothing partial


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv"])
def test_a_full_disk_is_a_one_line_environment_error(samples, full_disk, name):
    out = full_disk / name
    res = run_cvtool("classify", samples, "-o", out, "-q")
    line = _one_line_error(res)
    assert str(out) in line and "No space left on device" in line and "internal error" not in line
    _only_the_filler(full_disk)


def test_a_full_disk_behind_stdout_and_save(samples, full_disk):
    import subprocess
    import sys

    from conftest import ROOT

    target = full_disk / "redirected.jsonl"
    with open(target, "w") as fh:  # as the shell does for `cvtool classify photos/ > /full/x.jsonl`
        res = subprocess.run([sys.executable, "-m", "cvtool", "classify", str(samples), "-q"], stdout=fh,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "cvtool: error: cannot write standard output: No space left on device"
    target.unlink()
    res = run_cvtool("classify", samples / "cat.jpg", "--save", full_disk / "pics", "-q")
    line = _one_line_error(res)
    assert str(full_disk / "pics" / "cat.jpg") in line and "No space left" in line
    _only_the_filler(full_disk)


@pytest.mark.parametrize("code", ["EDQUOT", "EROFS", "ENOSPC"])
def test_quota_and_read_only_mid_run_are_environment_errors(monkeypatch, capsys, samples, tmp_path, code):
    """The same errors arising while the records are written (a quota runs out, the disk is
    remounted read-only), in-process: exit 2, the file named, its temporary removed."""
    import sys

    from cvtool.cli.app import main
    from cvtool.io import records

    def refuse(self, record):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(records.RecordWriter, "write", refuse)
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(sys, "argv", ["cvtool", "classify", str(samples / "cat.jpg"), "-o", str(out), "-q"])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 2, err
    assert err == f"cvtool: error: cannot write {out}: {os.strerror(getattr(errno, code))}"
    from cvtool.io.atomic import cleanup_temporaries

    cleanup_temporaries()  # as at exit
    assert list(tmp_path.iterdir()) == []


# ---- 7. an empty stdin is nothing to do; -0 reads NUL-separated names --------------------------

@pytest.mark.parametrize("command", [("classify",), ("detect",), ("visualize", "saliency"), ("attack", "fgsm")])
@pytest.mark.parametrize("given", ["", "\n  \n"])
def test_an_empty_stdin_is_a_usage_error(tmp_path, command, given):
    out = tmp_path / "out.jsonl"
    for res in (run_cvtool(*command, "-", "-o", out, "--device", "cpu", "-q", input=given),
                run_cvtool(*command, "-0", "-", "--device", "cpu", "-q", input="")):
        assert res.returncode == 2, res.stderr
        # (detect may first say that it converted its bundled weights, once per cache)
        assert [ln for ln in res.stderr.splitlines() if "error" in ln] == \
            ["cvtool: error: no inputs (standard input listed no paths)"]
        assert res.stdout == "" and not out.exists()


def test_nul_separated_names_may_hold_newlines(samples, tmp_path):
    import shutil

    odd = tmp_path / "a cat\nin two lines.jpg"
    spaced = tmp_path / " coffee .jpg"
    shutil.copy(samples / "cat.jpg", odd)
    shutil.copy(samples / "coffee.jpg", spaced)
    listing = f"{odd}\0{spaced}\0"  # as `find -print0` writes it
    for command in (("classify",), ("visualize", "saliency", "--save", tmp_path / "maps")):
        res = run_cvtool(*command, "-0", "-", "-q", "--device", "cpu", input=listing)
        assert res.returncode == 0, res.stderr
        assert [r["source"] for r in jsonl(res.stdout)] == [str(odd), str(spaced)]
        assert all(r["ok"] for r in jsonl(res.stdout))
    # the records are those of the same files named on the command line
    direct = jsonl(run_cvtool("classify", odd, spaced, "-q").stdout)
    via_nul = jsonl(run_cvtool("classify", "--null", "-", "-q", input=listing).stdout)
    assert [r["label"] for r in via_nul] == [r["label"] for r in direct] == ["tiger cat", "espresso"]
    # without -0 the same listing is not one name per line: the name with a newline is lost
    lines = jsonl(run_cvtool("classify", "-", "-q", input=f"{odd}\n{spaced}\n").stdout)
    assert len(lines) == 3 and not lines[0]["ok"] and not lines[1]["ok"]


def test_stdin_paths_splits_on_nul_across_reads():
    import io

    from cvtool.io.sources import stdin_paths
    from cvtool.scale.inputs import plan

    class Trickle(io.RawIOBase):  # hands the bytes over a few at a time, as a pipe may
        def __init__(self, data: bytes):
            self.data = data

        def readable(self):
            return True

        def readinto(self, b):
            n = min(3, len(b), len(self.data))
            b[:n], self.data = self.data[:n], self.data[n:]
            return n

    data = b"first\nname\0\0second\0last"
    assert list(stdin_paths(io.TextIOWrapper(io.BufferedReader(Trickle(data), 4)), null=True)) == \
        ["first\nname", "second", "last"]
    assert list(stdin_paths(io.StringIO("a\0b\nc\0"), null=True)) == ["a", "b\nc"]
    assert list(stdin_paths(io.StringIO("a\n\n b \r\n"))) == ["a", " b "]
    assert [i.source for i in plan(["-"], io.StringIO("x\ny.jpg\0"), null=True)] == ["x\ny.jpg"]  # --engine ray
