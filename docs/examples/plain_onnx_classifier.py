"""Write the bundled EfficientNet-Lite0 as a *plain* ONNX classifier, the way timm or
torchvision users export theirs: float input ``(B, 3, 224, 224)`` already normalised, logits
``(B, 1000)`` out, no metadata. It stands in for "a classifier from another tool" in
docs/models.md (cvtool cannot run it until told how to feed it).

    python docs/examples/plain_onnx_classifier.py OUT.onnx
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, too


def main(out: str) -> None:
    import torch

    from cvtool.models.loader import load

    net = load("efficientnet_lite0").torch_module().net.eval()  # the bare network, no normalisation
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), out, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
