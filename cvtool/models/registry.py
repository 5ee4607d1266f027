"""The model registry: what cvtool can build, with which weights, and how to feed it.

A :class:`ModelSpec` names a model and its task, says how to build the network (``builder``,
imported lazily so that listing models never imports torch) and carries :class:`Weights`:
where the weights come from, their checksum and licence, the preprocessing they were trained
with and their class labels. Everything a user can pass to ``--model NAME`` is registered here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from cvtool.models.preprocess import Preprocess


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from and what they expect.

    ``package``/``package_path`` name a pip package that ships the file and a
    ``"module:callable"`` returning its path; ``url`` is the download source. ``sha256`` is
    the full digest when known; ``sha256_prefix`` the short form torchvision puts in file names.
    """

    filename: str
    preprocess: Preprocess
    labels: str  # name of a bundled label list, see cvtool/models/labels/
    license: str
    source: str  # human description of the origin, for `models info` and the docs
    url: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    package: str | None = None
    package_path: str | None = None
    converter: str | None = None  # "module:function(package_file, dest) -> dest" for foreign formats
    metrics: dict = field(default_factory=dict)
    # Hugging Face models: a folder (config.json + model.safetensors + processor files) from the
    # Hub repo ``hf_repo``, found in Hugging Face's own cache or downloaded with its code. The
    # builder then takes that folder: ``fn(path, **builder_kwargs)``.
    hf_repo: str | None = None
    hf_revision: str | None = None  # a commit, tag or branch (default: main)
    hf_files: tuple[str, ...] = ()  # glob patterns of the files needed (default: all)
    # An architecture `cvtool train` builds from nothing: no weights exist anywhere but in the
    # user's own checkpoints (``--model runs/NAME/best.pt``).
    train_only: bool = False

    @property
    def bundled(self) -> bool:
        """The weights ship inside a pip package (``package_path``): they work offline, with no
        download (`cvtool models list` says "package", or "cache" once converted)."""
        return self.package_path is not None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    builder: str  # "module:function" returning an un-initialised torch.nn.Module
    weights: Weights
    description: str = ""
    builder_kwargs: dict = field(default_factory=dict)
    # Which input sizes the network takes: "dynamic" (any H×W, even within one ONNX file),
    # "static" (any H×W, but fixed per export, e.g. TF "SAME" padding), "fixed" (only the
    # trained size, e.g. ViT's position embeddings).
    input_sizes: str = "dynamic"
    # Detectors: "nms" = dense boxes/scores, cvtool adds NMS (cvtool.models.detection);
    # "torchvision" = the network runs its own NMS.
    head: str = "nms"
    exportable: bool = True  # False: runs on torch only (auto backend skips the ONNX export)
    export_note: str = ""  # why not exportable, for `cvtool export`'s refusal

    def build(self, path=None):
        """Instantiate the network (imports torch). Hugging Face models are built from their
        weights folder ``path``; others get un-initialised weights, loaded afterwards."""
        module, _, func = self.builder.partition(":")
        fn: Callable = getattr(importlib.import_module(module), func)
        if self.weights.hf_repo:
            return fn(str(path), **self.builder_kwargs)
        return fn(**self.builder_kwargs)


_REGISTRY: dict[str, ModelSpec] = {}
_ZOO_MODULES = ("cvtool.models.zoo.efficientnet_lite_spec", "cvtool.models.zoo.torchvision_classifiers",
                "cvtool.models.zoo.ssd_spec", "cvtool.models.zoo.torchvision_detectors",
                "cvtool.models.zoo.small_nets_spec", "cvtool.models.zoo.torchvision_segmenters",
                "cvtool.models.zoo.hf_caption_spec",
                "cvtool.models.zoo.hf_depth")
_loaded = False


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _ZOO_MODULES:
            importlib.import_module(mod)


def get(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        # what else the option at hand takes is for its caller to add (`export` has no --model)
        raise UnknownModel(f"unknown model {name!r}.{hint} `cvtool models list` shows the registered models.") from None


def is_registered(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def tasks() -> list[str]:
    """The tasks registered models serve, in registration order."""
    _ensure_loaded()
    return list(dict.fromkeys(s.task for s in _REGISTRY.values()))


def list_models(task: str | None = None) -> list[ModelSpec]:
    """Registered models, all or those of ``task`` (UnknownModel for a task no model serves)."""
    _ensure_loaded()
    if task is not None and task not in tasks():
        raise UnknownModel(f"--task {task!r}: no such task; expected one of {', '.join(tasks())}")
    return [s for s in _REGISTRY.values() if task is None or s.task == task]
