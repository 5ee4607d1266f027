"""Finding, checking and loading weight files.

Resolution order for a registered model: ``--weights PATH`` > the user cache
(``$CVTOOL_HOME/weights``) > a pip package that ships the file > a download from the official
source (only when online and not disabled with ``CVTOOL_OFFLINE=1``). Files are verified by
sha256 where the digest (or torchvision's 8-hex prefix) is known, and checkpoints are always
loaded with ``weights_only=True``: cvtool never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cvtool.models.registry import ModelSpec


class WeightsError(Exception):
    """Weights could not be found, fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    origin: str  # "argument" | "cache" | "package" | "download" | "hf-cache"
    sha256: str
    revision: str | None = None  # Hugging Face folders: see hf_revision_of


def cache_home() -> Path:
    """``$CVTOOL_HOME`` or the platform's user cache directory + ``/cvtool``."""
    env = os.environ.get("CVTOOL_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cvtool"


def weights_dir() -> Path:
    return cache_home() / "weights"


def offline() -> bool:
    return os.environ.get("CVTOOL_OFFLINE", "").lower() in ("1", "true", "yes")


_sha_memo: dict[str, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered across runs in ``$CVTOOL_HOME/digests.json`` by path, size
    and modification time (hashing a 67 MB weights file on every start costs ~50 ms)."""
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    if key in _sha_memo:
        return _sha_memo[key]
    store = cache_home() / "digests.json"
    known = _read_digests(store)
    if key not in known:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        known[key] = h.hexdigest()
        _write_digests(store, known)
    _sha_memo[key] = known[key]
    return known[key]


def _read_digests(store: Path) -> dict[str, str]:
    import json

    try:
        data = json.loads(store.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digests(store: Path, known: dict[str, str]) -> None:
    """Best effort, atomic; a read-only cache just means hashing again next time."""
    import json

    tmp = None
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store.parent, prefix=".digests.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(list(known.items())[-256:]), fh)
        os.replace(tmp, store)
    except OSError:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


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
    path = Path(obj() if callable(obj) else obj)
    return path if path.is_file() else None


def cached_file(spec: ModelSpec) -> Path:
    return weights_dir() / spec.weights.filename


def how_to_get(spec: ModelSpec) -> str:
    w = spec.weights
    if w.hf_repo:
        return (f"on a machine with internet run `cvtool models pull {spec.name}` (it downloads "
                f"{w.hf_repo} from the Hugging Face Hub into Hugging Face's cache and prints the "
                f"folder), copy that folder here and run `cvtool models import {spec.name} FOLDER`; "
                f"or pass the folder with --weights FOLDER")
    ways = []
    if w.package:
        ways.append(f"`pip install {w.package}`")
    if w.url:
        ways.append(f"on a machine with internet run `cvtool models pull {spec.name}`, then copy "
                    f"{w.filename} here and run `cvtool models import {spec.name} FILE`")
    ways.append("or pass a weights file with --weights PATH")
    return "; ".join(ways)


def resolve(spec: ModelSpec, weights_path: str | os.PathLike | None = None,
            download: bool = True, revision: str | None = None) -> ResolvedWeights:
    """Find the weights for ``spec`` following the documented order (``revision``: a Hugging
    Face commit, tag or branch to pin, for Hugging Face models)."""
    if spec.weights.hf_repo:
        return _resolve_hf(spec, weights_path, download, revision)
    if revision is not None:
        raise WeightsError(f"--revision applies to Hugging Face models; {spec.name!r} is not one")
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise WeightsError(f"--weights {weights_path}: no such file")
        return ResolvedWeights(p, "argument", sha256_file(p))
    cached = cached_file(spec)
    if cached.is_file():
        return ResolvedWeights(cached, "cache", sha256_file(cached))
    pkg = _package_file(spec)
    if pkg is not None:
        if spec.weights.converter:  # a foreign format (e.g. a TF graph): convert once into the cache
            convert(spec, pkg, cached)
            return ResolvedWeights(cached, "package", sha256_file(cached))
        return ResolvedWeights(pkg, "package", sha256_file(pkg))
    if download and spec.weights.url and not offline():
        path = fetch(spec)
        return ResolvedWeights(path, "download", sha256_file(path))
    why = "offline (CVTOOL_OFFLINE is set)" if offline() and spec.weights.url else "nothing found"
    raise WeightsError(
        f"no weights for model {spec.name!r}: {why} (looked in {cached}"
        f"{', package ' + spec.weights.package if spec.weights.package else ''}). "
        f"To get them: {how_to_get(spec)}.")


def convert(spec: ModelSpec, source: Path, dest: Path) -> Path:
    """Run the registry's converter for a foreign weights format (e.g. a TF frozen graph)."""
    module, _, func = spec.weights.converter.partition(":")
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"cvtool: converting {spec.name} weights from {source} once, into {dest}", file=sys.stderr)
    try:
        getattr(importlib.import_module(module), func)(source, dest)
        os.chmod(dest, 0o644)
    except Exception as e:
        raise WeightsError(f"could not convert the weights of {spec.name!r} ({source}): "
                           f"{(str(e).splitlines() or [type(e).__name__])[0][:200]}") from None
    return dest


def fetch(spec: ModelSpec, timeout: float = 30.0) -> Path:
    """Download the official weights into the cache, verifying the checksum."""
    import urllib.error
    import urllib.request

    url = spec.weights.url
    if not url:
        raise WeightsError(f"model {spec.name!r} has no download source. {how_to_get(spec)}.")
    if offline():
        raise WeightsError(f"cannot download {spec.name!r}: CVTOOL_OFFLINE is set. To get the weights: "
                           f"{how_to_get(spec)}.")
    dest = cached_file(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"cvtool: downloading {spec.name} weights from {url}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        problem = checksum_problem(spec, sha256_file(tmp))
        if problem:
            raise WeightsError(f"downloaded weights for {spec.name!r} are corrupt: {problem}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(
            f"could not download weights for {spec.name!r} from {url}: {getattr(e, 'reason', e)}. "
            f"If this machine is offline, {how_to_get(spec)}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a state_dict safely (``weights_only=True``; safetensors when the file is one).

    Accepts a bare state_dict or a checkpoint dict that holds one under ``state_dict``/``model``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError as e:
        raise WeightsError(f"{path}: cannot read this format ({e})") from None
    except Exception as e:  # pickle errors, zip errors, refused globals …
        text = str(e).strip()
        if "Weights only load failed" in text:
            why = ("it holds pickled Python objects, not just tensors; cvtool never unpickles "
                   "code (weights_only=True)")
        else:
            why = (text.splitlines() or [type(e).__name__])[0][:200]
        raise WeightsError(f"{path}: not a loadable weights file ({why})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: does not contain a state_dict")
    return obj


def load_into(module, state_dict: dict, what: str) -> None:
    """``module.load_state_dict(strict=True)`` with a one-line error on mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape, e.g. {k} {tuple(state_dict[k].shape)} "
                         f"instead of {tuple(own[k].shape)}")
        raise WeightsError(f"{what}: weights do not fit the architecture (keys: {'; '.join(parts)})")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{what}: weights do not fit the architecture ({first[:200]})") from None


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
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".import-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# ---- Hugging Face models: folders, not files ----------------------------------------------

def hf_import_dir(spec: ModelSpec) -> Path:
    """Where `cvtool models import` puts a Hugging Face model folder."""
    return weights_dir() / "hf" / spec.name


def dir_digest(folder: str | os.PathLike) -> str:
    """One sha256 for a model folder: over the names and digests of its files."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _check_hf_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise WeightsError(f"{what}: expected a Hugging Face model folder (config.json and "
                           "model.safetensors, as save_pretrained writes), not a file")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{what}: no config.json in this folder; it is not a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise WeightsError(f"{what}: no model.safetensors in this folder")


NO_REVISION = "local folder (no revision)"
REVISION_FILE = ".cvtool-revision"  # written by `models import` next to the copied files
_SHA1 = re.compile(r"[0-9a-f]{40}")


def hf_revision_of(folder: str | os.PathLike) -> str:
    """The Hub commit of a Hugging Face model folder, without inventing one: the snapshot's
    name in Hugging Face's cache (``models--org--name/snapshots/<commit>``), the commit that
    ``cvtool models import`` recorded, or :data:`NO_REVISION`."""
    folder = Path(folder).expanduser()
    absolute = Path(os.path.abspath(folder))
    if absolute.parent.name == "snapshots" and absolute.parent.parent.name.startswith("models--") \
            and _SHA1.fullmatch(absolute.name):
        return absolute.name
    try:
        recorded = (folder / REVISION_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        recorded = ""
    return recorded if _SHA1.fullmatch(recorded) else NO_REVISION


def _hf_snapshot(spec: ModelSpec, local_only: bool, revision: str | None = None) -> Path | None:
    """The model's folder in Hugging Face's cache (``local_only``) or freshly downloaded."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(f"model {spec.name!r} needs huggingface_hub, which comes with "
                           "transformers (a cvtool dependency): pip install transformers") from None
    w = spec.weights
    kwargs = dict(repo_id=w.hf_repo, revision=revision or w.hf_revision,
                  allow_patterns=list(w.hf_files) or None)
    if local_only:
        try:
            path = Path(snapshot_download(local_files_only=True, **kwargs))
        except Exception:  # LocalEntryNotFoundError and friends: simply not cached
            return None
        return path if (path / "config.json").is_file() else None
    print(f"cvtool: downloading {spec.name} ({w.hf_repo}) from the Hugging Face Hub", file=sys.stderr)
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as e:
        raise WeightsError(f"could not download {w.hf_repo} for {spec.name!r} "
                           f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}). "
                           f"To get the weights another way: {how_to_get(spec)}.") from None


def _resolve_hf(spec: ModelSpec, weights_path, download: bool, revision: str | None = None) -> ResolvedWeights:
    """``--weights FOLDER`` > a folder imported into cvtool's cache > Hugging Face's cache >
    a download with Hugging Face's own code (online only). With ``revision`` the imported
    folder counts only when it recorded that very commit; a ``--weights`` folder must be it."""
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.exists():
            raise WeightsError(f"--weights {weights_path}: no such file or folder")
        _check_hf_folder(p, f"--weights {weights_path}")
        rev = hf_revision_of(p)
        if revision is not None and rev != revision:
            raise WeightsError(f"--revision {revision}: the --weights folder {weights_path} is "
                               f"{'a ' + rev if rev == NO_REVISION else 'revision ' + rev}; leave out "
                               "--revision, or drop --weights to resolve that revision from Hugging Face's cache")
        return ResolvedWeights(p, "argument", dir_digest(p), rev)
    imported = hf_import_dir(spec)
    if (imported / "config.json").is_file() and (revision is None or hf_revision_of(imported) == revision):
        return ResolvedWeights(imported, "cache", dir_digest(imported), hf_revision_of(imported))
    snap = _hf_snapshot(spec, local_only=True, revision=revision)
    if snap is not None:
        return ResolvedWeights(snap, "hf-cache", dir_digest(snap), hf_revision_of(snap))
    if download and not offline() and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "yes"):
        snap = _hf_snapshot(spec, local_only=False, revision=revision)
        return ResolvedWeights(snap, "download", dir_digest(snap), hf_revision_of(snap))
    if offline():
        why = "offline (CVTOOL_OFFLINE is set)"
    else:
        why = "offline (HF_HUB_OFFLINE is set)" if download else "not found"
    at = f" at revision {revision}" if revision else ""
    raise WeightsError(f"no weights for model {spec.name!r}{at}: {why} (looked in {imported} and in "
                       f"Hugging Face's cache for {spec.weights.hf_repo}). To get them: {how_to_get(spec)}.")


def pull_hf(spec: ModelSpec, revision: str | None = None) -> Path:
    """`cvtool models pull` for a Hugging Face model: into Hugging Face's cache."""
    if offline():
        raise WeightsError(f"cannot download {spec.name!r}: CVTOOL_OFFLINE is set")
    snap = _hf_snapshot(spec, local_only=True, revision=revision)
    return snap if snap is not None else _hf_snapshot(spec, local_only=False, revision=revision)


def import_hf(spec: ModelSpec, folder: str | os.PathLike) -> Path:
    """Check a Hugging Face model folder (it must load as ``spec``) and copy it into the cache."""
    src = Path(folder).expanduser()
    if not src.exists():
        raise WeightsError(f"{folder}: no such file or folder")
    _check_hf_folder(src, str(folder))
    try:
        spec.build(src)
    except Exception as e:
        raise WeightsError(f"{folder}: does not load as {spec.name!r} "
                           f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]})") from None
    dest = hf_import_dir(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".import-{spec.name}-"))
    try:
        for f in src.rglob("*"):
            if f.is_file() and not f.name.startswith("."):
                target = tmp / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)  # follows the Hub cache's symlinks
                os.chmod(target, 0o644)
        rev = hf_revision_of(src)
        if rev != NO_REVISION:  # the Hub commit travels with the copy
            (tmp / REVISION_FILE).write_text(rev + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def hf_where(spec: ModelSpec) -> str | None:
    """"cache" (imported), "hf-cache" (Hugging Face's cache) or None, without loading anything."""
    if (hf_import_dir(spec) / "config.json").is_file():
        return "cache"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    hit = try_to_load_from_cache(spec.weights.hf_repo, "config.json", revision=spec.weights.hf_revision)
    return "hf-cache" if isinstance(hit, str) else None
