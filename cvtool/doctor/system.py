"""cvtool itself, Python, the platform, the environment settings cvtool reads, and its caches:
where they are (as cvtool resolves them), how much they hold, whether they can be written."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

from cvtool.doctor.report import Outcome, Problem

SETTINGS = ("CVTOOL_HOME", "CVTOOL_OFFLINE", "CVTOOL_DEBUG", "CVTOOL_MAX_PIXELS", "CVTOOL_TENSORRT",
            "HF_HOME", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


def check_cvtool() -> Outcome:
    import cvtool
    from cvtool.doctor.packages import version_of

    where = Path(cvtool.__file__).resolve().parent
    installed = version_of("cvtool")
    data = {"version": cvtool.__version__, "location": str(where), "installed": installed}
    return Outcome(f"{cvtool.__version__} ({where})", "ok", data)


def check_python() -> Outcome:
    v = platform.python_version()
    data = {"version": v, "executable": sys.executable, "implementation": platform.python_implementation()}
    if sys.version_info < (3, 10):
        raise Problem(f"Python {v}: cvtool needs 3.10 or newer", "use Python 3.10 or newer", data)
    return Outcome(f"{v} ({sys.executable})", "ok", data)


def check_platform() -> Outcome:
    from cvtool.runtime.device import cpu_count

    data = {"platform": platform.platform(), "machine": platform.machine(), "cpus": cpu_count(),
            "cpus_total": os.cpu_count()}
    return Outcome(f"{platform.platform()}, {cpu_count()} CPU{'s' if cpu_count() != 1 else ''} usable", "ok", data)


def check_settings() -> Outcome:
    """The environment variables cvtool (and the libraries it drives) read, and whether cvtool
    can use their values (the checks every command makes before it starts)."""
    from cvtool.settings import SettingError, check_environment

    present = {k: os.environ[k] for k in SETTINGS if k in os.environ}
    try:
        check_environment()
    except SettingError as e:
        raise Problem(str(e), "unset it or give it a value cvtool can use", {"set": present}) from None
    shown = ", ".join(f"{k}={v}" for k, v in present.items() if k != "CVTOOL_HOME") or "none set"
    return Outcome(shown, "ok", {"set": present})


# -- caches -------------------------------------------------------------------------------------

def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``; links are not followed."""
    total = files = 0
    for root, _dirs, names in os.walk(folder):
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            total += st.st_size
            files += 1
    return total, files


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (tried for real: a read-only file system
    or a full disk shows here, not only permission bits); else why not."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cvtool-doctor-")
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(tmp)
    return None


def check_folder(folder: Path, what: str, fix: str) -> Outcome:
    """A cache folder: its size, and whether cvtool can write there (or create it)."""
    data = {"path": str(folder), "exists": folder.is_dir()}
    if folder.is_dir():
        size, files = folder_size(folder)
        data.update(bytes=size, files=files)
        why = _writable(folder)
        data["writable"] = why is None
        if why:
            raise Problem(f"{what} {folder} is not writable ({why})", fix, data)
        return Outcome(f"{folder} ({human_size(size)} in {files} file{'s' if files != 1 else ''}), writable",
                       "ok", data)
    if folder.exists() or folder.is_symlink():
        raise Problem(f"{what} {folder} is not a folder", fix, data)
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise Problem(f"{what} {folder} cannot be created: {parent} is not a folder", fix, data)
    why = _writable(parent)
    data["writable"] = why is None
    if why:
        raise Problem(f"{what} {folder} cannot be created: {parent} is not writable ({why})", fix, data)
    return Outcome(f"{folder} (not created yet; it will be)", "ok", data)


HOME_FIX = "point CVTOOL_HOME at a writable folder (export CVTOOL_HOME=$HOME/.cache/cvtool), or fix its permissions"


def check_cache_home() -> Outcome:
    from cvtool.models.cache import WeightsError, cache_home, check_cache_home as check

    try:
        check()
    except WeightsError as e:
        raise Problem(str(e), HOME_FIX, {"path": str(cache_home())}) from None
    out = check_folder(cache_home(), "CVTOOL_HOME" if os.environ.get("CVTOOL_HOME") else "the cache folder",
                       HOME_FIX)
    out.data["from"] = "CVTOOL_HOME" if os.environ.get("CVTOOL_HOME") else "default"
    return out


def check_cache_sub(name: str) -> Outcome:
    from cvtool.models.cache import cache_home

    return check_folder(cache_home() / name, f"the {name} cache", HOME_FIX)


def check_hf_cache() -> Outcome:
    """Hugging Face's cache, where the caption and depth models' folders live, as huggingface_hub
    (which cvtool calls) resolves it from HF_HOME / HF_HUB_CACHE."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return Outcome("huggingface_hub is not installed (it comes with transformers)", "info")
    out = check_folder(Path(constants.HF_HUB_CACHE), "Hugging Face's cache",
                       "point HF_HOME at a writable folder, or fix its permissions")
    out.data["offline"] = bool(constants.HF_HUB_OFFLINE)
    return out
