"""Write the bundled SSD-MobileNet-v2 detector in *Ultralytics' ONNX layout*, a stand-in for a
`yolo export format=onnx` file with real weights (no Ultralytics model can be downloaded here).

The file looks like an Ultralytics detect export: input ``images`` float ``(1, 3, 300, 300)``
RGB in [0, 1], output ``output0`` ``(1, 4 + 80, 1917)`` (centre x, y, width, height in input
pixels, then one score per class for the 80 COCO classes, no background, no objectness, no NMS),
and the exporter's metadata keys (``task``, ``names`` as a dict literal, ``imgsz``, ``stride``,
``batch``, ``args``...). cvtool then letterboxes, decodes and runs NMS itself, as for any such file.

    python docs/examples/ssd_as_yolo_onnx.py OUT.onnx
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, too


def build(out: str, size: int = 300) -> str:
    import onnx
    import torch
    from torch import nn

    from cvtool.models.loader import load

    model = load("ssd_mobilenet_v2_coco")
    net = model.torch_module().net.net.eval()  # Normalized → DetectWithNMS → the dense SSD
    keep = [i for i, n in enumerate(model.labels) if n and not n.startswith("__")]  # 90-id → 80

    class YoloLayout(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("cols", torch.tensor(keep), persistent=False)

        def forward(self, images):
            boxes, scores = self.net(images)  # (B, N, 4) normalised x1y1x2y2, (B, N, 91)
            b = boxes * size
            cxcywh = torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                                  b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], 1)  # (B, 4, N)
            return torch.cat([cxcywh, scores[..., self.cols].transpose(1, 2)], 1)

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(YoloLayout().eval(), torch.zeros(1, 3, size, size), out, dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["output0"])
    names = {k: model.labels[i] for k, i in enumerate(keep)}
    meta = {"description": "SSD-MobileNet-v2 COCO in Ultralytics' ONNX layout (cvtool docs example)",
            "author": "Ultralytics", "version": "8.3.40", "stride": 32, "task": "detect", "batch": 1,
            "imgsz": [size, size], "names": names, "args": {"batch": 1, "half": False, "nms": False}}
    m = onnx.load(out)
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=str(v))
    onnx.save(m, out)
    return out


if __name__ == "__main__":
    print(build(sys.argv[1]))
