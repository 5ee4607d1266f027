"""Shared options: declared once, offered by every command the same way, and acted on alike."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer

from conftest import jsonl

RECORD_COMMANDS = ("classify", "detect", "segment", "depth", "caption")  # all of them take --engine ray
SHARED_FLAGS = {"--device", "--threads", "--batch", "--backend", "--allow-cpu-fallback", "--workers",
                "--format", "--output", "--overwrite", "--quiet", "--vid-stride", "--max-pixels", "--null"}
RAY_FLAGS = {"--engine", "--address", "--gpus-per-worker", "--output-dir", "--output-format", "--resume"}


def _params(*path: str) -> dict[str, tuple]:
    import typer.main

    from cvtool.cli.app import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {p.opts[0]: (tuple(p.opts), repr(getattr(p, "type", None)), getattr(p, "help", None))
            for p in cmd.params if p.param_type_name == "option"}


def test_record_commands_offer_the_same_shared_options():
    reference = _params("classify")
    assert SHARED_FLAGS | RAY_FLAGS <= set(reference)
    for name in RECORD_COMMANDS[1:]:
        params = _params(name)
        flags = SHARED_FLAGS | RAY_FLAGS | {"--report"}
        for flag in flags:
            if name == "caption" and flag == "--backend":
                continue  # caption's --backend says how the encoder and the generation loop split
            assert params.get(flag) == reference[flag], f"{name} {flag}"
    # the gradient commands share the output/input/runtime options with them
    assert _params("train")["--workers"][2] != reference["--workers"][2]  # no Ray wording without --engine
    for path in (("visualize",), ("attack",)):
        params = _params(*path)
        for flag in ("--device", "--threads", "--format", "--output", "--overwrite", "--quiet",
                     "--vid-stride", "--max-pixels", "--null", "--report"):
            assert params[flag] == reference[flag], f"{path[0]} {flag}"


def test_a_command_cannot_declare_a_shared_option_twice():
    from cvtool.cli import options as o

    def cmd(device: Annotated[str, typer.Option("--device")] = "x", *, opts: "object") -> None: ...

    with pytest.raises(TypeError, match="device"):
        o.shared(*o.RUNTIME)(cmd)
    with pytest.raises(ValueError, match="nonsense"):
        o.shared("nonsense")
    with pytest.raises(ValueError, match="backend"):
        o.shared("device", backend=o.Backend("x"))


@pytest.mark.parametrize("argv", [
    ("classify",), ("detect",), ("visualize", "saliency"), ("attack", "fgsm"),
])
def test_max_pixels_reaches_every_command(cli, samples, argv):
    """The same shared option changes what each command does in the same way: the 451x300 cat is
    over a 10,000-pixel limit, so every command writes one error record for it and exits 1."""
    res = cli(*argv, samples / "cat.jpg", "--max-pixels", "10000", "-q", "-f", "jsonl", "--device", "cpu")
    assert res.exit_code == 1, res.output
    [rec] = jsonl(res.stdout)
    assert rec["ok"] is False and rec["source"].endswith("cat.jpg")
    assert "pixels" in rec["error"], rec["error"]


def test_quiet_also_silences_the_one_time_weights_conversion(samples, tmp_path):
    """Issue 24.14: `-q` silenced "exported ... to ONNX once" but not "converting ... weights ...
    once", which the weights resolution printed itself; both now reach stderr through the same
    `notify` the ONNX export uses. Without -q both lines are there (a fresh cache each time)."""
    from conftest import run_cvtool

    loud = run_cvtool("detect", samples / "cat.jpg", env={"CVTOOL_HOME": str(tmp_path / "a")})
    assert loud.returncode == 0, loud.stderr
    assert [line.split(" ")[1] for line in loud.stderr.splitlines()] == ["converting", "exported"], loud.stderr
    quiet = run_cvtool("detect", samples / "cat.jpg", "-q", env={"CVTOOL_HOME": str(tmp_path / "b")})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert (tmp_path / "b" / "weights" / "ssd_mobilenet_v2_coco.safetensors").is_file()
    assert len(quiet.stdout.splitlines()) == 1


@pytest.mark.parametrize("command", ["classify", "detect"])
def test_a_second_save_into_the_same_folder_is_refused_before_any_work(cli, samples, tmp_path, command):
    out = tmp_path / "saved"
    first = cli(command, samples / "cat.jpg", "--save", out, "-q")
    assert first.exit_code == 0 and jsonl(first.stdout)[0]["saved"] == str(out / "cat.jpg")
    # refused before the model loads: an unknown model is not even looked up
    again = cli(command, samples / "cat.jpg", "--save", out, "--model", "no_such_model", "-q")
    assert again.exit_code == 2 and not again.stdout
    assert again.stderr.strip() == (f"cvtool: error: --save {out} already holds files (e.g. cat.jpg); "
                                    "pass --overwrite to write into it anyway, or choose another folder")
    replaced = cli(command, samples / "cat.jpg", "--save", out, "--overwrite", "-q")
    assert replaced.exit_code == 0 and jsonl(replaced.stdout)[0]["ok"]
    assert cli(command, samples / "cat.jpg", "--save", tmp_path / "new" / "sub", "-q").exit_code == 0
