#!/usr/bin/env python3
"""Re-run the ```console blocks of README.md and docs/*.md, and check or rewrite their output.

Every ``$ command`` line in a console block is run in bash, and the lines after it (up to the next
``$`` line or the end of the block) are its shown output: stdout and stderr together, as a terminal
shows them. ``--check`` reports commands whose real output no longer matches; ``--write`` puts the
real output into the file.

    python docs/console.py --list                      # pages, blocks and commands
    python docs/console.py --check                     # every page, slow blocks skipped
    python docs/console.py --check --page docs/detect.md
    python docs/console.py --write --page docs/detect.md --all   # also the slow blocks

The environment a page runs in (the one the docs describe):

* the repository's own code: ``cvtool`` on PATH is a shim that runs ``python -m cvtool`` with the
  repository root first on PYTHONPATH, whatever is installed in the environment;
* a fresh work folder per page, holding a copy of ``sample_images/`` (the current directory of every
  command) and a private ``/tmp``: each ``/tmp`` in a command is rewritten to the page's own folder
  and rewritten back in the output, so pages can run in parallel and never see each other's files;
* ``CVTOOL_HOME=/tmp/cvh-docs``, empty at the start of each page, so "exported ... once" lines
  appear where the page says they do (a page may set other variables for all its commands with
  ``<!-- console-env: NAME=VALUE ... -->``); ``HF_HOME`` and ``TORCH_HOME`` inside the page's folder;
* no network: the proxy variables point at a closed local port, so a download fails at once with
  "Connection refused" on every machine, and nothing is fetched even where there is a network;
* no GPU (``CUDA_VISIBLE_DEVICES=``), as the docs were written on a CPU-only machine; ``COLUMNS=80``.

Blocks of one page run in order and share the work folder, so a block may use files an earlier block
wrote. Directives, in HTML comments (not rendered) right before a block:

* ``<!-- console-setup: DESCRIPTION`` then bash lines, then ``-->``: run before the block (with
  ``set -e``), output hidden; a failure is reported with its output. Use it for what a page needs
  but does not show (tiny local models, a clip).
* ``<!-- console: slow REASON -->``: run only with ``--all`` (tests skip it). Keep rare.
* ``<!-- console: skip REASON -->``: never run (shown for illustration only, e.g. needs a GPU).
* ``<!-- console-ignore: REGEX -->``: what the (Python) regular expression matches is left out of
  the comparison, for figures the general rules below cannot recognise (timings in CSV columns).
* ``<!-- console: tolerance 2% REASON -->``: the block's decimal figures match when within 2% of
  the shown ones (relative; values below 1e-4 in size count as equal), instead of to 3 significant
  digits; the words and whole numbers around them must still match exactly. For figures that
  differ from machine to machine beyond float noise (an attack's many steps amplify the last bits
  of an OpenCV resize or a NumPy/torch sum). The page says so where it shows them.
* ``<!-- console-teardown ... -->`` right after a block: bash lines run after it.

``--write`` rewrites only the outputs that really changed; ``--write --refresh`` rewrites every
output that ran (new timings too). Comparison normalises both sides; the file keeps real output:
timings (``time_ms`` objects, ``*_ms``/``*_s`` fields, ``0.52 s``, ``12.3/s``, ``ms``/``min`` figures),
cache digests (``-85953e8dbaa066ec``), temporary names (``tmpab12cd``), the site-packages folder,
floats to 3 significant digits (and anything below 1e-4 in size as one value), runs of spaces and
table rules. Exit code: 0 all matched, 1 some differed or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGES = ["README.md", "docs/*.md"]
COMMAND_TIMEOUT = 900  # seconds for one command; a hung command fails the page, not the run

# ---------------------------------------------------------------------------------------- parsing


@dataclass
class Command:
    line: int  # 1-based line of the `$ ` line in the page
    text: str  # the command, continuation lines included, without the `$ ` prefix
    n_lines: int  # lines the command occupies in the file
    output: list[str]  # shown output lines
    out_start: int = 0  # 0-based index in the page's lines of the first output line


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the ```console fence
    commands: list[Command]
    setup: list[str] = field(default_factory=list)
    teardown: list[str] = field(default_factory=list)
    slow: str | None = None
    skip: str | None = None
    ignore: list[str] = field(default_factory=list)  # regexes blanked out before comparing
    tolerance: float | None = None  # relative tolerance on decimal figures (`console: tolerance 2%`)


_DIRECTIVE = re.compile(r"<!--\s*console(-setup|-teardown|-env|-ignore)?\s*:?\s*(.*?)\s*-->", re.S)
_ENV = re.compile(r"<!--\s*console-env\s*:?\s*(.*?)\s*-->", re.S)


_SCRIPT = re.compile(r"<!--\s*console-(?:setup|teardown)[ \t]*:?[^\n]*\n(.*?)-->", re.S)


def _script(comment: str) -> str:
    """The bash lines of a setup/teardown comment: the lines after the directive's own line (which
    may hold a description) up to the closing `-->`."""
    m = _SCRIPT.search(comment)
    return m.group(1).strip("\n") if m else ""


def page_env(text: str) -> list[str]:
    """The page's `<!-- console-env: NAME=VALUE ... -->` lines, wherever they are."""
    return [m.group(1) for m in _ENV.finditer(text)]


_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def _complete(text: str) -> bool:
    """Whether bash sees `text` as a whole command (quotes closed, no trailing backslash)."""
    if text.endswith("\\"):
        return False
    r = subprocess.run(["bash", "-n"], input=text + "\n", capture_output=True, text=True)
    return not ("unexpected EOF" in r.stderr or "unexpected end of file" in r.stderr)


def _comments_before(lines: list[str], i: int) -> list[str]:
    """The HTML comments directly above line i (blank lines allowed between them)."""
    found: list[str] = []
    j = i - 1
    while j >= 0:
        if not lines[j].strip():
            j -= 1
            continue
        if lines[j].rstrip().endswith("-->"):
            k = j
            while k >= 0 and "<!--" not in lines[k]:
                k -= 1
            if k < 0:
                break
            found.insert(0, "\n".join(lines[k:j + 1]))
            j = k - 1
            continue
        break
    return found


def _comments_after(lines: list[str], i: int) -> list[str]:
    found: list[str] = []
    j = i + 1
    while j < len(lines):
        if not lines[j].strip():
            j += 1
            continue
        if lines[j].lstrip().startswith("<!--"):
            k = j
            while k < len(lines) and "-->" not in lines[k]:
                k += 1
            found.append("\n".join(lines[j:k + 1]))
            j = k + 1
            continue
        break
    return found


def parse_page(page: str, text: str) -> list[Block]:
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start = i
        block = Block(page, i + 1, [])
        for c in _comments_before(lines, start):
            m = _DIRECTIVE.search(c)
            if not m:
                continue
            kind, body = m.group(1), m.group(2)
            if kind == "-setup":
                block.setup.append(_script(c))
            elif kind == "-ignore":
                re.compile(body)  # a bad pattern fails here, naming nothing else
                block.ignore.append(body)
            elif kind is None:
                word, _, reason = body.partition(" ")
                if word == "slow":
                    block.slow = reason or "slow"
                elif word == "skip":
                    block.skip = reason or "skip"
                elif word == "tolerance":
                    m_tol = re.fullmatch(r"(\d+(?:\.\d+)?)%(?:\s.*)?", reason, re.S)
                    if not m_tol:
                        raise ValueError(f"{page}:{start + 1}: expected 'console: tolerance N% REASON', "
                                         f"got 'console: {body}'")
                    block.tolerance = float(m_tol.group(1)) / 100
                else:
                    raise ValueError(f"{page}:{start + 1}: unknown directive 'console: {body}'")
        i += 1
        cmd: Command | None = None
        while i < len(lines) and not lines[i].startswith("```"):
            line = lines[i]
            if line.startswith("$ "):
                first = i
                text_ = line[2:]
                i += 1
                heredocs = [m.group(2) for m in _HEREDOC.finditer(text_)]
                for tag in heredocs:  # a heredoc body runs to its terminator line
                    while i < len(lines) and lines[i] != tag and not lines[i].startswith("```"):
                        text_ += "\n" + lines[i]
                        i += 1
                    if i < len(lines) and lines[i] == tag:
                        text_ += "\n" + lines[i]
                        i += 1
                while not heredocs and not _complete(text_) and i < len(lines) \
                        and not lines[i].startswith("```"):
                    text_ += "\n" + lines[i]
                    i += 1
                cmd = Command(first + 1, text_, i - first, [], out_start=i)
                block.commands.append(cmd)
                continue
            if cmd is None:
                raise ValueError(f"{page}:{i + 1}: output before the first `$ ` line of a console block")
            cmd.output.append(line)
            i += 1
        end = i
        for c in _comments_after(lines, end):
            m = _DIRECTIVE.search(c)
            if m and m.group(1) == "-teardown":
                block.teardown.append(_script(c))
        blocks.append(block)
        i += 1
    return blocks


# --------------------------------------------------------------------------------- normalisation

_NORMALISE = [
    (re.compile(r'"time_ms"\s*:\s*\{[^{}]*\}'), '"time_ms":<t>'),
    (re.compile(r'("[A-Za-z0-9_]*(?:_ms|_s|seconds|per_s|time|elapsed)"\s*:\s*)-?[\d.]+(?:e[-+]?\d+)?'),
     r"\1<t>"),
    (re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?\s*(?:ms|s|min|µs|us|h)\b"), "<t>"),
    (re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?\s*(?:/s|images/s|img/s|it/s)"), "<t>/s"),
    (re.compile(r"-[0-9a-f]{16}\b"), "-<digest>"),
    (re.compile(r"interrupted after \d+ records"), "interrupted after <n> records"),  # when Ctrl-C came
    (re.compile(r"\btmp[A-Za-z0-9_]{6,}"), "<tmpname>"),
    (re.compile(r"\S*/(?:site|dist)-packages/"), "<site-packages>/"),
]
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])|(?<![\w.])-?\d+[eE][-+]?\d+(?![\w.])")


def _float(m: re.Match) -> str:
    x = float(m.group(0))
    if abs(x) < 1e-4:
        return "~0"
    return f"{x:.3g}"


_MARK = "\x00"  # brackets a float kept whole for a comparison with a tolerance


def normalise(text: str, keep_floats: bool = False) -> str:
    """The text as compared: timings, digests, temporary names blanked; floats to 3 significant
    digits, or (``keep_floats``) kept whole between two ``_MARK`` characters for :func:`same`."""
    for rx, rep in _NORMALISE:
        text = rx.sub(rep, text)
    text = _FLOAT.sub((lambda m: _MARK + m.group(0) + _MARK) if keep_floats else _float, text)
    out = []
    for line in text.split("\n"):
        line = re.sub(r"[─━═]+", "─", line)  # table rules stretch with their columns
        line = re.sub(r"[ \t]+", " ", line).strip()
        out.append(line)
    while out and not out[-1]:
        out.pop()
    # cvtool's own messages (stderr) and the records (stdout, often through jq, which writes when
    # it ends) may interleave differently from run to run: each keeps its order, not their mix.
    mine = [line for line in out if line.startswith("cvtool:")]
    return "\n".join([line for line in out if not line.startswith("cvtool:")] + (["--"] + mine if mine else []))


def same(shown: str, now: str, tolerance: float | None = None) -> bool:
    """Whether two outputs match: after :func:`normalise`; with a ``tolerance``, every decimal
    figure within that relative distance of the shown one (the rest of the text exactly equal)."""
    if tolerance is None:
        return normalise(shown) == normalise(now)
    a, b = normalise(shown, keep_floats=True).split(_MARK), normalise(now, keep_floats=True).split(_MARK)
    if len(a) != len(b) or a[0::2] != b[0::2]:
        return False
    for x, y in zip(map(float, a[1::2]), map(float, b[1::2])):
        if max(abs(x), abs(y)) >= 1e-4 and abs(x - y) > tolerance * max(abs(x), abs(y)):
            return False
    return True


# ------------------------------------------------------------------------------------- running


@dataclass
class Result:
    block: Block
    command: Command | None
    actual: list[str] | None  # None: not run
    error: str | None = None  # a setup/teardown failure or timeout
    seconds: float = 0.0


class PageRunner:
    def __init__(self, page: str, keep: bool = False):
        self.page = page
        self.work = Path(tempfile.mkdtemp(prefix="cvdocs-")).resolve()
        self.keep = keep
        self.tmp = self.work / "tmp"
        self.cwd = self.work / "repo"
        self.bin = self.work / "bin"
        for d in (self.tmp, self.cwd, self.bin, self.work / "hf", self.work / "torch"):
            d.mkdir(parents=True)
        # The commands run in a stand-in for the repository root: sample_images/ copied (so that
        # `find sample_images` and relative sources behave as in the repository), the source folders
        # linked; what a command writes (runs/, out.json, ...) lands here, not in the repository, and
        # nothing a developer left in the root (an old runs/) is seen.
        shutil.copytree(ROOT / "sample_images", self.cwd / "sample_images")
        for name in ("cvtool", "docs", "tests", "benchmarks", "pyproject.toml", "README.md"):
            if (ROOT / name).exists():
                (self.cwd / name).symlink_to(ROOT / name)
        py = sys.executable
        shims = {
            # the console script's own entry point, so that --help says "cvtool", not "python -m cvtool"
            "cvtool": f'exec "{py}" -c "import sys; sys.argv[0] = \'cvtool\'; from cvtool.cli.app import main; '
                      f'sys.exit(main())" "$@"\n',
            "python3": f'exec "{py}" "$@"\n',
            "python": f'exec "{py}" "$@"\n',
        }
        for name, body in shims.items():
            p = self.bin / name
            p.write_text("#!/bin/sh\n" + body)
            p.chmod(0o755)
        env = dict(os.environ)
        for k in list(env):
            # the caller's cvtool, Hugging Face and torch settings (a test session sets
            # HF_HUB_OFFLINE, for one) must not change what the pages show
            if k.startswith(("CVTOOL_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_")) \
                    or k in ("PYTHONSTARTUP", "FORCE_COLOR"):
                del env[k]
        env.update({
            "PATH": os.pathsep.join([str(self.bin), str(Path(py).parent), env.get("PATH", "/usr/bin:/bin")]),
            "PYTHONPATH": os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
            "CVTOOL_HOME": str(self.tmp / "cvh-docs"),
            "TMPDIR": str(self.tmp),
            "HF_HOME": str(self.work / "hf"),
            "TORCH_HOME": str(self.work / "torch"),
            # No network, the same way on every machine: downloads go to a closed local port and
            # fail at once with "Connection refused" (the docs show what a user without network sees).
            **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                 "all_proxy", "ALL_PROXY")},
            "no_proxy": "", "NO_PROXY": "",
            "CUDA_VISIBLE_DEVICES": "",
            "COLUMNS": "80",
            "LINES": "40",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        self.env = env

    def set_env(self, assignments: list[str]) -> None:
        """Page-wide variables from `<!-- console-env: NAME=VALUE ... -->` (shell words)."""
        import shlex

        for a in assignments:
            for word in shlex.split(a):
                name, eq, value = word.partition("=")
                if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise ValueError(f"{self.page}: console-env: expected NAME=VALUE, got {word!r}")
                self.env[name] = self.to_work(value)

    def to_work(self, text: str) -> str:
        return re.sub(r"(?<![\w./])/tmp(?=/|\b)", str(self.tmp), text)

    def from_work(self, text: str) -> str:
        return text.replace(str(self.tmp), "/tmp").replace(str(self.cwd), "/path/to/cvtool")

    def run(self, script: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        try:
            r = subprocess.run(["bash", "-c", self.to_work(script)], cwd=self.cwd, env=self.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout)
            out = r.stdout.decode("utf-8", "replace")
            return r.returncode, self.from_work(out)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            return 124, self.from_work(out) + f"\n[timed out after {timeout:.0f} s]"

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def _lines(out: str) -> list[str]:
    lines = [line.rstrip() for line in out.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def run_page(page: str, blocks: list[Block], run_slow: bool, keep: bool = False,
             log=None) -> list[Result]:
    results: list[Result] = []
    runner = PageRunner(page, keep)
    runner.set_env(page_env((ROOT / page).read_text()))
    try:
        for b in blocks:
            if b.skip or (b.slow and not run_slow):
                results.extend(Result(b, c, None) for c in b.commands)
                continue
            for s in b.setup:
                rc, out = runner.run("set -e\n" + s)
                if rc != 0:
                    results.append(Result(b, None, None, f"hidden setup failed (exit {rc}):\n{out[-2000:]}"))
            for c in b.commands:
                t0 = time.monotonic()
                rc, out = runner.run(c.text)
                r = Result(b, c, _lines(out), seconds=time.monotonic() - t0)
                if rc == 124 and out.endswith("s]"):
                    r.error = "timed out"
                results.append(r)
                if log:
                    log(f"{page}:{c.line}: {r.seconds:.1f} s  $ {c.text.splitlines()[0][:90]}")
            for s in b.teardown:
                rc, out = runner.run("set -e\n" + s)
                if rc != 0:
                    results.append(Result(b, None, None, f"hidden teardown failed (exit {rc}):\n{out[-2000:]}"))
    finally:
        if keep:
            print(f"{page}: work folder kept at {runner.work}", file=sys.stderr)
        runner.close()
    return results


# ---------------------------------------------------------------------------------- reporting


def _ignored(block: Block, lines: list[str]) -> str:
    text = "\n".join(lines)
    for rx in block.ignore:
        text = re.sub(rx, "<ignored>", text)
    return text


def _compared(block: Block, lines: list[str]) -> str:
    return normalise(_ignored(block, lines))


def _same(block: Block, shown: list[str], now: list[str]) -> bool:
    return same(_ignored(block, shown), _ignored(block, now), block.tolerance)


def differences(results: list[Result], max_lines: int = 30) -> list[str]:
    """One report per command whose output no longer matches (after normalisation)."""
    reports = []
    for r in results:
        if r.command is None:
            if r.error:
                reports.append(f"{r.block.page}:{r.block.line}: {r.error}")
            continue
        if r.actual is None:
            continue
        c = r.command
        head = f"{r.block.page}:{c.line}: $ {c.text.splitlines()[0]}"
        if r.error:
            reports.append(f"{head}\n  {r.error}")
            continue
        if _same(r.block, c.output, r.actual):
            continue
        want, got = _compared(r.block, c.output), _compared(r.block, r.actual)
        if want == got:  # equal to 3 digits, but off by more than the block's tolerance
            want, got = (normalise(_ignored(r.block, x), keep_floats=True).replace(_MARK, "")
                         for x in (c.output, r.actual))
            head += f"  (beyond the block's {r.block.tolerance:.3g} relative tolerance)"
        diff = list(difflib.unified_diff(want.split("\n"), got.split("\n"), "shown", "now", n=1,
                                         lineterm=""))
        if len(diff) > max_lines:
            diff = diff[:max_lines] + [f"... ({len(diff) - max_lines} more diff lines)"]
        reports.append(head + "\n" + "\n".join("  " + d for d in diff))
    return reports


def rewrite(path: Path, results: list[Result], parsed_text: str, refresh: bool = False) -> bool:
    """Put the real output of the commands that ran into the page; True when the file changed.
    An output that matches after normalisation (only timings, digests or float noise differ) is
    kept as it is, so that a rewrite shows only real changes, unless `refresh`. A page edited while
    its commands ran is left alone (the line numbers no longer hold)."""
    if path.read_text() != parsed_text:
        raise RuntimeError(f"{path}: changed while its commands ran; not rewritten (run again)")
    lines = parsed_text.split("\n")
    edits = sorted(((r.command.out_start, len(r.command.output), r.actual) for r in results
                    if r.command is not None and r.actual is not None and not r.error
                    and (refresh or not _same(r.block, r.command.output, r.actual))),
                   key=lambda e: e[0], reverse=True)
    for start, n, new in edits:
        lines[start:start + n] = new
    text = "\n".join(lines)
    if text != parsed_text:
        path.write_text(text)
        return True
    return False


# --------------------------------------------------------------------------------------- main


def find_pages(patterns: list[str]) -> list[str]:
    pages: list[str] = []
    for pat in patterns:
        matches = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pat)) if any(
            ch in pat for ch in "*?[") else [pat]
        for m in matches:
            full = (ROOT / m).resolve()
            if not full.is_file():
                raise FileNotFoundError(m)
            rel = str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(full)
            if rel not in pages:
                pages.append(rel)
    return pages


def check_pages(pages: list[str], run_slow: bool = False, jobs: int = 1, write: bool = False,
                keep: bool = False, log=None, refresh: bool = False) -> tuple[list[str], dict[str, float]]:
    """Run the pages; returns (difference reports, seconds per page). Used by tests/test_docs.py."""
    texts = {p: (ROOT / p).read_text() for p in pages}
    parsed = {p: parse_page(p, texts[p]) for p in pages}

    def one(page: str):
        t0 = time.monotonic()
        res = run_page(page, parsed[page], run_slow, keep, log)
        return page, res, time.monotonic() - t0

    reports: list[str] = []
    seconds: dict[str, float] = {}
    todo = [p for p in pages if any(b.commands for b in parsed[p])]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for page, res, secs in pool.map(one, todo):
            seconds[page] = secs
            reports.extend(differences(res))
            try:
                if write and rewrite(ROOT / page, res, texts[page], refresh) and log:
                    log(f"{page}: rewritten")
            except RuntimeError as e:
                reports.append(str(e))
    return reports, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="docs/console.py", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report commands whose output changed (default)")
    mode.add_argument("--write", action="store_true", help="rewrite the shown output in place")
    mode.add_argument("--list", action="store_true", help="list pages, blocks and commands; run nothing")
    ap.add_argument("--page", action="append", metavar="FILE",
                    help="only this page (repeatable; globs allowed); default README.md and docs/*.md")
    ap.add_argument("--all", action="store_true", help="also run blocks marked slow")
    ap.add_argument("--refresh", action="store_true",
                    help="with --write: also rewrite outputs that differ only in timings, digests or float noise")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="pages run in parallel (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep each page's work folder (to debug)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-command progress on stderr")
    a = ap.parse_args(argv)
    try:
        pages = find_pages(a.page or DEFAULT_PAGES)
    except FileNotFoundError as e:
        print(f"console.py: error: no such page: {e}", file=sys.stderr)
        return 2
    if a.list:
        for p in pages:
            for b in parse_page(p, (ROOT / p).read_text()):
                tag = f" [slow: {b.slow}]" if b.slow else f" [skip: {b.skip}]" if b.skip else ""
                setup = " [setup]" if b.setup else ""
                setup += f" [tolerance {b.tolerance * 100:g}%]" if b.tolerance is not None else ""
                print(f"{p}:{b.line}: block, {len(b.commands)} command(s){tag}{setup}")
                for c in b.commands:
                    print(f"  {p}:{c.line}: $ {c.text.splitlines()[0][:100]}")
        return 0
    log = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    if a.refresh and not a.write:
        ap.error("--refresh goes with --write")
    reports, seconds = check_pages(pages, a.all, a.jobs, a.write, a.keep, log, a.refresh)
    for r in reports:
        print(r + "\n")
    total = time.monotonic() - t0
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    per = ", ".join(f"{p} {s:.0f} s" for p, s in seconds.items())
    verb = "rewritten" if a.write else "checked"
    print(f"console.py: {len(seconds)} page(s) {verb} in {total:.0f} s wall, {ru.ru_utime + ru.ru_stime:.0f} s CPU "
          f"({per}); {len(reports)} difference(s)", file=sys.stderr)
    return 1 if reports else 0


if __name__ == "__main__":
    sys.exit(main())
