"""`cvtool caption`: a sentence per picture, from a neural captioner or built from labels."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cvtool.cli import common as c
from cvtool.cli import run
from cvtool.cli import options as o


@o.shared(*o.RECORDS, *o.ENGINE, batch=4, backend=o.Backend("auto: the image encoder on ONNX Runtime (exported once, cached), the generation loop on torch; torch: all on torch; onnx: as auto, but fail if the encoder does not export."))
def caption(
    sources: o.Sources,
    model: Annotated[str, typer.Option("--model", "-m", help="blip_base, vit_gpt2 (Hugging Face weights: `cvtool models pull`/`import`, or --weights FOLDER), or labels: a sentence built from the bundled classifier's and detector's labels, offline, marked kind=labels.")] = "blip_base",
    weights: Annotated[Optional[str], typer.Option("--weights", help="The model's Hugging Face folder (save_pretrained: config.json, weights, tokenizer files).")] = None,
    revision: o.RevisionOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=512, help="Stop a caption after this many generated tokens.")] = 30,
    beams: Annotated[int, typer.Option("--beams", min=1, max=16, help="Beam search width (1: greedy). Never sampling, so runs repeat exactly.")] = 1,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Text the caption must continue (conditional captioning; BLIP only). The caption includes it.")] = None,
    save: o.Save("Folder for copies of the inputs with the caption written on them.") = None,
    *,
    opts: o.Options,
) -> None:
    """Caption images: one sentence per image (or video frame), with the model that wrote it.

    Neural captioners run their image encoder on ONNX Runtime and generate on torch. `--model labels` needs no captioning weights: it builds a
    sentence from labels and says so in every record (kind "labels").

    Examples:
      cvtool caption sample_images/cat.jpg
      cvtool caption photos/ --beams 3 --max-tokens 20 > captions.jsonl
      cvtool caption photo.jpg --prompt "a picture of"
      cvtool caption photos/ --model labels --save captioned/
    """
    from cvtool.models import registry
    from cvtool.models.loader import ModelError, load
    from cvtool.runtime.device import DeviceError
    from cvtool.tasks import caption as cap

    c.check_format(opts.fmt)
    c.calm_cpu_threads()
    if prompt is not None and not prompt.strip():
        raise c.fail("--prompt: empty text")
    if opts.engine == "ray" and save is not None:
        raise c.fail("--save is not supported with --engine ray (records only)")
    on_ray = opts.engine == "ray"
    factory = cap.CaptionFactory(opts.backend, opts.device, opts.threads, opts.allow_cpu_fallback, max_tokens,
                                 beams, prompt, opts.quiet)
    runner = postprocess = None
    try:
        if model == cap.LABELS_MODEL:
            if weights is not None or revision is not None:
                raise ModelError("--weights/--revision do not apply to --model labels (it uses the bundled "
                                 f"{cap.LABELS_CLASSIFIER} and {cap.LABELS_DETECTOR})")
            if prompt is not None:
                raise ModelError("--prompt: --model labels builds its sentence from labels and cannot "
                                 "continue a prompt; use blip_base")
            loaded = cap.load_labels_model()
        else:
            if prompt is not None:  # refuse before looking for weights that would not help
                spec = next((s for s in registry.list_models(cap.TASK) if s.name == model), None)
                if spec is not None and not cap.supports_prompt(spec):
                    raise ModelError(f"--prompt: {spec.name} cannot continue a prompt (conditional "
                                     "captioning needs a BLIP model, e.g. blip_base)")
            loaded = load(model, weights, task=cap.TASK, revision=revision, notify=None if not opts.quiet else (lambda _m: None))
            note = getattr(loaded.preprocess, "note", None)
            if note and not opts.quiet:
                print(f"cvtool: {note}", file=sys.stderr)
        if not on_ray:  # on Ray, every worker builds its own from the factory
            runner, postprocess = factory(loaded)
    except (ModelError, DeviceError, ValueError) as e:
        raise c.fail(str(e)) from None

    run.run_task_command(
        cap.TASK, sources, opts, model=model, weights=weights, loaded=loaded, runner=runner,
        make_postprocess=lambda m: postprocess, annotate=_annotate, runner_factory=factory,
        table_row=_row, table_columns=["source", "kind", "caption"], save=save)


def _annotate(rgb, rec: dict):
    """The caption written along the bottom of the picture (wrapped to its width, on a dark
    band); the labels fallback also draws the boxes it used and says "built from labels"."""
    import cv2
    import numpy as np

    from cvtool.render.draw import draw_detections

    if rec.get("kind") == "labels":
        img = draw_detections(rgb, rec["from_labels"]["detector"]["detections"])
    else:
        img = np.ascontiguousarray(rgb.copy())
    h, w = img.shape[:2]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(1.2, w / 900))
    thick, pad = max(1, int(round(scale * 2))), int(8 * scale) + 2
    text = rec["caption"] + ("  [built from labels]" if rec.get("kind") == "labels" else "")
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(trial, font, scale, thick)[0][0] <= w - 2 * pad:
            lines[-1] = trial
        else:
            lines.append(word)
    line_h = cv2.getTextSize("Ag", font, scale, thick)[0][1] + pad
    top = max(0, h - line_h * len(lines) - pad)
    img[top:] = (img[top:].astype(np.float32) * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (pad, top + line_h * (i + 1)), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _row(d: dict) -> list[str]:
    name = d["source"] + (f"#{d['frame']}" if d.get("frame") is not None else "")
    return [name, d["kind"], d["caption"]]
