"""`cvtool segment`: per-pixel classes (semantic) or object masks (--instances)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o

DEFAULT_SEMANTIC = "deeplabv3_mobilenet_v3_large"
DEFAULT_INSTANCE = "maskrcnn_resnet50_fpn_v2"


@o.shared(*o.RECORDS, *o.ENGINE, batch=4)
def segment(
    sources: o.Sources,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=f"Registry name or cvtool .onnx file (default {DEFAULT_SEMANTIC}; {DEFAULT_INSTANCE} with --instances).", show_default=False)] = None,
    weights: o.WeightsOpt = None,
    instances: Annotated[bool, typer.Option("--instances", help="Instance segmentation: one mask per object (Mask R-CNN, COCO classes).")] = False,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Only these classes: names or ids, comma-separated (semantic: other classes' pixels become background).")] = None,
    conf: Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Instances: minimum score of an object.")] = 0.5,
    max_det: Annotated[int, typer.Option("--max-det", min=1, max=100, help="Instances: at most this many objects per picture.")] = 100,
    imgsz: o.Imgsz("Shorter side of the network input (the reference: 520; Mask R-CNN 800, longer side scaled from 1333).") = None,
    save: o.Save("Folder for class-index PNG masks (instances: one PNG per object) and coloured overlays.") = None,
    eval_gt: o.Eval("Folder of ground-truth class-index PNG masks, matched by file stem (255 = ignore): print mIoU and per-class IoU.") = None,
    eval_json: Annotated[Optional[Path], typer.Option("--eval-json", help="With --eval: also write the scores to this JSON file.")] = None,
    *,
    opts: o.Options,
) -> None:
    """Segment pictures: per-class pixel shares (semantic) or per-object masks as COCO RLE (--instances).

    Examples:
      cvtool segment sample_images/cat.jpg
      cvtool segment photos/ --save masks/ > seg.jsonl
      cvtool segment photos/ --instances --classes person --conf 0.7 --save objects/
      cvtool segment VOC/JPEGImages/ --eval VOC/SegmentationClass/
    """
    from cvtool.io.masks import MaskSaver
    from cvtool.models.loader import ModelError, load, with_imgsz
    from cvtool.render.masks import overlay
    from cvtool.tasks.detect import ClassesError, parse_classes
    from cvtool.tasks.segment import TASK, InstanceSegmenter, SemanticSegmenter, YoloSegmenter, mode_of
    from cvtool.tasks.segment_eval import EvalError, gt_folder

    c.check_format(opts.fmt)
    if opts.engine == "ray" and (save is not None or eval_gt is not None):
        raise c.fail("--save and --eval are not supported with --engine ray (records only)")
    name = model or (DEFAULT_INSTANCE if instances else DEFAULT_SEMANTIC)
    try:
        if eval_json is not None and eval_gt is None:
            raise ModelError("--eval-json needs --eval GT_DIR")
        gt = gt_folder(eval_gt) if eval_gt is not None else None
        if eval_json is not None and eval_json.exists() and not opts.overwrite:
            raise ModelError(f"{eval_json} already exists (pass --overwrite to replace it)")
        loaded = load(name, weights, task=TASK, notify=None if not opts.quiet else (lambda _m: None))
        mode = mode_of(loaded)
        if instances and mode != "instance":
            raise ModelError(f"--instances: {loaded.name} is a semantic segmenter; use an instance model "
                             f"such as {DEFAULT_INSTANCE}")
        if gt is not None and mode == "instance":
            raise ModelError("--eval scores semantic segmentation (class-index masks); it does not apply to "
                             f"instance models like {loaded.name}")
        if imgsz is not None and loaded.foreign is not None:  # another exporter's file
            loaded = with_imgsz(loaded, imgsz)
        elif imgsz is not None and imgsz != loaded.preprocess.crop:
            if loaded.kind == "onnx" and loaded.preprocess.fixed_size:
                raise ModelError(f"--imgsz {imgsz}: {loaded.name} was exported at {loaded.preprocess.crop}x"
                                 f"{loaded.preprocess.crop}; export it again with `cvtool export --imgsz {imgsz}`")
            loaded = dataclasses.replace(loaded, preprocess=loaded.preprocess.at_size(imgsz))
        wanted = parse_classes(classes, loaded.labels)
    except (ModelError, ClassesError, EvalError) as e:
        raise c.fail(str(e)) from None
    keep = save is not None or gt is not None
    post = (YoloSegmenter(loaded, conf=conf, classes=wanted, max_det=max_det, keep_masks=keep)
            if loaded.foreign is not None else InstanceSegmenter(loaded, conf=conf, classes=wanted, max_det=max_det, keep_masks=keep)
            if mode == "instance" else SemanticSegmenter(loaded, classes=wanted, keep_masks=keep))

    def make_sinks(m):
        sinks = []
        if gt is not None:
            sinks.append(_Evaluation(gt, m.labels, eval_json, opts.overwrite, opts.quiet))
        if save is not None:
            sinks.append(MaskSaver(save, opts.overwrite, overlay))
        return sinks

    run.run_task_command(
        TASK, sources, opts, model=name, weights=weights, loaded=loaded, make_postprocess=lambda m: post,
        annotate=None, table_row=_row, table_columns=["source", "result"], make_sinks=make_sinks)


class _Evaluation:
    """``--eval GT_DIR``: scores each picture against its ground-truth mask (record field
    ``eval``), and at the end prints mIoU and per-class IoU (stderr) and writes ``--eval-json``."""

    needs_pixels = False

    def __init__(self, folder: Path, labels: tuple[str, ...], json_path: Path | None, overwrite: bool,
                 quiet: bool):
        from cvtool.tasks.segment_eval import Confusion

        self.folder, self.labels, self.json_path, self.overwrite = folder, labels, json_path, overwrite
        self.quiet = quiet
        self.confusion = Confusion(len(labels))
        self.missing: list[str] = []
        self.unusable: list[str] = []
        self.pictures = 0

    def add(self, record: dict, frame) -> None:
        from cvtool.io.masks import MASK_KEY
        from cvtool.tasks.segment_eval import Confusion, EvalError, gt_path, load_gt, scores

        pred = frame.meta.get(MASK_KEY)
        if pred is None:
            return
        self.pictures += 1
        path = gt_path(self.folder, record["source"], record.get("frame"))
        where = record["source"] + (f"#{record['frame']}" if record.get("frame") is not None else "")
        if not path.is_file():
            record["eval"] = {"gt": None}
            self.missing.append(where)
            return
        try:
            gt = load_gt(path)
            problem = Confusion.check(gt, pred, self.confusion.n)
        except EvalError as e:
            problem = str(e).replace(f"{path}: ", "")
        if problem:
            record.update(ok=False, error=f"--eval {path}: {problem}")
            record["eval"] = {"gt": str(path)}
            self.unusable.append(where)
            return
        s = scores(self.confusion.add(gt, pred), self.labels)
        record["eval"] = {"gt": str(path), "miou": s["miou"], "pixel_acc": s["pixel_acc"]}

    def close(self, interrupted: bool = False) -> None:
        if interrupted:
            return
        from cvtool.io.sinks import AtomicFile
        from cvtool.tasks.segment_eval import scores

        res = scores(self.confusion.matrix, self.labels)
        res.update(images=self.confusion.images, pictures=self.pictures, gt_dir=str(self.folder),
                   missing_gt=self.missing, unusable_gt=self.unusable)
        if self.json_path is not None:
            with AtomicFile(self.json_path, overwrite=self.overwrite) as fh:
                json.dump(res, fh, indent=2)
                fh.write("\n")
        if self.missing:
            shown = ", ".join(self.missing[:5]) + (f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else "")
            print(f"cvtool: --eval: {len(self.missing)} of {self.pictures} pictures have no ground truth in "
                  f"{self.folder} (looked for <stem>.png): {shown}; they are not scored", file=sys.stderr)
        if not self.confusion.images:
            print(f"cvtool: --eval: no picture could be scored against {self.folder}; nothing to report",
                  file=sys.stderr)
            return
        _print_eval(res)


def _print_eval(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    print(f"cvtool: --eval: mIoU {res['miou']:.4f}, pixel accuracy {res['pixel_acc']:.4f} on {res['images']} of "
          f"{res['pictures']} pictures ({res['pixels']:,} scored pixels)", file=sys.stderr)
    t = Table(header_style="bold")
    t.add_column("class")
    t.add_column("IoU", justify="right")
    t.add_row("all (mIoU)", f"{res['miou']:.4f}")
    t.add_row("pixel accuracy", f"{res['pixel_acc']:.4f}")
    for cls, iou in sorted(res["per_class_iou"].items(), key=lambda kv: -kv[1]):
        t.add_row(cls, f"{iou:.4f}")
    Console(stderr=True).print(t)


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    if d.get("mode") == "instance":
        items = ", ".join(f"{x['label']} {x['score']:.2f}" for x in d["instances"][:8])
        more = f" (+{d['count'] - 8})" if d["count"] > 8 else ""
        return [name, f"{d['count']} objects: {items}{more}" if d["count"] else "no objects"]
    return [name, ", ".join(f"{x['label']} {x['fraction'] * 100:.1f}%" for x in d["classes"][:6])]
