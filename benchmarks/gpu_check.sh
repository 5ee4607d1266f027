#!/usr/bin/env bash
# One short check on a machine with an NVIDIA GPU, run from the repository root:
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log
# It installs cvtool from this working tree (its dependencies must already be installable there:
# torch with CUDA, onnxruntime-gpu; offline machines: set PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR),
# runs the tests marked `cuda`, exports the default classifier in fp32 and fp16 on the GPU with
# parity checks, exports the default detector (NMS in the graph), and prints the bench tables
# (torch eager, ONNX Runtime CPU, CUDA, TensorRT) for both.
set -euo pipefail
PY=${PYTHON:-python3}
export CVTOOL_HOME=${CVTOOL_HOME:-$(mktemp -d)} CVTOOL_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
$PY -m pip install -q -e ".[test]" 2>/dev/null || $PY -m pip install -q --no-deps -e .
$PY - <<'PY'
import onnxruntime as ort, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| onnxruntime", ort.__version__,
      ort.get_available_providers())
PY
$PY -m pytest -q -m cuda tests/
$PY -m cvtool export efficientnet_lite0 -o "$CVTOOL_HOME/lite0.onnx" --device cuda --overwrite
$PY -m cvtool export efficientnet_lite0 -o "$CVTOOL_HOME/lite0-fp16.onnx" --half --overwrite
$PY -m cvtool export ssd_mobilenet_v2_coco -o "$CVTOOL_HOME/ssd.onnx" --device cuda --overwrite
$PY -m cvtool classify sample_images --device cuda -f table
$PY -m cvtool detect sample_images --device cuda -f table
$PY -m cvtool models bench efficientnet_lite0 -f table
$PY -m cvtool models bench "$CVTOOL_HOME/lite0-fp16.onnx" -f table
$PY -m cvtool models bench ssd_mobilenet_v2_coco -f table
