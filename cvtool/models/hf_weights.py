"""Hugging Face models: folders (config.json + model.safetensors), not files. Resolution:
``--weights FOLDER`` > a folder imported into cvtool's cache > Hugging Face's cache > a download
with Hugging Face's own code (online only)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from cvtool.models.cache import ResolvedWeights, WeightsError, dir_digest, offline, weights_dir
from cvtool.models.registry import ModelSpec


def how_to_get(spec: ModelSpec, weights_option: str | None = "--weights", pulling: bool = False) -> str:
    from cvtool.models.weights import how_to_get as _how

    return _how(spec, weights_option, pulling)


def hf_import_dir(spec: ModelSpec) -> Path:
    """Where `cvtool models import` puts a Hugging Face model folder."""
    return weights_dir() / "hf" / spec.name


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


def _hf_snapshot(spec: ModelSpec, local_only: bool, revision: str | None = None,
                 how: str | None = None, notify=None) -> Path | None:
    """The model's folder in Hugging Face's cache (``local_only``) or freshly downloaded
    (``how``: the advice when the download fails, :func:`how_to_get`'s by default)."""
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
    message = f"downloading {spec.name} ({w.hf_repo}) from the Hugging Face Hub"
    notify(message) if notify else print(f"cvtool: {message}", file=sys.stderr)
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as e:
        raise WeightsError(f"could not download {w.hf_repo} for {spec.name!r} "
                           f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}). "
                           f"To get the weights another way: {how or how_to_get(spec)}.") from None


def _resolve_hf(spec: ModelSpec, weights_path, download: bool, revision: str | None = None,
                weights_option: str | None = "--weights", notify=None) -> ResolvedWeights:
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
        snap = _hf_snapshot(spec, local_only=False, revision=revision, how=how_to_get(spec, weights_option),
                            notify=notify)
        return ResolvedWeights(snap, "download", dir_digest(snap), hf_revision_of(snap))
    if offline():
        why = "offline (CVTOOL_OFFLINE is set)"
    else:
        why = "offline (HF_HUB_OFFLINE is set)" if download else "not found"
    at = f" at revision {revision}" if revision else ""
    raise WeightsError(f"no weights for model {spec.name!r}{at}: {why} (looked in {imported} and in "
                       f"Hugging Face's cache for {spec.weights.hf_repo}). To get them: {how_to_get(spec, weights_option)}.")


def pull_hf(spec: ModelSpec, revision: str | None = None) -> Path:
    """`cvtool models pull` for a Hugging Face model: into Hugging Face's cache."""
    if offline():
        raise WeightsError(f"cannot download {spec.name!r}: CVTOOL_OFFLINE is set")
    snap = _hf_snapshot(spec, local_only=True, revision=revision)
    return snap if snap is not None else _hf_snapshot(spec, local_only=False, revision=revision,
                                                      how=how_to_get(spec, None, pulling=True))


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
