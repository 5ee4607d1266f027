"""torchvision's COCO detectors with their official weights (downloaded when online).

Metadata is torchvision's own, written out so that listing models never imports torch. These
networks normalise internally and run their own NMS. Their own ``GeneralizedRCNNTransform``
would also resize; cvtool does that resize itself, exactly as the transform does (R-CNN family,
RetinaNet, FCOS: shorter side to 800, longer side at most 1333, bilinear without antialiasing;
SSD300/SSDlite320: stretched to their square, likewise), and tells the transform to leave the
picture as it comes (:class:`~cvtool.models.detection.TorchvisionDetector`). Records look
exactly like those of the bundled detector. They run on torch: their data-dependent heads do
not trace into a batch-dynamic ONNX graph, and `cvtool export` says so.
"""

from cvtool.models.preprocess import Preprocess
from cvtool.models.registry import ModelSpec, Weights, register

_BASE = "https://download.pytorch.org/models/"

# name, file, input size (R-CNN: min_size; SSD: the square), COCO box mAP, parameters (M)
_DETECTORS = (
    ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", 800, 46.7, 43.7),
    ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", 800, 32.8, 19.4),
    ("retinanet_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth", 800, 41.5, 38.2),
    ("fcos_resnet50_fpn", "fcos_resnet50_fpn_coco-99b0c9b7.pth", 800, 39.2, 32.3),
    ("ssdlite320_mobilenet_v3_large", "ssdlite320_mobilenet_v3_large_coco-a79551df.pth", 320, 21.3, 3.4),
    ("ssd300_vgg16", "ssd300_vgg16_coco-b556d3b4.pth", 300, 25.1, 35.6),
)

for _name, _file, _size, _map, _params in _DETECTORS:
    register(ModelSpec(
        name=_name,
        task="detect",
        builder=f"torchvision.models.detection:{_name}",
        # no backbone download: the full COCO weights are loaded afterwards
        builder_kwargs={"weights": None, "weights_backbone": None},
        description=f"torchvision {_name} COCO detector ({_params}M parameters).",
        input_sizes="dynamic",
        head="torchvision",
        exportable=False,
        export_note="torchvision's detection heads do not trace into a batch-dynamic ONNX graph with correct outputs; it runs on torch",
        weights=Weights(
            filename=_file,
            # the network normalises with its own mean/std
            preprocess=(Preprocess(kind="stretch", resize=0, crop=_size, antialias=False,
                                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) if _name.startswith("ssd") else
                        Preprocess(kind="rcnn", resize=_size, max_size=1333, crop=_size, antialias=False,
                                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))),
            labels="coco",
            license="BSD-3-Clause (torchvision); trained on COCO, see its terms",
            source="torchvision official COCO weights",
            url=_BASE + _file,
            sha256_prefix=_file.rsplit("-", 1)[1].split(".")[0],
            metrics={"coco_map": _map},
        ),
    ))
