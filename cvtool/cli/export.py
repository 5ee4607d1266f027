"""`cvtool export`: a model to a checked ONNX file, or `--validate` an existing one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import options as o


@o.shared("device", "overwrite", "quiet")
def export(
    model: Annotated[Optional[str], typer.Argument(help="Registry name or `cvtool train` checkpoint.",
                                                   show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The .onnx file to write (default: MODEL.onnx here, or next to a checkpoint).", show_default=False)] = None,
    weights: o.WeightsOpt = None,
    opset: Annotated[int, typer.Option("--opset", min=13, max=23, help="ONNX opset.")] = 17,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Fixed batch size (default: dynamic batch).")] = None,
    dynamic_size: Annotated[bool, typer.Option("--dynamic-size", help="Free height and width too, where the architecture allows.")] = False,
    imgsz: o.Imgsz("Input size (square), where the architecture allows.") = None,
    half: Annotated[bool, typer.Option("--half", help="fp16 weights and output (needs a CUDA GPU).")] = False,
    simplify: Annotated[bool, typer.Option("--simplify", help="Clean up the graph with onnxslim.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Static int8 quantisation (needs --calibrate).")] = False,
    calibrate: Annotated[Optional[str], typer.Option("--calibrate", help="Folder of your pictures for int8 calibration.")] = None,
    min_agreement: Annotated[float, typer.Option("--min-agreement", min=0.0, max=1.0, help="int8: required share of decisions equal to fp32.")] = 0.95,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with torch on real photos.")] = True,
    check_images: Annotated[Optional[str], typer.Option("--check-images", help="Folder of pictures for the parity check (default: photos bundled with cvtool).")] = None,
    tolerance: Annotated[Optional[float], typer.Option("--tolerance", min=0.0, help="Largest allowed output difference (default per task and precision).")] = None,
    validate: Annotated[Optional[Path], typer.Option("--validate", help="Check an existing .onnx file instead of exporting.")] = None,
    *,
    opts: o.Options,
) -> None:
    """Export a model to ONNX with its labels and preprocessing embedded, checked against torch.

    Examples:
      cvtool export efficientnet_lite0 -o lite0.onnx
      cvtool export resnet50 -o r50.onnx --batch 8 --simplify
      cvtool export efficientnet_lite0 -o lite0-int8.onnx --int8 --calibrate my_photos/
      cvtool export --validate lite0.onnx
    """
    from cvtool.export.onnx import ExportError, ExportOptions, ExportUsageError
    from cvtool.export.onnx import export as do_export
    from cvtool.export.onnx import validate as do_validate
    from cvtool.models.loader import ModelError, load
    from cvtool.runtime.device import DeviceError

    device, overwrite, quiet = opts.device, opts.overwrite, opts.quiet
    say = (lambda m: None) if quiet else (lambda m: print(f"cvtool: {m}", file=sys.stderr))
    if validate is not None:
        if model is not None or output is not None:
            raise c.fail("--validate takes only the file to check")
        try:
            info = do_validate(validate, "cpu" if device == "auto" else device)
        except (ExportError, DeviceError) as e:
            raise c.fail(str(e), c.EXIT_FAILED) from None
        say(f"{validate}: valid {info['task']} model ({info['model']}), ran on {info['provider']}")
        print(json.dumps(info))
        return
    if model is None:
        raise c.fail("give a MODEL to export (or --validate FILE.onnx)")
    opts = ExportOptions(opset=opset, batch=batch, dynamic_size=dynamic_size, imgsz=imgsz, half=half,
                         simplify=simplify, int8=int8, calibrate=calibrate, check=check, tolerance=tolerance,
                         min_agreement=min_agreement, device=device, check_images=check_images)
    from cvtool.models import registry

    if not model.lower().endswith(".onnx") and not Path(model).is_file():
        try:
            spec = registry.get(model)
        except registry.UnknownModel as e:
            raise c.fail(f"{str(e)[:-1]}; MODEL may also be a checkpoint from `cvtool train`.") from None
        if not spec.exportable:  # say so before fetching weights that could not be used anyway
            raise c.fail(f"{spec.name} cannot be exported: {spec.export_note or 'it runs on torch only'}",
                         c.EXIT_FAILED)
    if output is None:  # as other exporters do: MODEL.onnx here, or next to the checkpoint
        local = Path(model).is_file() or model.lower().endswith(".onnx")
        output = Path(model).with_suffix(".onnx") if local else Path(f"{spec.name}.onnx")
    if output.exists() and not overwrite:  # before any weights are read
        raise c.fail(f"{output} already exists (pass --overwrite to replace it)")
    try:
        loaded = load(model, weights)
    except ModelError as e:
        raise c.fail(str(e)) from None
    try:
        report = do_export(loaded, output, opts, overwrite=overwrite, notify=say)
    except ExportUsageError as e:
        raise c.fail(str(e)) from None
    except (ExportError, ModelError, DeviceError) as e:
        raise c.fail(str(e), c.EXIT_FAILED) from None
    p = report.parity
    checked = (f"; parity vs torch on {p['images']} photos: max diff {p['max_abs_diff']:.1e} "
               f"({p['metric']}), decisions agree {p['agreement']:.0%}") if p else ""
    if report.int8:
        checked = (f"; int8 agrees with fp32 on {report.int8['agreement_with_fp32']:.1%} of "
                   f"{report.int8['images']} pictures")
    shape = "×".join(str(d) for d in report.input)
    say(f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, {report.precision}, uint8 input "
        f"{shape}){checked}")
    print(json.dumps(report.to_dict()))
