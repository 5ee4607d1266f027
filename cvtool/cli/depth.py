"""`cvtool depth`: relative depth maps for images, folders and videos."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o

CMAPS = ("turbo", "inferno", "magma", "viridis", "jet", "gray")  # = cvtool.render.depth.DEPTH_COLORMAPS


@o.shared(*o.RECORDS, *o.ENGINE, batch=4)
def depth(
    sources: o.Sources,
    model: o.ModelOpt = "depth_anything_v2_small",
    weights: Annotated[Optional[str], typer.Option("--weights", help="The model's Hugging Face folder (config.json + model.safetensors, as save_pretrained writes); overrides the cache.")] = None,
    revision: o.RevisionOpt = None,
    imgsz: o.Imgsz("Target input size instead of the preprocessor_config.json's (a multiple of 14 for Depth Anything, 32 for DPT); the aspect is kept where the model's processor keeps it. Default: the model's own (518 or 384).", min=14) = None,
    save: o.Save("Folder for depth pictures: <stem>_depth.png (colour), <stem>_depth16.png (16-bit) per image; <stem>_depth.webm per video.") = None,
    cmap: Annotated[str, typer.Option("--cmap", help="Colour map for --save: turbo, inferno, magma, viridis, jet or gray (near = bright end).")] = "turbo",
    npy: Annotated[bool, typer.Option("--npy", help="With --save: also the float32 depth map at the picture's size, <stem>_depth.npy (per video frame: <stem>_f<frame>_depth.npy).")] = False,
    eval_gt: o.Eval("Folder of ground-truth depth or disparity maps named like the pictures (<stem>.png/.npy/.npz/.pfm/.tif): align by least-squares scale and shift, print AbsRel and δ<1.25.") = None,
    gt_kind: Annotated[str, typer.Option("--gt-kind", help="What the --eval files hold: depth or disparity.")] = "depth",
    gt_scale: Annotated[float, typer.Option("--gt-scale", min=1e-12, help="Divide integer ground-truth images (PNG/TIFF) by this (e.g. 256 for KITTI, 1000 for millimetres).")] = 1.0,
    depth_cap: Annotated[Optional[float], typer.Option("--depth-cap", min=1e-12, help="--eval: largest depth an aligned prediction may reach, in ground-truth depth units (default: the farthest valid ground-truth depth of each picture).", show_default=False)] = None,
    *,
    opts: o.Options,
) -> None:
    """Estimate relative depth (larger = nearer): per-picture stats, optional depth pictures and arrays.

    The output is relative inverse depth, not metres: its scale and shift are unknown.

    Examples:
      cvtool depth sample_images/cat.jpg
      cvtool depth photos/ --save depth/ --npy > depth.jsonl
      cvtool depth clip.mp4 --save out/ --cmap inferno
      cvtool depth photos/ --eval gt/ --gt-kind depth --gt-scale 1000
    """
    from cvtool.models.loader import ModelError, load
    from cvtool.tasks.depth import TASK, DepthEstimator, DepthFiles

    c.check_format(opts.fmt)
    if opts.engine == "ray" and (save is not None or eval_gt is not None):
        raise c.fail("--save and --eval are not supported with --engine ray (records only)")
    if cmap not in CMAPS:
        raise c.fail(f"--cmap {cmap!r}: expected one of {', '.join(CMAPS)}")
    if gt_kind not in ("depth", "disparity"):
        raise c.fail(f"--gt-kind {gt_kind!r}: expected depth or disparity")
    if npy and save is None:
        raise c.fail("--npy writes into the --save folder: give --save DIR too")
    if save is not None and save.exists() and not save.is_dir():
        raise c.fail(f"--save {save}: exists and is not a folder")
    if eval_gt is not None and not eval_gt.is_dir():
        raise c.fail(f"--eval {eval_gt}: no such folder (it must hold one ground-truth file per picture)")
    try:
        loaded = load(model, weights, task=TASK, revision=revision, notify=None if not opts.quiet else (lambda _m: None))
        note = getattr(loaded.preprocess, "note", None)
        if note and not opts.quiet:
            print(f"cvtool: {note}", file=sys.stderr)
        if imgsz is not None and imgsz != loaded.preprocess.crop:
            if loaded.kind == "onnx" and getattr(loaded.preprocess, "fixed_size", True):
                raise ModelError(f"--imgsz {imgsz}: {loaded.onnx_file} was exported at {loaded.preprocess.crop}x"
                                 f"{loaded.preprocess.crop}; export another size with `cvtool export --imgsz`")
            from cvtool.models.zoo.hf_depth import SIZE_MULTIPLE

            step = SIZE_MULTIPLE.get(loaded.spec.name, 14) if loaded.spec else 14
            if imgsz % step:
                lower, upper = max(step, imgsz - imgsz % step), imgsz - imgsz % step + step
                raise ModelError(f"--imgsz {imgsz}: {loaded.name} needs a multiple of {step} (e.g. {lower} or {upper})")
            pre = loaded.preprocess
            pre = pre.with_size(imgsz) if hasattr(pre, "with_size") else dataclasses.replace(pre, crop=imgsz)
            loaded = dataclasses.replace(loaded, preprocess=pre)
    except ModelError as e:
        raise c.fail(str(e)) from None

    def make_sinks(m):
        sinks = []
        if save is not None:
            sinks.append(DepthFiles(save, opts.overwrite, cmap=cmap, npy=npy))
        if eval_gt is not None:
            sinks.append(_Evaluation(eval_gt, gt_kind, gt_scale, depth_cap))
        return sinks

    run.run_task_command(
        TASK, sources, opts, model=model, weights=weights, loaded=loaded, make_postprocess=DepthEstimator,
        annotate=None, table_row=_row, table_columns=["source", "min", "median", "max", "size"],
        make_sinks=make_sinks)


class _Evaluation:
    """``--eval GT_DIR``: scores each picture that has a ground-truth file (record field
    ``eval``), prints the means over pictures to stderr at the end."""

    needs_pixels = False

    def __init__(self, folder: Path, kind: str, scale: float, cap: float | None):
        from cvtool.tasks.depth_eval import Summary

        self.folder, self.kind, self.scale, self.cap = folder, kind, scale, cap
        self.summary = Summary()

    def add(self, record: dict, frame) -> None:
        from cvtool.tasks.depth_eval import DepthEvalError, evaluate, find_gt, read_gt

        d = frame.meta.get("depth")
        if d is None:
            return
        stem = Path(record["source"]).stem + (f"_f{record['frame']:06d}" if record.get("frame") is not None else "")
        path = find_gt(self.folder, stem)
        if path is None:
            self.summary.unmatched += 1
            record["eval"] = {"gt": None}
            return
        try:
            gt = read_gt(path, self.scale)
        except DepthEvalError as e:
            record.update(ok=False, error=f"--eval: {e}", eval={"gt": str(path)})
            return
        scores = evaluate(d, gt, self.kind, self.cap)
        self.summary.add(scores)
        record["eval"] = {"gt": str(path), **{k: (float(f"{v:.6g}") if isinstance(v, float) else v)
                                              for k, v in scores.items()}}

    def close(self, interrupted: bool = False) -> None:
        if interrupted:
            return
        r = self.summary.result()
        if not self.summary.matched:
            print(f"cvtool: --eval: no input has a ground-truth file in {self.folder} (matched by file "
                  "stem: <stem>.npy/.npz/.pfm/.png/.tif); nothing to evaluate", file=sys.stderr)
            return
        if not r["pictures"]:
            print(f"cvtool: --eval: {self.summary.matched} ground-truth files matched, none with 2 or more "
                  "valid pixels; nothing to evaluate", file=sys.stderr)
            return
        extra = []
        if r["without_gt"]:
            extra.append(f"{r['without_gt']} without ground truth")
        if r["unusable_gt"]:
            extra.append(f"{r['unusable_gt']} with no valid ground-truth pixels")
        print(f"cvtool: --eval ({self.kind} ground truth, scale-and-shift aligned in disparity): "
              f"AbsRel {r['abs_rel']:.4f}, δ<1.25 {r['delta1']:.4f} over {r['pictures']} picture"
              f"{'s' if r['pictures'] != 1 else ''}" + (f" ({'; '.join(extra)})" if extra else ""),
              file=sys.stderr)


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    s = d["depth"]
    return [name, f"{s['min']:.4g}", f"{s['median']:.4g}", f"{s['max']:.4g}",
            f"{s['size']['width']}x{s['size']['height']}"]
