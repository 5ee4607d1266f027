"""ONNX Runtime: exporting once into the cache, choosing providers, running sessions.

Inference tasks run here by default. A registered model is exported to ONNX the first time it
is used, with its preprocessing and labels embedded as metadata, and cached under
``$CVTOOL_HOME/onnx`` with a key over everything that changes the graph (weights digest, opset,
cvtool and torch versions), so an upgrade re-exports and a second run starts without torch.
Sessions try TensorRT > CUDA > CPU and report the provider that really loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from cvtool.runtime.device import Device, DeviceError, cpu_count, nvidia_gpu_present

DEFAULT_OPSET = 17
META_PREFIX = "cvtool."
_SESSIONS: dict[tuple, "OnnxRunner"] = {}


def export_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def export_onnx(module, path: str | os.PathLike, input_shape: tuple[int, int, int],
                metadata: dict[str, str], opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, input_dtype: str = "uint8", batch: int = 1,
                dynamic_size: bool = False, device: str = "cpu", extra_inputs: dict | None = None) -> Path:
    """Export ``module`` (input ``(B, *input_shape)`` of ``input_dtype``, NHWC) to ``path``
    atomically, with cvtool metadata.

    ``dynamic_batch`` leaves the batch axis free (else it is fixed to ``batch``);
    ``dynamic_size`` also frees height and width. The module is traced where it lies
    (``device``); pass a half-precision copy for an fp16 export. ``extra_inputs`` (name →
    example numpy array) become further graph inputs, e.g. a detector's NMS thresholds; a
    detector's output is a flat list whose first axis is the number of detections.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        module = module.eval()
        dummy = torch.zeros((batch if not dynamic_batch else 1, *input_shape),
                            dtype=getattr(torch, input_dtype), device=device)
        extra = {k: torch.from_numpy(v).to(device) for k, v in (extra_inputs or {}).items()}
        axes: dict[str, dict[int, str]] = {"input": {}, "output": {}}
        if dynamic_batch:
            axes["input"][0] = axes["output"][0] = "batch"
        if extra:
            axes["output"][0] = "detections"
        if dynamic_size:
            axes["input"].update({1: "height", 2: "width"})
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # The fused attention kernel eval-mode transformers use has no ONNX export.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (dummy, *extra.values()), tmp, dynamo=False, opset_version=opset,
                    input_names=["input", *extra], output_names=["output"],
                    dynamic_axes={k: v for k, v in axes.items() if v} or None,
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        model = onnx.load(tmp)
        set_metadata(model, metadata)
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def set_metadata(model, metadata: dict[str, str]) -> None:
    """Write cvtool's metadata into an in-memory ``onnx.ModelProto`` (replacing old values)."""
    keep = [p for p in model.metadata_props if not (p.key[len(META_PREFIX):] in metadata
                                                    and p.key.startswith(META_PREFIX))]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in metadata.items():
        model.metadata_props.add(key=META_PREFIX + k, value=v)
    model.producer_name = "cvtool"


def cached_export(cache_dir: Path, name: str, key_fields: dict, build: Callable[[], object],
                  input_shape: tuple[int, int, int], metadata: dict[str, str],
                  opset: int = DEFAULT_OPSET, extra_inputs: dict | None = None,
                  dynamic_size: bool = False) -> tuple[Path, bool]:
    """Return ``(path, exported_now)`` of the cached ONNX file, exporting it if missing."""
    from cvtool import __version__

    fields = dict(key_fields, opset=opset, cvtool=__version__)
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("torch", "torchvision", "transformers"):  # the exporter and third-party architectures
        try:
            fields[dist] = version(dist)
        except PackageNotFoundError:
            pass
    path = Path(cache_dir) / f"{name}-{export_key(fields)}.onnx"
    if path.is_file():
        return path, False
    export_onnx(build(), path, input_shape, metadata, opset, extra_inputs=extra_inputs, dynamic_size=dynamic_size)
    return path, True


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """cvtool's metadata from an ONNX file (keys without the ``cvtool.`` prefix)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(META_PREFIX)}


def _ort():
    import onnxruntime as ort

    # Fatal only: a provider that cannot load is reported by us, in one line, with what ran.
    ort.set_default_logger_severity(4)
    return ort


def provider_chain(device: Device, cache_dir: Path | None = None, tensorrt: bool = True) -> list:
    """Providers to try for ``device``, best first, among those this onnxruntime build has."""
    ort = _ort()
    available = set(ort.get_available_providers())
    want_gpu = device.kind == "cuda" or (device.kind == "auto" and nvidia_gpu_present())
    chain: list = []
    if want_gpu:
        if tensorrt and "TensorrtExecutionProvider" in available and os.environ.get("CVTOOL_TENSORRT", "1") != "0":
            opts = {"device_id": device.index, "trt_fp16_enable": True}
            if cache_dir is not None:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "tensorrt"))
            chain.append(("TensorrtExecutionProvider", opts))
        if "CUDAExecutionProvider" in available:
            chain.append(("CUDAExecutionProvider", {"device_id": device.index}))
    if device.kind == "mps" and "CoreMLExecutionProvider" in available:
        chain.append("CoreMLExecutionProvider")
    chain.append("CPUExecutionProvider")
    return chain


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class OnnxRunner:
    """A cached ONNX Runtime session for one file (as it is now) on one device.

    ``provider`` and ``device`` report what really loaded. Asking for ``--device cuda`` when no
    GPU provider loads is an error unless ``allow_cpu_fallback``; then ``note`` says why it
    runs on the CPU. On CUDA, batches go through IO binding: the input is copied to the GPU
    once and outputs are allocated there and copied back once.
    """

    backend = "onnxruntime"

    def __new__(cls, path, device: Device, threads: int | None = None, cache_dir: Path | None = None,
                allow_cpu_fallback: bool = False, tensorrt: bool = True):
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, str(device), threads,
               allow_cpu_fallback, tensorrt)
        if key not in _SESSIONS:
            _SESSIONS[key] = cls.fresh(path, device, threads, cache_dir, allow_cpu_fallback, tensorrt)
        return _SESSIONS[key]

    @classmethod
    def fresh(cls, path, device: Device, threads: int | None = None, cache_dir: Path | None = None,
              allow_cpu_fallback: bool = False, tensorrt: bool = True) -> "OnnxRunner":
        """A new, uncached session (for files that are about to move or change)."""
        inst = super().__new__(cls)
        inst._init(path, device, threads, cache_dir, allow_cpu_fallback, tensorrt)
        return inst

    def _init(self, path, device: Device, threads: int | None, cache_dir: Path | None,
              allow_cpu_fallback: bool, tensorrt: bool) -> None:
        ort = _ort()
        if device.kind in ("cuda", "auto") and nvidia_gpu_present() and hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN libraries from the nvidia-* wheels torch brings, when present
                ort.preload_dlls()
            except Exception:
                pass
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads or cpu_count())
        so.log_severity_level = 4
        # Idle ORT threads would otherwise spin and steal the cores that decode the next batch.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chain = provider_chain(device, cache_dir, tensorrt)
        try:
            # onnxruntime print()s provider failures to stdout, which must stay machine-readable.
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(str(path), sess_options=so, providers=chain)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeviceError(f"{path}: ONNX Runtime cannot load this model ({first[:300]})") from None
        self.provider = self.session.get_providers()[0]
        self.note = None
        if device.kind == "cuda" and self.provider not in GPU_PROVIDERS:
            why = ("ONNX Runtime could not load a GPU provider here (this build offers "
                   f"{', '.join(ort.get_available_providers())}; check the NVIDIA driver and CUDA/cuDNN "
                   "libraries)")
            if not allow_cpu_fallback:
                raise DeviceError(f"--device cuda: {why}, so nothing would run on the GPU "
                                  "(--allow-cpu-fallback runs on the CPU instead)")
            self.note = f"--device cuda: {why}; running on the CPU as --allow-cpu-fallback allows"
        self.device_index = device.index
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.device = f"cuda:{device.index}" if self.on_gpu else (
            "cpu" if self.provider == "CPUExecutionProvider" else self.provider)
        inputs = self.session.get_inputs()
        inp = inputs[0]
        self.extra_names = {i.name for i in inputs[1:]}
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.input_type = inp.type
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def __call__(self, batch: np.ndarray, extra: dict | None = None) -> np.ndarray:
        """``batch`` uint8 ``(B, H, W, 3)``; ``extra`` further named inputs the graph takes."""
        extra = {k: v for k, v in (extra or {}).items() if k in self.extra_names}
        if self.fixed_batch and batch.shape[0] != self.fixed_batch:
            if extra:
                raise DeviceError("fixed-batch detector files are not supported: export with a dynamic batch")
            return np.concatenate([self._run_padded(batch[i:i + self.fixed_batch])
                                   for i in range(0, batch.shape[0], self.fixed_batch)])
        return self._run(batch, extra)

    def _run(self, batch: np.ndarray, extra: dict | None = None) -> np.ndarray:
        if not self.on_gpu:
            return self.session.run(None, {self.input_name: batch, **(extra or {})})[0].astype(np.float32, copy=False)
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(batch), "cuda", self.device_index))
        for k, v in (extra or {}).items():
            binding.bind_cpu_input(k, v)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.device_index)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    def _run_padded(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        if n < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        return self._run(chunk)[:n]
