"""torchvision's segmentation models with their official weights (downloaded when online).

Semantic segmenters (21 Pascal VOC classes, trained on a COCO subset with VOC's categories):
the network returns per-pixel logits ``(B, 21, H, W)`` at its input size; cvtool feeds it the
picture as torchvision's ``SemanticSegmentation(resize_size=520)`` transform does (shorter side
resized to 520 with antialiasing, aspect kept, no crop), resizes the logits back to the picture's
own pixels and takes the argmax (:mod:`cvtool.tasks.segment`). They export to ONNX with a free
height and width.

Instance segmentation: Mask R-CNN (COCO, 90-id numbering), fed like the R-CNN detectors
(shorter side 800, longer at most 1333, no antialiasing), torch only like torchvision's detectors (its data-dependent heads do not trace into a batch-dynamic ONNX graph).

URLs, checksum prefixes and metrics are torchvision's own (``torchvision/models/segmentation/*.py``,
``torchvision/models/detection/mask_rcnn.py``), written out so that listing models never imports
torch. ``head`` tells the segment task which output the network gives: ``"semantic"`` (logits) or
``"instance"`` (Mask R-CNN rows, see :mod:`cvtool.models.segmentation`).
"""

from cvtool.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from cvtool.models.registry import ModelSpec, Weights, register

_BASE = "https://download.pytorch.org/models/"
SIZE = 520  # torchvision's evaluation size for these weights (SemanticSegmentation(resize_size=520))

# name, file, has an auxiliary head in the official weights, VOC mIoU, pixel acc., parameters (M), GFLOPS
_SEMANTIC = (
    ("deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large-fc3c493d.pth", True, 60.3, 91.2, 11.0, 10.5),
    ("lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large-d234d4ea.pth", False, 57.9, 91.2, 3.2, 2.1),
    ("fcn_resnet50", "fcn_resnet50_coco-1167a1af.pth", True, 60.5, 91.4, 35.3, 152.7),
    ("deeplabv3_resnet50", "deeplabv3_resnet50_coco-cd0a2569.pth", True, 66.4, 92.4, 42.0, 178.7),
    ("deeplabv3_resnet101", "deeplabv3_resnet101_coco-586e9e4e.pth", True, 67.4, 92.4, 61.0, 258.7),
)

for _name, _file, _aux, _miou, _acc, _params, _gflops in _SEMANTIC:
    register(ModelSpec(
        name=_name,
        task="segment",
        builder="cvtool.models.segmentation:torchvision_semantic",
        builder_kwargs={"arch": _name, "aux": _aux},
        description=f"torchvision {_name} semantic segmenter, 21 Pascal VOC classes "
                    f"({_params}M parameters, {_gflops} GFLOPS at 520x520).",
        input_sizes="dynamic",
        head="semantic",
        weights=Weights(
            filename=_file,
            preprocess=Preprocess(kind="shorter", resize=SIZE, crop=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            labels="voc",
            license="BSD-3-Clause (torchvision); trained on COCO with VOC's 20 categories, see COCO's terms",
            source="torchvision official COCO-with-VOC-labels weights",
            url=_BASE + _file,
            sha256_prefix=_file.rsplit("-", 1)[1].split(".")[0],
            metrics={"voc_miou": _miou, "pixel_acc": _acc},
        ),
    ))

register(ModelSpec(
    name="maskrcnn_resnet50_fpn_v2",
    task="segment",
    builder="torchvision.models.detection:maskrcnn_resnet50_fpn_v2",
    builder_kwargs={"weights": None, "weights_backbone": None},
    description="torchvision Mask R-CNN ResNet-50 FPN v2, COCO instance segmentation (46.4M parameters); "
                "use with `cvtool segment --instances`.",
    input_sizes="dynamic",
    head="instance",
    exportable=False,
    export_note="torchvision's detection heads do not trace into a batch-dynamic ONNX graph with correct outputs; it runs on torch",
    weights=Weights(
        filename="maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        # GeneralizedRCNNTransform's resize, done by cvtool; the network normalises with its own mean/std
        preprocess=Preprocess(kind="rcnn", resize=800, max_size=1333, crop=800, antialias=False,
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        labels="coco",
        license="BSD-3-Clause (torchvision); trained on COCO, see its terms",
        source="torchvision official COCO weights",
        url=_BASE + "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        sha256_prefix="73cbd019",
        metrics={"coco_box_map": 47.4, "coco_mask_map": 41.8},
    ),
))
