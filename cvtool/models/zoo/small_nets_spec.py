"""Registry entries for the networks `cvtool train` builds from nothing (no torch import here).

They have no weights to fetch: train one (``cvtool train DATA --model cnn``) and pass the
checkpoint it writes (``--model runs/NAME/best.pt``) to classify, export, visualize or attack.
The defaults below (1000 classes, RGB, 32×32 grid) only describe the bare builder; a checkpoint
records the real ones.
"""

from cvtool.models.preprocess import Preprocess
from cvtool.models.registry import ModelSpec, Weights, register

_DESCRIPTIONS = {
    "knn": "k nearest neighbours on pixels (L1/L2, k by cross-validation); train it with `cvtool train`.",
    "linear": "Linear classifier on pixels (softmax or multiclass SVM loss); train it with `cvtool train`.",
    "mlp": "Multi-layer perceptron on pixels; train it with `cvtool train`.",
    "cnn": "Small CNN (conv-BN-ReLU-pool blocks, dropout); train it with `cvtool train`.",
}

for _name, _desc in _DESCRIPTIONS.items():
    register(ModelSpec(
        name=_name,
        task="classify",
        builder=f"cvtool.models.zoo.small_nets:{_name}",
        description=_desc,
        # The classifier parts see a fixed grid: other sizes are pooled to it, and an ONNX file
        # is exported for the trained size.
        input_sizes="static",
        weights=Weights(
            filename=f"{_name}-untrained.pt",
            preprocess=Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
            labels="imagenet",
            license="yours (weights come from your own `cvtool train` run)",
            source="none shipped: `cvtool train DATA --model " + _name + "` writes a checkpoint to use with --model",
            train_only=True,
        ),
    ))
