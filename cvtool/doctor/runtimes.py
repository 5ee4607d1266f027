"""The two runtimes: which ONNX Runtime providers really load (a one-node model is run through
cvtool's own :class:`~cvtool.runtime.onnx.OnnxRunner`, which reports the provider the session
really got), and what torch sees (CUDA, MPS, threads)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cvtool.doctor.report import Outcome, Problem, first_line
from cvtool.runtime.device import Device, DeviceError, cpu_count, nvidia_gpu_present

# The device cvtool asks for to reach each provider it uses (runtime/onnx.provider_chain).
PROVIDER_DEVICE = {"TensorrtExecutionProvider": "cuda", "CUDAExecutionProvider": "cuda",
                   "CoreMLExecutionProvider": "mps", "CPUExecutionProvider": "cpu"}


def gpu_visible() -> tuple[bool, str]:
    """Whether an NVIDIA GPU is there and not hidden by CUDA_VISIBLE_DEVICES; and why not."""
    if not nvidia_gpu_present():
        return False, "no NVIDIA GPU on this machine"
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False, f"CUDA_VISIBLE_DEVICES={hidden!r} hides the GPUs"
    return True, ""


def tiny_model(folder: Path) -> Path:
    """A one-node ONNX graph (uint8 NHWC in, the same out), as cvtool's files take pictures."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 2, 2, 3])
    y = helper.make_tensor_value_info("output", TensorProto.UINT8, ["batch", 2, 2, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "cvtool_doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cvtool")
    model.ir_version = 8  # read by every ONNX Runtime cvtool supports
    path = folder / "doctor-identity.onnx"
    onnx.save(model, str(path))
    return path


class ProviderProbe:
    """Runs the tiny model once per provider; each check asks it for one provider."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="cvtool-doctor-")
        self.model = None
        self.available: list[str] = []

    def close(self) -> None:
        self._dir.cleanup()

    def prepare(self) -> Outcome:
        import onnxruntime as ort

        self.available = list(ort.get_available_providers())
        try:
            self.model = tiny_model(Path(self._dir.name))
        except Exception as e:
            raise Problem(f"cannot write the test model with onnx ({type(e).__name__}: {first_line(e)})",
                          "see the onnx check above") from None
        return Outcome(f"onnxruntime {ort.__version__}: {', '.join(self.available)}", "ok",
                       {"version": ort.__version__, "available": self.available,
                        "device": ort.get_device()})

    def session(self, device: Device, tensorrt: bool = True):
        """A fresh OnnxRunner on the tiny model, run once; returns the runner."""
        import numpy as np

        from cvtool.runtime.onnx import OnnxRunner

        runner = OnnxRunner.fresh(self.model, device, threads=1, cache_dir=None, tensorrt=tensorrt)
        x = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)[:1]
        out = runner(x)
        if out.shape != x.shape or not np.array_equal(out, x):
            raise Problem(f"{runner.provider}: the one-node test model gave a wrong answer",
                          "reinstall onnxruntime (pip install --force-reinstall onnxruntime-gpu or onnxruntime)")
        return runner

    def check_provider(self, provider: str) -> Outcome:
        """Whether a session really gets ``provider`` when cvtool asks for it."""
        if self.model is None:
            raise Problem("not checked: ONNX Runtime or its test model is not usable", "see the checks above")
        kind = PROVIDER_DEVICE.get(provider)
        data = {"provider": provider, "available": True}
        if kind is None:
            return Outcome("in this build, but cvtool does not use it", "info", {**data, "loads": None})
        visible, why_not = gpu_visible()
        if provider == "TensorrtExecutionProvider" and os.environ.get("CVTOOL_TENSORRT", "1") == "0":
            return Outcome("in this build; cvtool does not use it (CVTOOL_TENSORRT=0)", "info", {**data, "loads": None})
        try:
            runner = self.session(Device(kind), tensorrt=provider == "TensorrtExecutionProvider")
            got = runner.provider
        except DeviceError as e:
            got, error = None, str(e)
        else:
            error = None
        data.update(loads=got == provider, got=got)
        if got == provider:
            where = f" ({runner.device})" if runner.device != "cpu" else ""
            return Outcome(f"loads and runs{where}", "ok", data)
        said = f"cvtool got {got} instead" if got else first_line(Exception(error))
        if provider == "CPUExecutionProvider":
            raise Problem(f"does not load: {said}", "pip install --force-reinstall onnxruntime-gpu (or onnxruntime)", data)
        if kind == "cuda" and not visible:
            return Outcome(f"in this build; not usable here ({why_not})", "info", data)
        if provider == "TensorrtExecutionProvider":
            return Outcome(f"does not load ({said}); cvtool uses CUDA instead (TensorRT needs its own "
                           "libraries: pip install tensorrt)", "info", data)
        if kind == "mps":
            return Outcome(f"does not load ({said})", "info", data)
        from cvtool.doctor.packages import version_of

        raise Problem(
            f"an NVIDIA GPU is here but {provider} does not load: {said}",
            f"check `nvidia-smi`, and that the CUDA and cuDNN libraries onnxruntime-gpu "
            f"{version_of('onnxruntime-gpu') or ''} was built for are installed (a torch build with CUDA brings "
            "them; https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements)",
            data)

    def check_auto(self) -> Outcome:
        """What ``--device auto`` gets on ONNX Runtime (the default of every inference command)."""
        if self.model is None:
            raise Problem("not checked: ONNX Runtime or its test model is not usable", "see the checks above")
        runner = self.session(Device("auto"))
        return Outcome(f"{runner.provider} ({runner.device})", "ok",
                       {"provider": runner.provider, "device": runner.device})


def import_torch():
    try:
        import torch
    except Exception as e:  # ImportError, OSError from a missing CUDA library ...
        from cvtool.doctor.packages import version_of

        raise Problem(f"`import torch` fails: {type(e).__name__}: {first_line(e)}",
                      "pip install --force-reinstall torch" if version_of("torch") else "pip install torch",
                      {"imports": False}) from None
    return torch


def check_torch_device() -> Outcome:
    torch = import_torch()
    visible, why_not = gpu_visible()
    data = {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if data["cuda_available"]:
        n = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(n)]
        (torch.ones(2, device="cuda") * 2).sum().item()  # really runs a kernel
        data.update(devices=names, device_count=n)
        return Outcome(f"cuda: {names[0]}{f' (+{n - 1} more)' if n > 1 else ''}, CUDA {torch.version.cuda}",
                       "ok", data)
    if data["mps_available"]:
        (torch.ones(2, device="mps") * 2).sum().item()
        return Outcome("mps (Apple GPU)", "ok", data)
    if visible:
        build = (f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build")
        raise Problem(f"an NVIDIA GPU is here but torch {torch.__version__} ({build}) cannot use it",
                      "install a torch build for this GPU's driver (https://pytorch.org/get-started/locally/) "
                      "and check `nvidia-smi`", data)
    return Outcome(f"cpu ({why_not}{'' if torch.version.cuda else '; a CPU-only torch build'})", "ok", data)


def check_torch_threads() -> Outcome:
    torch = import_torch()

    data = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
            "cpus_usable": cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    return Outcome(f"{data['intra_op']} intra-op, {data['inter_op']} inter-op threads; {cpu_count()} CPUs usable "
                   f"(--threads defaults to that)", "ok", data)
