"""ONNX Runtime: exporting once into the cache, choosing providers, running sessions.

Inference tasks run here by default. A registered model is exported to ONNX the first time it
is used, with its preprocessing and labels embedded as metadata, and cached under
``$CVTOOL_HOME/onnx`` with a key over everything that changes the graph (weights digest, opset,
cvtool and torch versions), so an upgrade re-exports and a second run starts without torch.
Sessions try TensorRT > CUDA > CPU and report the provider that really loaded.
"""

from __future__ import annotations

import hashlib
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
                dynamic_batch: bool = True, input_dtype: str = "uint8") -> Path:
    """Export ``module`` (input ``(B, *input_shape)`` of ``input_dtype``) to ``path``
    atomically, with cvtool metadata."""
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        dummy = torch.zeros((1, *input_shape), dtype=getattr(torch, input_dtype))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(), (dummy,), tmp, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
            )
        model = onnx.load(tmp)
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = META_PREFIX + k, v
        model.producer_name = "cvtool"
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cached_export(cache_dir: Path, name: str, key_fields: dict, build: Callable[[], object],
                  input_shape: tuple[int, int, int], metadata: dict[str, str],
                  opset: int = DEFAULT_OPSET) -> tuple[Path, bool]:
    """Return ``(path, exported_now)`` of the cached ONNX file, exporting it if missing."""
    from cvtool import __version__

    fields = dict(key_fields, opset=opset, cvtool=__version__)
    try:
        from importlib.metadata import version

        fields["torch"] = version("torch")
    except Exception:
        pass
    path = Path(cache_dir) / f"{name}-{export_key(fields)}.onnx"
    if path.is_file():
        return path, False
    export_onnx(build(), path, input_shape, metadata, opset)
    return path, True


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """cvtool's metadata from an ONNX file (keys without the ``cvtool.`` prefix)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(META_PREFIX)}


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only; we report the provider ourselves
    return ort


def provider_chain(device: Device, cache_dir: Path | None = None) -> list:
    """Providers to try for ``device``, best first, among those this onnxruntime build has."""
    ort = _ort()
    available = set(ort.get_available_providers())
    want_gpu = device.kind == "cuda" or (device.kind == "auto" and nvidia_gpu_present())
    chain: list = []
    if want_gpu:
        if "TensorrtExecutionProvider" in available and os.environ.get("CVTOOL_TENSORRT", "1") != "0":
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


class OnnxRunner:
    """A cached ONNX Runtime session for one file on one device."""

    backend = "onnxruntime"

    def __new__(cls, path, device: Device, threads: int | None = None, cache_dir: Path | None = None):
        key = (str(Path(path).resolve()), str(device), threads)
        if key not in _SESSIONS:
            inst = super().__new__(cls)
            inst._init(path, device, threads, cache_dir)
            _SESSIONS[key] = inst
        return _SESSIONS[key]

    def _init(self, path, device: Device, threads: int | None, cache_dir: Path | None) -> None:
        ort = _ort()
        if device.kind == "cuda" and hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN libraries from the nvidia-* wheels torch brings, when present
                ort.preload_dlls()
            except Exception:
                pass
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads or cpu_count())
        so.log_severity_level = 3
        # Idle ORT threads would otherwise spin and steal the cores that decode the next batch.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chain = provider_chain(device, cache_dir)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=chain)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeviceError(f"{path}: ONNX Runtime cannot load this model ({first[:300]})") from None
        used = self.session.get_providers()
        self.provider = used[0]
        if device.kind == "cuda" and self.provider == "CPUExecutionProvider":
            raise DeviceError(
                "--device cuda: ONNX Runtime could not load a GPU provider here "
                f"(this build offers {', '.join(ort.get_available_providers())}; check the NVIDIA "
                "driver and CUDA/cuDNN libraries), so nothing would run on the GPU")
        self.device = "cpu" if self.provider in ("CPUExecutionProvider",) else (
            f"cuda:{device.index}" if self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            else self.provider)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.input_type = inp.type
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch and batch.shape[0] != self.fixed_batch:
            return np.concatenate([self._run_padded(batch[i:i + self.fixed_batch])
                                   for i in range(0, batch.shape[0], self.fixed_batch)])
        return self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)

    def _run_padded(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        if n < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        return self.session.run(None, {self.input_name: chunk})[0][:n].astype(np.float32, copy=False)
