"""Resolving ``--model`` to something runnable.

``--model`` takes a registry name, a path to an ONNX file exported by cvtool (its metadata
carries task, labels and preprocessing), or a checkpoint written by ``cvtool train``. The
result, :class:`LoadedModel`, knows its preprocessing and labels and can give a torch module
(building the network and loading weights safely) or an ONNX file (exported once, cached).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cvtool.models import registry
from cvtool.models.labels import load_labels
from cvtool.models.hf_preprocess import preprocess_from_dict
from cvtool.models.preprocess import Preprocess
from cvtool.models.weights import (
    WeightsError, cache_home, load_into, load_state_dict, resolve, sha256_file,
)

CHECKPOINT_FORMAT = 1


class ModelError(Exception):
    """The --model argument cannot be used; the message says why and what to do."""


@dataclass
class LoadedModel:
    name: str
    task: str
    kind: str  # "registry" | "onnx" | "checkpoint"
    preprocess: Preprocess
    labels: tuple[str, ...]
    weights_sha256: str
    weights_origin: str
    spec: registry.ModelSpec | None = None
    weights_path: Path | None = None
    onnx_file: Path | None = None
    num_classes: int | None = None
    # Checkpoints from `cvtool train`: the architecture's own keyword arguments (e.g. a small
    # net's in_channels/size/widths) and whether the network was trained on grey pictures.
    arch_kwargs: dict = field(default_factory=dict)
    grey_input: bool = False
    # ONNX files from other exporters (Ultralytics, or described by a sidecar file): what cvtool
    # recognised in them (cvtool.models.foreign.Description); their preprocessing is in it too.
    foreign: object = None
    # Hugging Face weights: the Hub commit of the files that ran, or why there is none
    # (see cvtool.models.weights.hf_revision_of); None for other weights.
    revision: str | None = None
    _module: object = field(default=None, repr=False)

    def torch_module(self):
        """The network with its weights loaded, wrapped in :class:`~cvtool.models.wrap.Normalized`
        (input uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1]), in eval mode."""
        if self.kind == "onnx":
            raise ModelError(f"{self.name}: an ONNX file runs only on --backend onnx "
                             "(gradient-based jobs need a registry model or a checkpoint)")
        if self._module is None:
            kwargs = {}
            if self.kind == "checkpoint":
                kwargs["num_classes"] = self.num_classes
                kwargs.update(self.arch_kwargs)
            spec = self.spec
            if spec.weights.hf_repo:  # a Hugging Face folder: the builder loads config and weights
                try:
                    module = spec.build(self.weights_path)
                except Exception as e:
                    raise ModelError(f"{self.weights_path}: cannot load {spec.name} from this folder "
                                     f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]})") from None
                from cvtool.models.wrap import Normalized

                self._module = Normalized(module, self.preprocess.mean, self.preprocess.std).eval()
                return self._module
            module = (spec.build() if not kwargs else
                      registry.ModelSpec(spec.name, spec.task, spec.builder, spec.weights,
                                         builder_kwargs={**spec.builder_kwargs, **kwargs}).build())
            try:
                state = load_state_dict(self.weights_path)
                if self.task == "segment":  # the auxiliary head is optional (see models.segmentation)
                    from cvtool.models.segmentation import fit_aux_head

                    state = fit_aux_head(module, state)
                load_into(module, state, str(self.weights_path))
            except WeightsError as e:
                raise ModelError(str(e)) from None
            if self.grey_input:
                from cvtool.models.zoo.small_nets import add_grey_input

                add_grey_input(module)
            from cvtool.models.wrap import Normalized

            if self.task == "detect":
                from cvtool.models.detection import DetectWithNMS, TorchvisionDetector

                module = TorchvisionDetector(module) if spec.head == "torchvision" else DetectWithNMS(module)
            elif self.task == "segment":
                from cvtool.models.segmentation import wrap as wrap_segmenter

                module = wrap_segmenter(module, spec.head)
            self._module = Normalized(module, self.preprocess.mean, self.preprocess.std).eval()
        return self._module

    def onnx_path(self, opset: int | None = None) -> tuple[Path, bool]:
        """``(path, exported_now)``: this model as an ONNX file with embedded metadata."""
        from cvtool.runtime.onnx import DEFAULT_OPSET, cached_export

        if self.kind == "onnx":
            return self.onnx_file, False
        return cached_export(
            cache_home() / "onnx", self.name,
            key_fields={"model": self.name, "weights": self.weights_sha256,
                        "preprocess": self.preprocess.to_json(), "kind": self.kind,
                        "code": [_source_digest(m) for m in (self.spec.builder, "cvtool.models.wrap",
                                                             "cvtool.models.detection")]},
            build=self.torch_module,
            input_shape=(self.preprocess.crop, self.preprocess.crop, 3),
            metadata=self.metadata(),
            opset=opset or DEFAULT_OPSET,
            extra_inputs=self.extra_inputs(),
            **self._size_axes(),
        )

    def onnx_size_problem(self) -> str | None:
        """Why this model cannot run on ONNX Runtime as configured, or None: its preprocessing
        gives each picture its own size, but its architecture's exported graph is traced at
        one size (``ModelSpec.input_sizes`` other than "dynamic", e.g. DPT)."""
        if getattr(self.preprocess, "fixed_size", True) or self.spec is None or self.spec.input_sizes == "dynamic":
            return None
        return (f"{self.name}: its preprocessor_config.json gives each picture its own input size, and this "
                "architecture's ONNX graph only takes the size it was exported at")

    def _size_axes(self) -> dict:
        """Models fed at each picture's own size (e.g. Depth Anything keeping the aspect ratio)
        export with free height and width, so one ONNX file takes every shape."""
        if getattr(self.preprocess, "fixed_size", True):
            return {}
        return {"dynamic_size": True, "output_axes": {1: "out_height", 2: "out_width"} if self.task == "depth" else {}}

    def provenance(self) -> dict:
        """Which weights and which preprocessing ran, for the records of Hugging Face models:
        ``{"hf_repo", "revision", "preprocess"}`` (empty for other models)."""
        hf = self.spec.weights.hf_repo if self.spec is not None else None
        if not hf and self.revision is None:
            return {}
        return {"hf_repo": hf, "revision": self.revision,
                "preprocess": getattr(self.preprocess, "source", None)}

    def extra_inputs(self) -> dict:
        """Inputs besides the pictures, with example values (as numpy), in the graph's order."""
        if self.task == "detect":
            import numpy as np

            return {"iou_threshold": np.array([0.6], np.float32), "score_threshold": np.array([0.01], np.float32)}
        return {}

    def metadata(self) -> dict[str, str]:
        from cvtool import __version__

        return {
            "task": self.task,
            "model": self.name,
            "labels": json.dumps(list(self.labels)),
            "preprocess": self.preprocess.to_json(),
            "input_layout": "NHWC uint8 RGB (B, H, W, 3); normalisation is inside the graph",
            "version": __version__,
            "weights_sha256": self.weights_sha256,
            **({"hf_revision": self.revision} if self.revision else {}),
        }


def _source_digest(builder: str) -> str:
    """Digest of the cvtool file that defines an architecture (so editing it re-exports),
    found without importing it; empty for third-party builders (their version is keyed)."""
    import hashlib
    import importlib.util

    module = builder.partition(":")[0]
    if not module.startswith("cvtool."):
        return ""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


def imported_dir() -> Path:
    """Where ``cvtool models import NAME FILE.onnx`` keeps foreign ONNX files (with sidecars)."""
    return cache_home() / "imported"


def load(model: str, weights: str | None = None, task: str | None = None,
         revision: str | None = None, weights_option: str | None = "--weights",
         option: str = "--model", notify=None) -> LoadedModel:
    """Resolve a ``--model`` argument (and optional ``--weights``, and ``--revision`` for a
    Hugging Face model) for ``task``. ``option``: the option (or argument) that took ``model``,
    and ``weights_option`` the one that takes its weights file (None where there is none), as
    named in the errors; ``notify(message)``: hears about a weights conversion or download
    (silenced with -q; default: a ``cvtool:`` line on stderr)."""
    if model.lower().endswith(".onnx"):
        loaded = _load_onnx(model)
    elif os.path.isfile(model):
        loaded = _load_checkpoint(model)
    elif (imported_dir() / f"{model}.onnx").is_file() and not registry.is_registered(model):
        loaded = _load_onnx(str(imported_dir() / f"{model}.onnx"), name=model)
    else:
        try:
            spec = registry.get(model)
        except registry.UnknownModel as e:
            raise ModelError(f"{str(e)[:-1]}; {option} also takes a .onnx file exported by cvtool or a "
                             "checkpoint from `cvtool train`.") from None
        try:
            rw = resolve(spec, weights, revision=revision, weights_option=weights_option, notify=notify)
        except WeightsError as e:
            raise ModelError(str(e)) from None
        preprocess = spec.weights.preprocess
        if spec.weights.hf_repo:  # the folder's own preprocessor_config.json (or the fallback)
            from cvtool.models.hf_preprocess import PreprocessConfigError, from_folder

            try:
                preprocess = from_folder(rw.path, preprocess)
            except PreprocessConfigError as e:
                raise ModelError(f"{model}: {e}") from None
        loaded = LoadedModel(spec.name, spec.task, "registry", preprocess,
                             load_labels(spec.weights.labels), rw.sha256, rw.origin, spec,
                             rw.path, revision=rw.revision)
    if revision is not None and loaded.kind != "registry":
        raise ModelError("--revision applies to Hugging Face registry models; this --model already holds its weights")
    if weights is not None and loaded.kind != "registry":
        raise ModelError("--weights applies to registry models; this --model already holds its weights")
    if task is not None and loaded.task != task:
        raise ModelError(f"model {loaded.name!r} is a {loaded.task} model, not a {task} model")
    return loaded


def _load_onnx(path: str, name: str | None = None) -> LoadedModel:
    if not os.path.isfile(path):
        raise ModelError(f"--model {path}: no such file")
    from cvtool.runtime.onnx import read_metadata

    try:
        meta = read_metadata(path)
    except Exception as e:
        raise ModelError(f"--model {path}: not a readable ONNX file ({str(e).splitlines()[0][:200]})") from None
    missing = [k for k in ("task", "labels", "preprocess") if k not in meta]
    if missing and not meta:
        return load_foreign(path, name=name)
    if missing:
        raise ModelError(f"--model {path}: this ONNX file has no cvtool metadata ({', '.join(missing)} "
                         "missing); export it with `cvtool export`")
    return LoadedModel(
        name=name or meta.get("model") or Path(path).stem, task=meta["task"], kind="onnx",
        preprocess=preprocess_from_dict(json.loads(meta["preprocess"])), labels=tuple(json.loads(meta["labels"])),
        weights_sha256=meta.get("weights_sha256", ""), weights_origin="onnx",
        onnx_file=Path(path), revision=meta.get("hf_revision"))


def _load_checkpoint(path: str) -> LoadedModel:
    """A ``cvtool train`` checkpoint: ``{"cvtool": {...meta...}, "state_dict": {...}}``."""
    from cvtool.models.state_dict import torch_load, unreadable

    try:
        ckpt = torch_load(path)
    except Exception as e:

        raise ModelError(f"--model {path}: {unreadable(path, e)}") from None
    meta = ckpt.get("cvtool") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise ModelError(f"--model {path}: not a checkpoint written by `cvtool train` "
                         "(for a plain state_dict use --model ARCH --weights FILE)")
    if int(meta.get("format", 0)) > CHECKPOINT_FORMAT:
        raise ModelError(f"--model {path}: checkpoint format {meta['format']} is newer than this cvtool")
    try:
        spec = registry.get(meta["arch"])
    except registry.UnknownModel as e:
        raise ModelError(f"--model {path}: {e}") from None
    labels = tuple(meta["labels"])
    return LoadedModel(
        name=meta.get("name") or Path(path).stem, task=meta.get("task", spec.task), kind="checkpoint",
        preprocess=preprocess_from_dict(meta["preprocess"]) if "preprocess" in meta else spec.weights.preprocess,
        labels=labels, weights_sha256=sha256_file(path), weights_origin="checkpoint", spec=spec,
        weights_path=Path(path), num_classes=len(labels),
        arch_kwargs=dict(meta.get("arch_kwargs") or {}), grey_input=bool(meta.get("grey_input", False)))


def load_foreign(path: str, name: str | None = None, imgsz: int | None = None) -> LoadedModel:
    """An ONNX file from another exporter (see :mod:`cvtool.models.foreign`); ``imgsz`` runs a
    file with a free input size at that size."""
    from cvtool.models.foreign import ForeignError, describe

    try:
        d = describe(path, imgsz=imgsz)
    except ForeignError as e:
        raise ModelError(f"--model {e}" if not str(e).startswith("--") else str(e)) from None
    return LoadedModel(name=name or d.name, task=d.task, kind="onnx", preprocess=d.preprocess, labels=d.labels,
                       weights_sha256="", weights_origin=f"onnx ({d.format})", onnx_file=Path(path), foreign=d)


def with_imgsz(loaded: LoadedModel, imgsz: int) -> LoadedModel:
    """A foreign file at ``--imgsz`` (refused, naming the input, where the file's size is fixed)."""
    import dataclasses

    if imgsz == loaded.foreign.imgsz[0] == loaded.foreign.imgsz[1]:
        return loaded
    fresh = load_foreign(str(loaded.onnx_file), name=loaded.name, imgsz=imgsz)
    return dataclasses.replace(loaded, preprocess=fresh.preprocess, foreign=fresh.foreign)
