"""`cvtool detect`: COCO objects in images, folders and videos."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o
from cvtool.io.sinks import CocoResultsWriter  # stdlib-only module: cheap for --help


@o.shared(*o.RECORDS, *o.ENGINE)
def detect(
    sources: o.Sources,
    model: o.ModelOpt = "ssd_mobilenet_v2_coco",
    weights: o.WeightsOpt = None,
    conf: Annotated[Optional[float], typer.Option("--conf", min=0.0, max=1.0, help="Minimum score of a detection (default 0.3; 0.01 with --eval).", show_default=False)] = None,
    iou: Annotated[float, typer.Option("--iou", min=0.0, max=1.0, help="NMS IoU threshold (per class; across classes with --agnostic-nms).")] = 0.6,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Only these classes: names or ids, comma-separated (e.g. person,cat).")] = None,
    max_det: Annotated[int, typer.Option("--max-det", min=1, help="At most this many detections per picture.")] = 100,
    agnostic_nms: Annotated[bool, typer.Option("--agnostic-nms", help="Also suppress overlapping boxes of different classes.")] = False,
    imgsz: o.Imgsz("Network input size, where the model allows.") = None,
    save: o.Save("Folder for copies of the inputs with the boxes drawn on them (and annotated videos).") = None,
    save_crops: Annotated[Optional[Path], typer.Option("--save-crops", help="Folder for one cropped image per detection.")] = None,
    coco_json: Annotated[Optional[Path], typer.Option("--coco-json", help="Write detections in COCO results format to this file.")] = None,
    yolo_txt: Annotated[Optional[Path], typer.Option("--yolo-txt", help="Folder for YOLO label files (one .txt per picture).")] = None,
    eval_gt: o.Eval("COCO-format ground truth (instances.json): print mAP@[.5:.95], mAP@.5 and per-class AP; pictures are matched by file name.") = None,
    *,
    opts: o.Options,
) -> None:
    """Detect objects: boxes in picture pixels with score, class id and label, one record per picture.

    Examples:
      cvtool detect sample_images/coffee.jpg
      cvtool detect photos/ --classes person,dog --conf 0.5 > boxes.jsonl
      cvtool detect clip.mp4 --vid-stride 5 --save annotated/
      cvtool detect photos/ --coco-json results.json --yolo-txt labels/
    """
    from cvtool.io.sinks import CropSaver, YoloTxtWriter
    from cvtool.models.loader import ModelError, load, with_imgsz
    from cvtool.render.draw import draw_detections
    from cvtool.tasks.detect import TASK, ClassesError, coco_categories, detector_for, parse_classes
    from cvtool.tasks.evaluate import EvalError, load_ground_truth

    c.check_format(opts.fmt)
    if opts.engine == "ray" and any(x is not None for x in (save_crops, coco_json, yolo_txt, eval_gt)):
        raise c.fail("--save-crops, --coco-json, --yolo-txt and --eval are not supported with --engine ray")
    if conf is None:
        conf = 0.01 if eval_gt is not None else 0.3
    try:
        gt, gt_ids = load_ground_truth(eval_gt) if eval_gt is not None else (None, None)
        loaded = load(model, weights, task=TASK, notify=None if not opts.quiet else (lambda _m: None))
        if imgsz is not None and loaded.foreign is not None:  # another exporter's file
            loaded = with_imgsz(loaded, imgsz)
        elif imgsz is not None and imgsz != loaded.preprocess.crop:
            sizes = loaded.spec.input_sizes if loaded.spec else "fixed"
            if sizes == "fixed" or loaded.kind == "onnx":
                raise ModelError(f"--imgsz {imgsz}: {loaded.name} runs at {loaded.preprocess.crop}x"
                                 f"{loaded.preprocess.crop} only")
            if sizes != "dynamic" or (loaded.spec and loaded.spec.exportable):
                raise ModelError(f"--imgsz {imgsz}: export {loaded.name} at that size "
                                 "(`cvtool export --imgsz`) and pass the file with --model")
            loaded = dataclasses.replace(loaded, preprocess=loaded.preprocess.at_size(imgsz))
        wanted = parse_classes(classes, loaded.labels)
    except (ModelError, ClassesError, EvalError) as e:
        raise c.fail(str(e)) from None
    detector = detector_for(loaded, conf=conf, iou=iou, classes=wanted, max_det=max_det, agnostic=agnostic_nms)

    def make_sinks(m):
        sinks = []
        if save_crops is not None:
            sinks.append(CropSaver(save_crops, opts.overwrite))
        if yolo_txt is not None:
            sinks.append(YoloTxtWriter(yolo_txt, detector.contiguous, opts.overwrite))
        if gt is not None:
            sinks.append(_Evaluation(coco_json, opts.overwrite, gt, gt_ids, coco_categories(m, gt)))
        elif coco_json is not None:
            sinks.append(CocoResultsWriter(coco_json, opts.overwrite, categories=coco_categories(m)))
        return sinks

    run.run_task_command(
        TASK, sources, opts, model=model, weights=weights, loaded=loaded, make_postprocess=lambda m: detector,
        annotate=lambda rgb, rec: draw_detections(rgb, rec["detections"]),
        table_row=_row, table_columns=["source", "count", "detections"], make_sinks=make_sinks, save=save)


class _Evaluation(CocoResultsWriter):
    """Collects COCO results matched to the ground truth by file name; at the end prints mAP
    and per-class AP (stderr) and writes ``--coco-json`` if asked."""

    def __init__(self, path, overwrite, gt, ids, categories=None):
        super().__init__(path, overwrite, ids, categories)
        self.gt = gt

    def close(self, interrupted: bool = False) -> None:
        super().close(interrupted)
        if interrupted:
            return
        from cvtool.tasks.evaluate import coco_map

        if not self.image_ids:
            import sys

            print("cvtool: --eval: none of the inputs' file names is in the ground truth; nothing to "
                  "evaluate", file=sys.stderr)
            return
        _print_eval(coco_map(self.gt, self.results, self.image_ids), gt_images=len(self.ids))


def _print_eval(res: dict, gt_images: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    t = Table(title=f"COCO box AP on {res['images']} of {gt_images} ground-truth images "
                    f"({res['detections']} detections)", header_style="bold")
    t.add_column("class")
    t.add_column("AP@[.5:.95]", justify="right")
    t.add_row("all (mAP)", f"{res['map']:.3f}")
    t.add_row("all (mAP@.5)", f"{res['map50']:.3f}")
    for name, ap in sorted(res["per_class"].items(), key=lambda kv: -kv[1]):
        t.add_row(name, f"{ap:.3f}")
    console.print(t)


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    dets = ", ".join(f"{x['label']} {x['score']:.2f}" for x in d["detections"][:8])
    more = f" (+{d['count'] - 8})" if d["count"] > 8 else ""
    return [name, str(d["count"]), dets + more]
