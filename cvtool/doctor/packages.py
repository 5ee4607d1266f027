"""The Python packages cvtool needs: which distribution provides each, its version (read with
``importlib.metadata``, without importing it), whether the module Python would import really is
that distribution's, whether two distributions fight over one module (``opencv-python`` and
``opencv-python-headless`` both install ``cv2``), and, for the few whose import is known to
break on a bad install (``cv2`` without libGL, ``torchvision`` built for another torch, ``onnx``
with an incompatible protobuf), whether the import works."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from cvtool.doctor.report import Outcome, Problem, first_line


@dataclass(frozen=True)
class Dependency:
    name: str  # as the report shows it
    module: str  # what cvtool imports
    dists: tuple[str, ...]  # distributions that provide it; the first is the one cvtool asks for
    optional: str = ""  # for optional ones: what needs it and how to install it
    imports: bool = False  # import it (cheap enough, and its import is a known failure point)
    exclusive: bool = False  # two of ``dists`` installed at once overwrite each other's files


def onnxruntime_wheel() -> str:
    """The ONNX Runtime distribution cvtool's pyproject asks for on this platform."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return "onnxruntime-gpu" if x86 and (sys.platform.startswith("linux") or sys.platform == "win32") else "onnxruntime"


_OPENCV = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")


def dependencies() -> list[Dependency]:
    ort = (onnxruntime_wheel(), "onnxruntime" if onnxruntime_wheel() == "onnxruntime-gpu" else "onnxruntime-gpu")
    return [
        Dependency("typer", "typer", ("typer",)),
        Dependency("rich", "rich", ("rich",)),
        Dependency("numpy", "numpy", ("numpy",), imports=True),
        Dependency("pillow", "PIL", ("pillow",), imports=True),
        Dependency("simplejpeg", "simplejpeg", ("simplejpeg",), imports=True),
        Dependency("opencv", "cv2", _OPENCV, imports=True, exclusive=True),
        Dependency("torch", "torch", ("torch",)),  # imported by the torch checks
        Dependency("torchvision", "torchvision", ("torchvision",), imports=True),
        Dependency("onnx", "onnx", ("onnx",), imports=True),
        Dependency("onnxruntime", "onnxruntime", ort, imports=True, exclusive=True),
        Dependency("transformers", "transformers", ("transformers",)),
        Dependency("safetensors", "safetensors", ("safetensors",), imports=True),
        Dependency("protobuf", "google.protobuf", ("protobuf",), imports=True),
        Dependency("ray", "ray", ("ray",), optional="--engine ray: pip install 'cvtool[ray]'"),
        Dependency("pyarrow", "pyarrow", ("pyarrow",), optional="--engine ray --output-format parquet: pip install 'cvtool[ray]'"),
        Dependency("pycocotools", "pycocotools", ("pycocotools",), optional="detect --eval: pip install 'cvtool[eval]'"),
        Dependency("scikit-learn", "sklearn", ("scikit-learn",), optional="train digits: pip install 'cvtool[train]'"),
        Dependency("onnxslim", "onnxslim", ("onnxslim",), optional="export --simplify: pip install 'cvtool[export]'"),
    ]


def version_of(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _module_owners() -> dict[str, list[str]]:
    """Top-level module → the distributions that install it (all of sys.path)."""
    return {k: list(dict.fromkeys(v)) for k, v in md.packages_distributions().items()}


def distribution_for_module(module: str) -> str | None:
    """The distribution to ``pip install`` for a module (cvtool's choice where several could)."""
    for dep in dependencies():
        if dep.module == module or dep.module.split(".")[0] == module:
            return dep.dists[0]
    owners = _module_owners().get(module.split(".")[0])
    return owners[0] if owners else None


def modules_of(dist: str) -> list[str]:
    """The top-level modules a distribution installs."""
    want = md.distribution(dist).metadata["Name"].lower().replace("_", "-")
    return sorted(m for m, owners in _module_owners().items()
                  if any(o.lower().replace("_", "-") == want for o in owners) and not m.startswith("_"))


def module_location(module: str) -> Path | None:
    """Where Python would import ``module`` from (its folder for a package), without running it
    (parents of a dotted name are imported, as Python must)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin) if spec.origin else None


def shadowing(module: str, dist: str) -> Problem | None:
    """A Problem when the ``module`` Python imports is not the one the distribution ``dist``
    installed (a folder or file of that name earlier on sys.path, e.g. on PYTHONPATH)."""
    where = module_location(module)
    d = md.distribution(dist)
    expected = Path(d.locate_file(module.replace(".", "/")))
    if where is None:
        return Problem(f"{dist} {d.version} is installed, but Python finds no module {module!r} "
                       f"(its files are missing)", f"pip install --force-reinstall {dist}")
    same = where.resolve() == expected.resolve() or (
        where.parent.resolve() == Path(d.locate_file("")).resolve() and where.name.startswith(module.split(".")[-1]))
    if same:
        return None
    entry = next((p for p in sys.path if p and _inside(where, Path(p))), str(where.parent))
    hint = " (it is on PYTHONPATH)" if entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) else ""
    return Problem(f"`import {module}` gets {where}, not the {dist} {d.version} installed at {expected}: "
                   f"{entry}{hint} comes first on sys.path and hides it",
                   f"remove {entry} from PYTHONPATH (or rename {where.name} there) so that Python "
                   f"imports the installed {dist}",
                   {"module": module, "location": str(where), "expected": str(expected)})


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_dependency(dep: Dependency) -> Outcome:
    """One dependency: installed (which distribution, which version), not shadowed, not
    installed twice under two names, and (``dep.imports``) importable."""
    installed = {d: v for d in dep.dists if (v := version_of(d)) is not None}
    owners = _module_owners().get(dep.module.split(".")[0], [])
    if dep.exclusive:  # every distribution that installs this module, also ones not in dep.dists
        for o in owners:
            if o.lower() not in {d.lower() for d in installed} and version_of(o) is not None:
                installed[md.distribution(o).metadata["Name"]] = version_of(o)
    if not installed:
        if dep.optional:
            return Outcome(f"not installed (optional; {dep.optional})", "info",
                           {"distribution": None, "version": None, "optional": True})
        raise Problem(f"not installed: cvtool needs {dep.dists[0]} (module {dep.module})",
                      f"pip install {dep.dists[0]}", {"distribution": None, "version": None})
    if dep.exclusive and len(installed) > 1:
        both = ", ".join(f"{d} {v}" for d, v in installed.items())
        raise Problem(f"{len(installed)} distributions install the module {dep.module}: {both}; they write the "
                      f"same files and overwrite each other's, so what imports is a mix",
                      f"pip uninstall -y {' '.join(installed)} && pip install {dep.dists[0]}",
                      {"distributions": installed})
    dist, version = next(iter(installed.items()))
    data = {"distribution": dist, "version": version, "module": dep.module}
    problem = shadowing(dep.module, dist)
    if problem is not None:
        problem.data = {**data, **problem.data}
        raise problem
    data["location"] = str(module_location(dep.module))
    detail = version if dist == dep.name else f"{version} ({dist})"
    if dist != dep.dists[0] and not dep.optional:
        detail += f"; cvtool asks for {dep.dists[0]}, which provides the same module"
    if dep.imports:
        try:
            mod = importlib.import_module(dep.module)
        except Exception as e:  # ImportError, OSError from a shared library, protobuf's TypeError ...
            raise Problem(f"{dist} {version} is installed but `import {dep.module}` fails: "
                          f"{type(e).__name__}: {first_line(e)}",
                          _import_fix(dep, dist, e), data) from None
        own = getattr(mod, "__version__", None)
        if isinstance(own, str):
            data["module_version"] = own
            if not _same_version(own, version):
                raise Problem(f"{dep.module}.__version__ is {own}, but the installed {dist} is {version}: files "
                              "of two installs are mixed", f"pip install --force-reinstall {dist}", data)
            if dep.module == "cv2":
                detail = f"{own} ({dist})"
    return Outcome(detail, "ok", data)


def _same_version(module_version: str, dist_version: str) -> bool:
    a, b = module_version.split("+")[0], dist_version.split("+")[0]
    return a.startswith(b) or b.startswith(a)


def _import_fix(dep: Dependency, dist: str, e: Exception) -> str:
    text = str(e)
    if dep.module == "cv2" and ("libGL" in text or "libgthread" in text):
        return ("this OpenCV build needs desktop libraries (libGL) that are not here; cvtool needs only the "
                f"headless build: pip uninstall -y {dist} && pip install opencv-python-headless")
    if dep.module == "torchvision":
        return ("torchvision must be the build made for the installed torch: "
                "pip install --force-reinstall torch torchvision (from the same index)")
    if dep.module in ("onnx", "google.protobuf") and "protobuf" in text.lower():
        return "pip install --force-reinstall onnx protobuf"
    return f"pip install --force-reinstall {dist}"
