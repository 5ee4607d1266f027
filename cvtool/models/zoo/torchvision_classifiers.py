"""torchvision's ImageNet classifiers with their official weights (downloaded when online).

The metadata below (URL, checksum prefix, evaluation transforms, accuracy) is torchvision's
own, written out so that listing and resolving models never imports torch or torchvision.
"""

from cvtool.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from cvtool.models.registry import ModelSpec, Weights, register

_BASE = "https://download.pytorch.org/models/"

# name, file, resize, interpolation, top-1, parameters (M)
_CLASSIFIERS = (
    ("resnet18", "resnet18-f37072fd.pth", 256, "bilinear", 69.758, 11.7),
    ("resnet50", "resnet50-11ad3fa6.pth", 232, "bilinear", 80.858, 25.6),
    ("mobilenet_v2", "mobilenet_v2-7ebf99e0.pth", 232, "bilinear", 72.154, 3.5),
    ("mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth", 232, "bilinear", 75.274, 5.5),
    ("mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth", 256, "bilinear", 67.668, 2.5),
    ("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 256, "bicubic", 77.692, 5.3),
    ("convnext_tiny", "convnext_tiny-983f1562.pth", 236, "bilinear", 82.52, 28.6),
    ("vit_b_16", "vit_b_16-c867db91.pth", 256, "bilinear", 81.072, 86.6),
    ("alexnet", "alexnet-owt-7be5be79.pth", 256, "bilinear", 56.522, 61.1),
    ("vgg16", "vgg16-397923af.pth", 256, "bilinear", 71.592, 138.4),
)

for _name, _file, _resize, _interp, _top1, _params in _CLASSIFIERS:
    register(ModelSpec(
        name=_name,
        task="classify",
        builder=f"torchvision.models:{_name}",
        builder_kwargs={"weights": None},
        # ViT: position embeddings fix 224×224. AlexNet/VGG: adaptive pooling to a fixed grid,
        # which ONNX export can only write for a known input size.
        input_sizes="fixed" if _name.startswith("vit_") else
        "static" if _name in ("alexnet", "vgg16") else "dynamic",
        description=f"torchvision {_name} ImageNet classifier ({_params}M parameters).",
        weights=Weights(
            filename=_file,
            preprocess=Preprocess(resize=_resize, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  interpolation=_interp),
            labels="imagenet",
            license="BSD-3-Clause (torchvision); trained on ImageNet-1k, see its terms",
            source="torchvision official ImageNet weights",
            url=_BASE + _file,
            sha256_prefix=_file.rsplit("-", 1)[1].split(".")[0],
            metrics={"imagenet_top1": _top1},
        ),
    ))
