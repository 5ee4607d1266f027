"""Detection accuracy against COCO-format ground truth, with pycocotools (optional dependency)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path


class EvalError(Exception):
    pass


def load_ground_truth(path: str | Path) -> tuple[object, dict[str, int]]:
    """The ground truth as a ``COCO`` object and its file-name → image-id map."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise EvalError("--eval needs pycocotools: pip install pycocotools (or pip install 'cvtool[eval]')") from None
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"--eval {path}: no such file")
    try:
        data = json.loads(path.read_text())
        if not all(k in data for k in ("images", "annotations", "categories")):
            raise ValueError("needs 'images', 'annotations' and 'categories'")
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = data
            gt.createIndex()
    except (ValueError, KeyError, TypeError) as e:
        raise EvalError(f"--eval {path}: not COCO-format ground truth ({e})") from None
    ids = {Path(img["file_name"]).name: int(img["id"]) for img in data["images"]}
    return gt, ids


def coco_map(gt, results: list[dict], image_ids: list[int]) -> dict:
    """COCO box mAP@[.5:.95], mAP@.5 and per-class AP over ``image_ids``."""
    import numpy as np
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results) if results else None
        if dt is None:
            return {"images": len(image_ids), "detections": 0, "map": 0.0, "map50": 0.0, "per_class": {}}
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (T iou, R recall, K classes, A areas, M maxdets)
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_class[gt.cats[cat_id]["name"]] = round(float(np.mean(p)), 4)
    return {"images": len(set(image_ids)), "detections": len(results), "map": round(float(ev.stats[0]), 4),
            "map50": round(float(ev.stats[1]), 4), "per_class": per_class}
