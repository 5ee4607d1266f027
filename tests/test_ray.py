"""`--engine ray`: the same records as the local engine, from a local Ray instance on 2 CPUs.

The Ray tests share one in-process Ray instance (the engine joins it instead of starting its
own); they skip, saying why, where Ray Data is not installed (`pip install '.[ray]'`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest

from conftest import jsonl

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own, not ours

IGNORED = {"time_ms", "batch_size"}  # how a picture was timed and batched, not what was found


# -- helpers --------------------------------------------------------------------------------------

def _close(a, b, path="") -> list[str]:
    """Differences between two records (floats within a tolerance: batches of another size may
    change the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        ok = a is not None and b is not None and math.isclose(a, b, rel_tol=1e-4, abs_tol=2e-2 if "box" in path else 1e-4)
        return [] if ok else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _same_records(local: list[dict], ray: list[dict]) -> None:
    by_source = {}
    for r in ray:
        assert r["source"] not in by_source, f"duplicate record for {r['source']}"
        by_source[r["source"]] = r
    assert sorted(by_source) == sorted(r["source"] for r in local)
    for r in local:
        strip = lambda d: {k: v for k, v in d.items() if k not in IGNORED}  # noqa: E731
        diffs = _close(strip(r), strip(by_source[r["source"]]))
        assert not diffs, (r["source"], diffs[:5])


def _records(folder) -> list[dict]:
    from cvtool.scale.store import OutputDir

    return list(OutputDir(str(folder)).records())


def _bad_inputs(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.jpg").write_bytes(b"this is not a picture")
    (bad / "empty.png").write_bytes(b"")
    return [bad / "junk.jpg", bad / "empty.png", tmp_path / "missing.jpg"]


# -- without a cluster ----------------------------------------------------------------------------

def test_without_ray_installed_the_engine_says_how_to_get_it(cli, samples, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    res = cli("classify", samples / "cat.jpg", "--engine", "ray", "--output-dir", tmp_path / "out")
    assert res.exit_code == 2
    assert "--engine ray needs Ray Data" in res.stderr and "pip install 'cvtool[ray]'" in res.stderr


@pytest.mark.parametrize("args, message", [
    (("--engine", "ray"), "give --output-dir"),
    (("--output-dir", "OUT"), "apply to --engine ray"),
    (("--engine", "spark", "--output-dir", "OUT"), "expected local or ray"),
    (("--engine", "ray", "--output-dir", "OUT", "--save", "SAVE"), "--save is not supported"),
    (("--engine", "ray", "--output-dir", "OUT", "-o", "x.jsonl"), "not to --output"),
])
def test_engine_usage_errors(cli, samples, tmp_path, args, message):
    args = [str(tmp_path / a) if a in ("OUT", "SAVE") else a for a in args]
    res = cli("classify", samples / "cat.jpg", *args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr


def test_decode_bytes_is_decode_image_on_bytes(samples):
    from cvtool.io.decode import DecodeError, decode_bytes, decode_image

    path = samples / "cat.jpg"
    a, b = decode_image(str(path)), decode_bytes(path.read_bytes())
    assert a.orig_size == b.orig_size and a.mode == b.mode and (a.rgb == b.rgb).all()
    with pytest.raises(DecodeError, match="empty file"):
        decode_bytes(b"")
    with pytest.raises(DecodeError, match="not a recognised image format"):
        decode_bytes(b"junk")


def test_inputs_lists_manifests_and_uris(samples, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from cvtool.scale.inputs import InputError, plan

    cat, coffee = str(samples / "cat.jpg"), str(samples / "coffee.jpg")
    (tmp_path / "list.txt").write_text(f"# photos\n{cat}\n\nfile://{coffee}\n{tmp_path}/nope.jpg\n")
    items = plan([str(tmp_path / "list.txt")])
    assert [(i.source, i.kind) for i in items] == [(cat, "image"), (f"file://{coffee}", "image"),
                                                   (f"{tmp_path}/nope.jpg", "error")]
    (tmp_path / "m.csv").write_text(f"id,Path\n1,{cat}\n2,\n")
    items = plan([str(tmp_path / "m.csv")])
    assert items[0].source == cat and items[1].kind == "error" and "empty path" in items[1].error
    pq.write_table(pa.table({"uri": [f"file://{samples}"]}), tmp_path / "m.parquet")
    items = plan([str(tmp_path / "m.parquet")])  # a URI prefix is listed like a folder
    assert [i.source for i in items] == [f"file://{p}" for p in sorted(map(str, samples.glob("*.jpg")))]
    glob_items = plan([f"file://{samples}/c*.jpg"])
    assert [i.source.rsplit("/", 1)[1] for i in glob_items] == ["cat.jpg", "china.jpg", "coffee.jpg"]
    assert plan([f"file://{samples}/zz*.jpg"])[0].error == "pattern matched no files"
    (tmp_path / "bad.csv").write_text("id,label\n1,cat\n")
    with pytest.raises(InputError, match="no path column"):
        plan([str(tmp_path / "bad.csv")])


# -- on a local Ray instance ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install '.[ray]')")
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    yield ray
    ray.shutdown()


def test_classify_on_ray_gives_the_local_records(ray_local, cli, samples, tmp_path):
    inputs = [samples, *_bad_inputs(tmp_path)]
    local = cli("classify", *inputs, "--topk", "3")
    assert local.exit_code == 1
    res = cli("classify", *inputs, "--topk", "3", "--engine", "ray", "--output-dir", tmp_path / "out",
              "--batch", "4")
    assert res.exit_code == 1, res.stderr  # some inputs failed, as locally
    assert "not a recognised image format" in res.stderr and res.stdout == ""
    got = _records(tmp_path / "out")
    _same_records(jsonl(local.stdout), got)
    assert sum(not r["ok"] for r in got) == 3
    summary = json.loads((tmp_path / "out" / "_cvtool_run.json").read_text())
    assert summary["records"] == 9 and summary["failed"] == 3 and summary["inputs"] == 9
    # A second run into the same folder must say how to continue or replace it.
    again = cli("classify", samples, "--engine", "ray", "--output-dir", tmp_path / "out")
    assert again.exit_code == 2 and "--resume" in again.stderr


def test_detect_on_ray_gives_the_local_records_as_parquet(ray_local, cli, samples, tmp_path):
    inputs = [samples, *_bad_inputs(tmp_path)]
    local = cli("detect", *inputs, "--conf", "0.2")
    assert local.exit_code == 1
    res = cli("detect", *inputs, "--conf", "0.2", "--engine", "ray", "--output-dir", tmp_path / "out",
              "--output-format", "parquet", "--batch", "3")
    assert res.exit_code == 1, res.stderr
    assert all(p.suffix == ".parquet" for p in (tmp_path / "out").glob("part-*"))
    got = _records(tmp_path / "out")
    _same_records(jsonl(local.stdout), got)
    assert any(r.get("count", 0) > 0 for r in got) and sum(not r["ok"] for r in got) == 3


def test_resume_completes_a_partial_run_without_duplicates(ray_local, cli, samples, tmp_path):
    photos = sorted(map(str, samples.glob("*.jpg")))
    (tmp_path / "first.txt").write_text("\n".join(photos[:2]) + "\n")
    (tmp_path / "all.txt").write_text("\n".join(photos) + "\n")
    out = tmp_path / "out"
    first = cli("classify", tmp_path / "first.txt", "--engine", "ray", "--output-dir", out, "-q")
    assert first.exit_code == 0, first.stderr
    assert len(_records(out)) == 2
    res = cli("classify", tmp_path / "all.txt", "--engine", "ray", "--output-dir", out, "--resume")
    assert res.exit_code == 0, res.stderr
    assert "2 of 6 inputs already have records" in res.stderr
    got = _records(out)
    assert sorted(r["source"] for r in got) == photos  # each once
    assert json.loads((out / "_cvtool_run.json").read_text())["skipped_with_resume"] == 2
    done = cli("classify", tmp_path / "all.txt", "--engine", "ray", "--output-dir", out, "--resume")
    assert done.exit_code == 0 and "nothing to do" in done.stderr


def test_a_worker_killed_mid_run_still_leaves_one_record_per_input(ray_local, cli, samples, tmp_path,
                                                                    monkeypatch):
    from cvtool.scale.ray_engine import CRASH_ENV

    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))
    inputs = [samples, *_bad_inputs(tmp_path)]
    res = cli("classify", *inputs, "--engine", "ray", "--output-dir", tmp_path / "out", "--batch", "2")
    assert marker.exists(), "the inference actor was not killed"
    assert res.exit_code == 1, res.stderr
    got = _records(tmp_path / "out")
    sources = [r["source"] for r in got]
    assert len(sources) == len(set(sources)) == 9
    assert sum(r["ok"] for r in got) == 6
    assert not any("no record" in (r["error"] or "") for r in got)  # Ray retried the batch
    assert json.loads((tmp_path / "out" / "_cvtool_run.json").read_text())["records"] == 9


def test_an_input_that_kills_its_worker_every_time_gets_an_error_record(ray_local, cli, samples, tmp_path,
                                                                        monkeypatch):
    from cvtool.scale.ray_engine import POISON_ENV

    monkeypatch.setenv(POISON_ENV, "coffee.jpg")
    res = cli("classify", samples, "--engine", "ray", "--output-dir", tmp_path / "out", "--batch", "2")
    assert res.exit_code == 1, res.stderr
    got = _records(tmp_path / "out")
    sources = [r["source"] for r in got]
    assert sorted(sources) == sorted(str(p) for p in samples.glob("*.jpg"))  # each once
    lost = [r for r in got if not r["ok"]]
    assert any(r["source"].endswith("coffee.jpg") for r in lost) and len(lost) <= 2  # its batch
    assert all(r["error"].startswith("no record: Ray gave up on the batch") for r in lost)


from test_depth import tiny  # noqa: E402,F401  (fixtures: a tiny Depth Anything, a random LR-ASPP)
from test_segment import SEM, lraspp  # noqa: E402,F401


def test_depth_and_segment_on_ray_give_the_local_records(ray_local, cli, samples, tmp_path, tiny, lraspp):
    """The engine is task-generic: depth (a Hugging Face model folder) and segment (a torchvision
    state_dict) give the same records on Ray as locally."""
    # cat (780x520 for the segmenter) and astronaut (520x520) share a batch of two: one runner call per shape
    photos = [samples / "cat.jpg", samples / "astronaut.jpg", samples / "coffee.jpg", tmp_path / "missing.jpg"]
    for args in (("depth", "--weights", tiny, "--imgsz", "56"), ("segment", "--model", SEM, "--weights", lraspp)):
        local = cli(*args, *photos)
        assert local.exit_code == 1
        out = tmp_path / f"out-{args[0]}"
        res = cli(*args, *photos, "--engine", "ray", "--output-dir", out, "--batch", "2")
        assert res.exit_code == 1, res.stderr
        _same_records(jsonl(local.stdout), _records(out))
    res = cli("depth", "--weights", tiny, samples / "cat.jpg", "--engine", "ray", "--output-dir",
              tmp_path / "x", "--save", tmp_path / "pics")
    assert res.exit_code == 2 and "not supported with --engine ray" in res.stderr
    assert not (tmp_path / "pics").exists()


from test_caption import tiny_blip  # noqa: E402,F401  (fixture: a tiny BLIP built locally)


def test_caption_on_ray_gives_the_local_records(ray_local, cli, samples, tmp_path, tiny_blip):
    """caption builds its own runner: each Ray worker builds it from the factory the command
    ships (issue 14.19); the labels fallback (two bundled models, one structured input per
    picture) and a neural captioner give the local engine's records."""
    photos = [samples / "cat.jpg", samples / "coffee.jpg", tmp_path / "missing.jpg"]
    for name, args in (("labels", ("caption", "--model", "labels")),
                       ("blip", ("caption", "--weights", tiny_blip, "--max-tokens", "6"))):
        local = cli(*args, *photos)
        assert local.exit_code == 1, local.stderr
        out = tmp_path / f"out-{name}"
        res = cli(*args, *photos, "--engine", "ray", "--output-dir", out, "--batch", "2")
        assert res.exit_code == 1, res.stderr
        got = _records(out)
        _same_records(jsonl(local.stdout), got)
        assert sum(r["ok"] for r in got) == 2
    res = cli("caption", "--model", "labels", samples / "cat.jpg", "--engine", "ray", "--output-dir",
              tmp_path / "x", "--save", tmp_path / "pics")
    assert res.exit_code == 2 and "not supported with --engine ray" in res.stderr
