"""The docs test themselves: every console block in README.md and docs/*.md is re-run by
docs/console.py and its shown output must still be what the command prints (timings, cache digests
and the last float digits aside). Blocks marked `<!-- console: slow ... -->` run only with
`python docs/console.py --check --all`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _console():
    spec = importlib.util.spec_from_file_location("cvtool_docs_console", ROOT / "docs" / "console.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


console = _console()


# ---- the script itself, on small pages written here ------------------------------------------

PAGE = """# A page

<!-- console-setup
printf 'hello\\n' > /tmp/greeting.txt
-->

```console
$ cat /tmp/greeting.txt
hello
$ python3 -c "
print(6 * 7)"
41
$ cat <<'EOF'
a heredoc line
EOF
a heredoc line
```

<!-- console: slow because it is -->
```console
$ echo slow
not run without --all
```
"""


def test_parse_commands_outputs_and_directives(tmp_path):
    blocks = console.parse_page("page.md", PAGE)
    assert [len(b.commands) for b in blocks] == [3, 1]
    first, slow = blocks
    assert first.setup == ["printf 'hello\\n' > /tmp/greeting.txt"]
    assert [c.text for c in first.commands] == [
        "cat /tmp/greeting.txt", 'python3 -c "\nprint(6 * 7)"', "cat <<'EOF'\na heredoc line\nEOF"]
    assert [c.output for c in first.commands] == [["hello"], ["41"], ["a heredoc line"]]
    assert [c.line for c in first.commands] == [8, 10, 13]
    assert slow.slow == "because it is" and slow.commands[0].output == ["not run without --all"]


def test_check_reports_page_line_and_diff_and_write_fixes_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    reports, _ = console.check_pages([str(page)])
    assert len(reports) == 1, reports  # 6 * 7 is 42; the slow block did not run
    assert reports[0].startswith(f"{page}:10: $ python3 -c")
    assert "-41" in reports[0] and "+42" in reports[0]
    reports, _ = console.check_pages([str(page)], write=True)
    assert "\n42\n" in page.read_text() and "not run without --all" in page.read_text()
    assert console.check_pages([str(page)])[0] == []
    # --all runs the slow block too, and rewriting keeps the `$` lines and the directives
    console.check_pages([str(page)], run_slow=True, write=True)
    text = page.read_text()
    assert "$ echo slow\nslow\n```" in text and "<!-- console: slow because it is -->" in text


def test_each_page_gets_its_own_tmp_and_home(tmp_path):
    page = tmp_path / "page.md"
    marker = f"/tmp/cvdocs-test-marker-{os.getpid()}"
    page.write_text(f"```console\n$ echo $CVTOOL_HOME; touch {marker}; ls {marker}\n```\n")
    console.check_pages([str(page)], write=True)
    # shown as /tmp, but really inside the page's own folder, which is gone afterwards
    assert page.read_text().split("\n")[2:4] == ["/tmp/cvh-docs", marker]
    assert not Path(marker).exists()


@pytest.mark.parametrize("shown, now", [
    ("cvtool: 6 records in 0.08 s (73.4/s)", "cvtool: 6 records in 0.31 s (19.2/s)"),
    ('{"time_ms":{"decode":16.351,"inference":8.3}, "score":0.395269}',
     '{"time_ms":{"decode":2.1,"inference":30.0}, "score":0.3952691}'),
    ("cached at /tmp/cvh-docs/onnx/efficientnet_lite0-85953e8dbaa066ec.onnx",
     "cached at /tmp/cvh-docs/onnx/efficientnet_lite0-0123456789abcdef.onnx"),
    ("from /work/main/.venv/lib/python3.11/site-packages/pkg/x.pb",
     "from /usr/lib/python3/dist-packages/pkg/x.pb"),
    ("max diff 9.8e-07", "max diff 2.4e-07"),
    ("│ a   │ 1.23 ms │", "│ a │ 10.5 ms │"),
])
def test_normalise_forgives_timings_digests_and_float_noise(shown, now):
    assert console.normalise(shown) == console.normalise(now)


@pytest.mark.parametrize("shown, now", [
    ('{"label":"tiger cat","score":0.395269}', '{"label":"tabby","score":0.395269}'),
    ('"score":0.395', '"score":0.401'),  # the third significant digit counts
    ("6 records", "7 records"),
    ("exit=0", "exit=1"),
])
def test_normalise_keeps_real_changes(shown, now):
    assert console.normalise(shown) != console.normalise(now)


def test_a_block_with_a_tolerance_forgives_figures_within_it_and_says_so_beyond(tmp_path):
    """Issue 24.17: `<!-- console: tolerance N% -->` compares the block's decimal figures within
    N% (a last-digit drift such as l2 8.38 -> 8.42 matches; 3 significant digits would not), and
    still the words, whole numbers and figures beyond it."""
    assert not console.same('"l2":8.384045', '"l2":8.421337')
    assert console.same('"l2":8.384045', '"l2":8.421337', 0.01)
    assert console.same('"linf":0.00001,"l2":8.38', '"linf":0.00009,"l2":8.40', 0.01)
    assert not console.same('"l2":8.384045', '"l2":8.6', 0.01)
    assert not console.same('"label":"ski","l2":8.38', '"label":"alp","l2":8.38', 0.01)
    assert not console.same('"linf_255":4,"l2":8.38', '"linf_255":5,"l2":8.38', 0.01)
    assert not console.same("8.38 8.38", "8.38", 0.01)
    page = tmp_path / "page.md"
    page.write_text("<!-- console: tolerance 1% an attack's last digits differ by machine -->\n"
                    "```console\n$ echo l2 8.42\nl2 8.38\n```\n\n"
                    "<!-- console: tolerance 1% -->\n```console\n$ echo l2 8.60\nl2 8.38\n```\n")
    blocks = console.parse_page(str(page), page.read_text())
    assert [b.tolerance for b in blocks] == [0.01, 0.01]
    reports, _ = console.check_pages([str(page)], write=True)
    assert len(reports) == 1 and ":9: $ echo l2 8.60" in reports[0], reports
    # the rewrite leaves the output within the tolerance as it was, and fixes the other one
    assert page.read_text().count("l2 8.38") == 1 and "\nl2 8.60\n" in page.read_text()
    with pytest.raises(ValueError, match="tolerance N%"):
        console.parse_page("p.md", "<!-- console: tolerance lots -->\n```console\n$ true\n```\n")


# ---- the docs ------------------------------------------------------------------------------


def test_the_readme_names_every_optional_extra_and_what_needs_it():
    """Issue 24.15: the README did not say that `cvtool train digits` needs scikit-learn, which
    the base install lacks. Every extra in pyproject.toml (but the tests' own) is named in the
    README's install lines, with the package it is there for (its first)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    for name, packages in extras.items():
        if name == "test":
            continue
        assert f'.[{name}]"' in readme or f"cvtool[{name}]" in readme, f"README.md: no install line for [{name}]"
        dist = packages[0].split(">")[0].split("[")[0].split("=")[0].strip()
        assert dist in readme, f"README.md: [{name}] installs {dist}, which it never names"
    assert "`cvtool train digits`" in readme and "scikit-learn" in readme




@pytest.mark.skipif(shutil.which("jq") is None, reason="the docs' commands use jq (apt-get install jq)")
def test_every_shown_command_still_prints_what_the_docs_show():
    pages = console.find_pages(console.DEFAULT_PAGES)
    jobs = min(4, os.cpu_count() or 1)
    t0 = time.monotonic()
    reports, seconds = console.check_pages(pages, jobs=jobs)
    took = time.monotonic() - t0
    slowest = ", ".join(f"{p} {s:.0f} s" for p, s in sorted(seconds.items(), key=lambda x: -x[1])[:4])
    assert not reports, (f"{len(reports)} console command(s) in the docs no longer print what is shown "
                         "(rewrite with `python docs/console.py --write --page PAGE` after checking the "
                         "change is right):\n\n" + "\n\n".join(reports))
    print(f"docs checked in {took:.0f} s ({slowest})")


def test_ignore_directive_leaves_out_what_its_pattern_matches(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- console-ignore: (?<=row,)\\d+ -->\n```console\n$ echo row,$((6 * 7)),end\nrow,13,end\n```\n")
    assert console.check_pages([str(page)])[0] == []
    page.write_text("```console\n$ echo row,$((6 * 7)),end\nrow,13,end\n```\n")
    assert len(console.check_pages([str(page)])[0]) == 1
