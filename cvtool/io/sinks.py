"""Where records and pictures go. The pieces live in their own modules and are re-exported here:

- :mod:`cvtool.io.atomic`: the one atomic file writer (:class:`AtomicFile`, ``write_bytes_atomic``).
- :mod:`cvtool.io.records`: JSON Lines / CSV / JSON record writers.
- :mod:`cvtool.io.savers`: ``--save`` pictures and videos, per-input artifacts.
- this module: the detection outputs (``--save-crops``, ``--coco-json``, ``--yolo-txt``).

Only the standard library at import time (``cli/detect.py`` imports it for ``--help``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cvtool.io.atomic import AtomicFile, SinkError, make_folder, write_bytes_atomic  # noqa: F401
from cvtool.io.records import RecordWriter, format_for  # noqa: F401
from cvtool.io.savers import ArtifactSaver, PictureSaver, unique_stem, video_codec  # noqa: F401


class CropSaver:
    """``--save-crops DIR``: one image per detection, ``DIR/<label>/<stem>[_f<frame>]_<n>.jpg``."""

    needs_pixels = True

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.folder = make_folder(folder, "--save-crops")
        self.overwrite = overwrite
        self._names: dict[str, str] = {}

    def add(self, record: dict, frame) -> None:
        import cv2

        stem = unique_stem(record, self._names)
        paths = []
        for n, det in enumerate(record.get("detections", [])):
            x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
            if x2 <= x1 or y2 <= y1:
                continue
            crop = frame.rgb[y1:y2, x1:x2]
            folder = self.folder / (det["label"].replace("/", "_").replace(" ", "_") or str(det["class_id"]))
            folder.mkdir(exist_ok=True)
            path = folder / f"{stem}_{n}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            if ok:
                write_bytes_atomic(path, buf.tobytes(), self.overwrite)
                paths.append(str(path))
        record["crops"] = paths

    def close(self, interrupted: bool = False) -> None:
        pass


class CocoResultsWriter:
    """``--coco-json FILE``: detections in COCO's results format, written atomically at the end.

    ``image_id``: the id ``ids`` maps the file name to (ground truth given), else the number in a
    COCO-style file name (``000000397133.jpg`` → 397133), else the picture's position in the run
    (1-based); an id already given to another picture is never reused (the next free one is
    taken). ``category_id`` is the model's class id (the 90-id COCO numbering for COCO models),
    or what ``categories`` maps it to (e.g. an 80-class YOLO file's ids to COCO's)."""

    def __init__(self, path: str | os.PathLike | None, overwrite: bool = False,
                 ids: dict[str, int] | None = None, categories: dict[int, int] | None = None):
        self.file = AtomicFile(path, overwrite=overwrite) if path is not None else None
        self.ids, self.results, self.n = ids, [], 0
        self.categories = categories or {}
        self.image_ids: list[int] = []
        self._given: dict[str, int] = {}

    def image_id(self, record: dict) -> int | None:
        name = Path(record["source"]).name
        if self.ids is not None:
            return self.ids.get(name)
        key = f"{record['source']}#{record.get('frame')}"
        if key not in self._given:
            stem = Path(name).stem
            want = int(stem) if stem.isdigit() and record.get("frame") is None else self.n
            taken = set(self._given.values())
            while want in taken:
                want = max(taken) + 1
            self._given[key] = want
        return self._given[key]

    def add(self, record: dict, frame) -> None:
        self.n += 1
        image_id = self.image_id(record)
        record["image_id"] = image_id
        if image_id is None:
            return
        self.image_ids.append(image_id)
        for det in record.get("detections", []):
            x1, y1, x2, y2 = det["box"]
            self.results.append({"image_id": image_id,
                                 "category_id": self.categories.get(det["class_id"], det["class_id"]),
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                 "score": det["score"]})

    def close(self, interrupted: bool = False) -> None:
        if self.file is not None:
            fh = self.file.__enter__()
            json.dump(self.results, fh)
            self.file.__exit__(KeyboardInterrupt if interrupted else None, None, None)


class YoloTxtWriter:
    """``--yolo-txt DIR``: one ``<stem>.txt`` per picture, a line per detection:
    ``class x_center y_center width height score`` (normalised; class = contiguous 0–79 index)."""

    def __init__(self, folder: str | os.PathLike, class_index: dict[int, int], overwrite: bool = False):
        self.folder = make_folder(folder, "--yolo-txt")
        self.index, self.overwrite = class_index, overwrite
        self._names: dict[str, str] = {}

    def add(self, record: dict, frame) -> None:
        w, h = frame.orig_size
        stem = unique_stem(record, self._names)
        lines = []
        for det in record.get("detections", []):
            x1, y1, x2, y2 = det["box"]
            cls = self.index.get(det["class_id"], det["class_id"])
            lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                         f"{(y2 - y1) / h:.6f} {det['score']:.5f}")
        path = self.folder / f"{stem}.txt"
        write_bytes_atomic(path, ("\n".join(lines) + ("\n" if lines else "")).encode(), self.overwrite)
        record["yolo_txt"] = str(path)

    def close(self, interrupted: bool = False) -> None:
        pass
