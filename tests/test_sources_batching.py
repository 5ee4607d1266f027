"""Input expansion (files, folders, globs, stdin) and the ordered, bounded pipeline."""

from __future__ import annotations

import io
import random
import threading
import time

from cvtool.io.sources import expand
from cvtool.runtime.batching import ordered_map, windows


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_folder_is_recursive_sorted_and_images_only(tmp_path):
    for rel in ["b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", "sub/e.json"]:
        _touch(tmp_path / rel)
    got = [(s.path[len(str(tmp_path)) + 1:], s.kind) for s in expand([str(tmp_path)])]
    assert got == [("a.PNG", "image"), ("b.jpg", "image"), ("sub/c.jpeg", "image"),
                   ("sub/deeper/d.webp", "image")]


def test_empty_folder_missing_path_and_unmatched_glob_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    got = list(expand([str(tmp_path / "empty"), str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")]))
    assert [s.kind for s in got] == ["error"] * 3
    assert "no image files" in got[0].error
    assert "no such file" in got[1].error
    assert "matched no files" in got[2].error


def test_glob_sorted_and_directory_named_like_an_image_is_an_error(tmp_path):
    _touch(tmp_path / "b.jpg")
    _touch(tmp_path / "a.jpg")
    (tmp_path / "x.jpg").mkdir()
    got = list(expand([str(tmp_path / "*.jpg")]))
    assert [s.path.rsplit("/", 1)[1] for s in got] == ["a.jpg", "b.jpg", "x.jpg"]
    assert [s.kind for s in got] == ["image", "image", "error"]
    assert "is a directory" in got[2].error


def test_videos_are_recognised_by_extension(tmp_path):
    _touch(tmp_path / "clip.MP4")
    assert [s.kind for s in expand([str(tmp_path / "clip.MP4")])] == ["video"]


def test_stdin_lists_paths_one_per_line(tmp_path):
    a, b = _touch(tmp_path / "a.jpg"), _touch(tmp_path / "b.jpg")
    stdin = io.StringIO(f"{b}\n\n{a}\r\n{tmp_path / 'gone.jpg'}\n")
    got = list(expand(["-"], stdin=stdin))
    assert [s.path for s in got] == [str(b), str(a), str(tmp_path / "gone.jpg")]
    assert [s.kind for s in got] == ["image", "image", "error"]


def test_ordered_map_keeps_order_under_random_delays():
    def job(i):
        def run():
            time.sleep(random.random() * 0.003)
            return i
        return run
    assert list(ordered_map((job(i) for i in range(200)), workers=4, depth=8)) == list(range(200))


def test_ordered_map_bounds_work_in_flight():
    """A slow consumer must not let the producer run ahead: memory stays bounded."""
    made = []
    lock = threading.Lock()

    def jobs():
        for i in range(100):
            with lock:
                made.append(i)
            yield lambda i=i: i

    it = ordered_map(jobs(), workers=2, depth=4)
    first = next(it)
    time.sleep(0.2)
    assert first == 0
    assert len(made) <= 4 + 2, f"producer ran ahead: {len(made)} jobs created"
    assert list(it) == list(range(1, 100))


def test_ordered_map_reraises_producer_errors():
    def jobs():
        yield lambda: 1
        raise RuntimeError("boom")

    it = ordered_map(jobs(), workers=1, depth=2)
    assert next(it) == 1
    try:
        next(it)
    except RuntimeError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("the producer's error was swallowed")


def test_windows_batches_ready_items_and_keeps_failures_in_place():
    items = ["ok1", "BAD", "ok2", "ok3", "BAD2", "ok4", "ok5"]
    got = list(windows(items, 2, lambda s: s.startswith("ok")))
    assert got == [["ok1", "BAD", "ok2"], ["ok3", "BAD2", "ok4"], ["ok5"]]
    assert [x for w in got for x in w] == items


def test_windows_flush_a_long_run_of_failures():
    got = list(windows(["BAD"] * 100, 8, lambda s: False))
    assert sum(len(w) for w in got) == 100 and max(len(w) for w in got) <= 32
