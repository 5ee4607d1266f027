"""Image captioning: a sentence per picture.

Two kinds of captioner, told apart in every record by ``kind``:

* ``"neural"`` — a Hugging Face captioner (BLIP, ViT-GPT2; :mod:`cvtool.models.zoo.hf_caption`).
  :class:`GenerationRunner` runs its generation loop on torch over batches of uint8 pictures
  resized as the weights folder's ``preprocessor_config.json`` says; :class:`Captioner` turns the generated token ids into
  text.
* ``"labels"`` — ``--model labels``, the offline fallback that needs no captioning weights: a
  sentence *built from labels*, i.e. the bundled classifier's top label and the bundled
  detector's objects, by the fixed wording rules of :func:`labels_sentence`. It is not a neural
  caption and its records say so, with the labels it used.

Both plug into :func:`cvtool.tasks.base.run` like classify and detect: same sources, decoding,
batching and records.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtool.io.sources import Frame
from cvtool.models.loader import LoadedModel, ModelError
from cvtool.models.registry import ModelSpec

TASK = "caption"
LABELS_MODEL = "labels"
LABELS_CLASSIFIER = "efficientnet_lite0"
LABELS_DETECTOR = "ssd_mobilenet_v2_coco"
MIN_CLASS_SCORE = 0.20  # the classifier's top label is used at this softmax probability or above
MIN_DETECTION_SCORE = 0.50  # detections scoring above this are used (as `detect --conf 0.5`)
MAX_OBJECT_KINDS = 5  # at most this many kinds of object are named


def supports_prompt(spec: ModelSpec | None) -> bool:
    """Whether a registry captioner can continue a text prompt (BLIP can), known without
    loading it."""
    return spec is not None and spec.builder_kwargs.get("family") == "blip"


# ---- neural captioners -------------------------------------------------------------------

class GenerationRunner:
    """Runs a neural captioner: uint8 ``(B, H, W, 3)`` → int64 token ids ``(B, T)``.

    The image encoder (a ViT: few, large matrix products) runs on ONNX Runtime with
    ``backend="auto"`` or ``"onnx"``: it is exported once per model and weights, cached under
    ``$CVTOOL_HOME/onnx``. ``backend="torch"`` keeps it on torch; ``"auto"`` falls back to that,
    and says so, when the export fails. The generation loop (the text decoder, token by token,
    and beam search) always runs on torch. On a CPU it runs on one thread unless ``threads`` is
    given: its operations are tiny (one token's vector at a time), so more threads gained a few
    percent on a quiet 2-core machine and cost 1.7-5x on a busy one (docs/benchmarks.md). The
    generation settings come in ``extra`` (see :class:`Captioner`)."""

    def __init__(self, model: LoadedModel, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, notify=None, allow_cpu_fallback: bool = False):
        import torch

        from cvtool.models.wrap import Normalized
        from cvtool.models.zoo.hf_caption import ImageEncoder
        from cvtool.runtime.device import parse_device
        from cvtool.runtime.torch import TorchRunner

        notify = notify or (lambda msg: print(f"cvtool: {msg}", file=sys.stderr))
        if backend not in ("auto", "onnx", "torch"):
            raise ModelError(f"--backend {backend!r}: expected auto, onnx or torch")
        dev = parse_device(device)
        module = model.torch_module()  # Normalized(CaptionNet); a ModelError when the folder won't load
        self.encoder = None
        if backend != "torch":
            try:
                path, fresh = encoder_onnx_path(model)
                if fresh:
                    notify(f"exported the image encoder of {model.name} to ONNX once, cached at {path}")
            except Exception as e:  # an exporter limitation, not a user mistake
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                if backend == "onnx":
                    raise ModelError(f"{model.name}: the image encoder's ONNX export failed ({why})") from None
                notify(f"{model.name}: the image encoder's ONNX export failed ({type(e).__name__}); "
                       "running it on torch")
            else:
                from cvtool.models.weights import cache_home
                from cvtool.runtime.onnx import OnnxRunner

                self.encoder = OnnxRunner(path, dev, threads, cache_home(), allow_cpu_fallback)
                if self.encoder.note:
                    notify(self.encoder.note)
        self.torch = TorchRunner(module, dev, threads, allow_cpu_fallback)
        if self.torch.note:
            notify(self.torch.note)
        self.net = self.torch.module.net
        pre = model.preprocess
        self.torch_encoder = Normalized(ImageEncoder(self.net), pre.mean, pre.std).eval().to(self.torch.torch_device)
        on_cpu = self.torch.torch_device.type == "cpu"
        self.encode_threads = (threads or torch.get_num_threads()) if on_cpu else None
        self.generate_threads = (threads or 1) if on_cpu else None
        if self.encoder is None:
            self.backend, self.provider, self.device = "torch", self.torch.provider, self.torch.device
        else:
            self.backend = "onnxruntime+torch"
            self.provider = f"{self.encoder.provider}+{self.torch.provider}"
            self.device = (self.torch.device if self.encoder.device == self.torch.device
                           else f"{self.encoder.device}+{self.torch.device}")

    def __call__(self, batch: np.ndarray, extra: dict | None = None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.encoder is not None:
                embeds = torch.from_numpy(self.encoder(batch)).to(self.torch.torch_device)
            else:
                _set_threads(self.encode_threads)
                embeds = self.torch_encoder(torch.from_numpy(batch).to(self.torch.torch_device))
            _set_threads(self.generate_threads)
            ids = self.net.generate_from(embeds, *(extra or {}).values())
        return ids.cpu().numpy()


def _set_threads(n: int | None) -> None:
    import torch

    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def encoder_onnx_path(model: LoadedModel) -> tuple[Path, bool]:
    """``(path, exported_now)`` of the captioner's image encoder as a cached ONNX file: uint8
    ``(B, H, W, 3)`` in (normalisation inside the graph), image embeddings ``(B, N, D)`` out."""
    import transformers

    from cvtool.models.weights import cache_home
    from cvtool.models.wrap import Normalized
    from cvtool.models.zoo.hf_caption import ImageEncoder
    from cvtool.runtime.onnx import DEFAULT_OPSET, cached_export

    pre = model.preprocess

    def build():
        net = model.torch_module().net
        return Normalized(ImageEncoder(net), pre.mean, pre.std).eval()

    return cached_export(
        cache_home() / "onnx", f"{model.name}-encoder",
        key_fields={"model": model.name, "part": "image-encoder", "weights": model.weights_sha256,
                    "preprocess": pre.to_json(), "transformers": transformers.__version__,
                    "code": [_file_digest(m) for m in ("cvtool.models.zoo.hf_caption", "cvtool.models.wrap")]},
        build=build, input_shape=(pre.input_size[1], pre.input_size[0], 3),
        metadata={"task": "caption-encoder", "model": model.name, "preprocess": pre.to_json(),
                  "labels": "[]", "weights_sha256": model.weights_sha256,
                  "input_layout": "NHWC uint8 RGB (B, H, W, 3); normalisation is inside the graph",
                  "output": "image embeddings (B, tokens, width) for the captioner's text decoder"},
        opset=DEFAULT_OPSET)


def _file_digest(module: str) -> str:
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(module)
    with open(spec.origin, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


class Captioner:
    """Turns generated token ids into caption fields; carries the generation settings to the
    runner (``extra_inputs``, in :meth:`CaptionNet.forward`'s order)."""

    def __init__(self, net, max_tokens: int = 30, beams: int = 1, prompt: str | None = None,
                 provenance: dict | None = None):
        if max_tokens < 1 or beams < 1:
            raise ValueError("max_tokens and beams must be at least 1")
        self.net = net
        self.max_tokens, self.beams = int(max_tokens), int(beams)
        self.prompt = prompt or None
        self.prompt_ids = tuple(net.encode_prompt(prompt)) if prompt else None
        if prompt and not self.prompt_ids:
            raise ValueError(f"--prompt {prompt!r}: gives no tokens")
        self.extra_inputs = {"max_tokens": self.max_tokens, "beams": self.beams, "prompt_ids": self.prompt_ids}
        self.provenance = dict(provenance or {})  # which weights and preprocessing ran (records' "weights")

    def __call__(self, ids: np.ndarray, frames: list[Frame]) -> list[dict]:
        ids = np.asarray(ids, dtype=np.int64).reshape(len(frames), -1)
        out = []
        for row in ids:
            ends = np.flatnonzero(row == self.net.end_id)
            n = int(ends[0]) if len(ends) else len(row)
            text_ids = [*(self.prompt_ids or ()), *row[:n].tolist()]
            text = self.net.tokenizer.decode(text_ids, skip_special_tokens=True)
            out.append({"kind": "neural", "caption": " ".join(text.split()), "tokens": n,
                        "truncated": len(ends) == 0 and n >= self.max_tokens,
                        "generation": {"max_tokens": self.max_tokens, "beams": self.beams, "prompt": self.prompt},
                        **({"weights": self.provenance} if self.provenance else {})})
        return out


# ---- the labels fallback -----------------------------------------------------------------

class PairPreprocess:
    """Both bundled models' preprocessing at once: a picture → one structured uint8 record with
    the classifier's input (``"classify"``) and the detector's (``"detect"``), so that the shared
    pipeline decodes and resizes each picture once, in its worker threads."""

    def __init__(self, classify, detect):
        self.classify, self.detect = classify, detect
        self.dtype = np.dtype([("classify", np.uint8, (classify.crop, classify.crop, 3)),
                               ("detect", np.uint8, (detect.crop, detect.crop, 3))])

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        a, b = self.classify.draft_size(width, height), self.detect.draft_size(width, height)
        return max(a[0], b[0]), max(a[1], b[1])

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        out = np.zeros((), self.dtype)
        out["classify"] = self.classify(rgb)
        out["detect"] = self.detect(rgb)
        return out


@dataclass
class LabelsModel:
    """What :func:`cvtool.tasks.base.run` needs from a model (``name``, ``preprocess``) for the
    labels fallback, plus the two bundled models it runs."""

    classifier: LoadedModel
    detector: LoadedModel
    name: str = LABELS_MODEL
    task: str = TASK

    def __post_init__(self):
        self.preprocess = PairPreprocess(self.classifier.preprocess, self.detector.preprocess)


def labels_model_info() -> dict:
    """What `cvtool models info labels` shows: not a registry model but two bundled ones."""
    return {"name": LABELS_MODEL, "task": TASK,
            "description": ("offline caption fallback: a sentence built from the labels of the bundled "
                            f"classifier ({LABELS_CLASSIFIER}, top label at p >= {MIN_CLASS_SCORE}) and "
                            f"detector ({LABELS_DETECTOR}, detections above {MIN_DETECTION_SCORE}); every "
                            'record says kind "labels"'),
            "uses": [LABELS_CLASSIFIER, LABELS_DETECTOR],
            "weights": {"source": "the weights of the two models it uses (`cvtool models info NAME`)"}}


def load_labels_model() -> LabelsModel:
    """The bundled classifier and detector (their weights ship in pip packages)."""
    from cvtool.models.loader import load

    return LabelsModel(load(LABELS_CLASSIFIER, task="classify"), load(LABELS_DETECTOR, task="detect"))


class LabelsRunner:
    """Runs both bundled models (ONNX Runtime by default, as classify and detect do) on a
    batch of :class:`PairPreprocess` records; returns ``(logits, detections)``."""

    def __init__(self, model: LabelsModel, backend: str = "auto", device: str = "auto",
                 threads: int | None = None, notify=None, allow_cpu_fallback: bool = False):
        from cvtool.tasks.base import make_runner

        self.classify = make_runner(model.classifier, backend, device, threads, notify, allow_cpu_fallback)
        self.detect = make_runner(model.detector, backend, device, threads, notify, allow_cpu_fallback)
        pick = lambda a, b: a if a == b else f"{a}+{b}"  # noqa: E731
        self.backend = pick(self.classify.backend, self.detect.backend)
        self.provider = pick(self.classify.provider, self.detect.provider)
        self.device = pick(self.classify.device, self.detect.device)

    def __call__(self, batch: np.ndarray, extra: dict | None = None):
        logits = self.classify(np.ascontiguousarray(batch["classify"]))
        dets = self.detect(np.ascontiguousarray(batch["detect"]), extra)
        return logits, dets


class LabelsCaptioner:
    """Postprocess of the labels fallback: the classifier's top label and the detector's objects
    → a sentence (:func:`labels_sentence`) and the labels it was built from."""

    def __init__(self, model: LabelsModel):
        from cvtool.tasks.classify import Classifier
        from cvtool.tasks.detect import Detector

        self.classifier = Classifier(model.classifier, topk=1)
        self.detector = Detector(model.detector, conf=MIN_DETECTION_SCORE)
        self.extra_inputs = self.detector.extra_inputs  # the detector graph's NMS thresholds
        self.names = (model.classifier.name, model.detector.name)

    def __call__(self, out, frames: list[Frame]) -> list[dict]:
        logits, dets = out
        classes = self.classifier(logits, frames)
        found = self.detector(dets, frames)
        records = []
        for cls, det in zip(classes, found):
            use = cls["score"] >= MIN_CLASS_SCORE
            caption, objects = labels_sentence(cls["label"] if use else None, det["detections"])
            records.append({
                "kind": "labels", "caption": caption, "tokens": None,
                "from_labels": {
                    "classifier": {"model": self.names[0], "label": cls["label"], "class_id": cls["class_id"],
                                   "score": cls["score"], "used": use, "min_score": MIN_CLASS_SCORE},
                    "detector": {"model": self.names[1], "min_score": MIN_DETECTION_SCORE,
                                 "detections": det["detections"]},
                    "objects": objects,
                },
            })
        return records


# ---- wording ------------------------------------------------------------------------------

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_IRREGULAR = {"person": "people", "mouse": "mice", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
              "knife": "knives", "broccoli": "broccoli", "hair drier": "hair driers"}


def article(noun: str) -> str:
    """``"a"`` or ``"an"`` by the first letters (a vowel letter gets "an", except a "you"/"w"
    sound: uni-, use, eu-, one; "hour" and "honest" get "an")."""
    w = noun.lower()
    if re.match(r"(uni|use|usu|uk|eu|one\b|once)", w):
        return "a"
    if re.match(r"[aeiou]|hour|honest|honou?r", w):
        return "an"
    return "a"


def plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        return f"{head} {_IRREGULAR[last]}".strip()
    if re.search(r"(s|sh|ch|x|z)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def count_phrase(n: int, noun: str) -> str:
    """1 → "a cup", 2 → "two cups", 12 → "12 cups"."""
    if n == 1:
        return f"{article(noun)} {noun}"
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else n} {plural(noun)}"


def join_words(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def labels_sentence(subject: str | None, detections: list[dict]) -> tuple[str, list[dict]]:
    """The labels fallback's sentence and the objects it names.

    Rules (docs/caption.md): the classifier's label, when used, is the subject ("a photo of a
    tiger cat"). Detections are grouped by label and counted; kinds are named in the order of
    their best score, at most ``MAX_OBJECT_KINDS``, after ", with" ("…, with two people and a
    dog"), or as the subject when there is no classifier label ("a photo of two people"). A
    single detection whose label is a whole word of the subject ("cat" in "tiger cat") is not
    named again. Nothing used gives "a photo".
    """
    counts: dict[str, int] = {}
    for d in sorted(detections, key=lambda d: -d["score"]):
        counts[d["label"]] = counts.get(d["label"], 0) + 1
    subject_words = set(re.findall(r"[a-z]+", subject.lower())) if subject else set()
    objects = []
    for label, n in counts.items():
        if n == 1 and subject and set(label.lower().split()) <= subject_words:
            continue  # the subject already says it
        if len(objects) == MAX_OBJECT_KINDS:
            break
        objects.append({"label": label, "count": n, "words": count_phrase(n, label)})
    things = join_words([o["words"] for o in objects])
    if subject:
        head = f"a photo of {article(subject)} {subject}"
        return (f"{head}, with {things}" if things else head), objects
    return (f"a photo of {things}" if things else "a photo"), objects



# ---- building the runner where it runs ----------------------------------------------------

@dataclass(frozen=True)
class CaptionFactory:
    """The recipe for caption's runner and postprocessing, ``factory(model) -> (runner,
    postprocess)``: the local engine calls it once; the Ray engine ships it (it pickles: only
    settings) and every inference actor calls it, so each builds its own models where it runs.
    A neural captioner's postprocessing decodes with the runner's tokenizer, hence the pair."""

    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    allow_cpu_fallback: bool = False
    max_tokens: int = 30
    beams: int = 1
    prompt: str | None = None
    quiet: bool = False

    def __call__(self, model) -> tuple[object, object]:
        notify = (lambda _m: None) if self.quiet else None
        if isinstance(model, LabelsModel):
            runner = LabelsRunner(model, self.backend, self.device, self.threads, notify, self.allow_cpu_fallback)
            return runner, LabelsCaptioner(model)
        runner = GenerationRunner(model, self.backend, self.device, self.threads, notify, self.allow_cpu_fallback)
        return runner, Captioner(runner.net, self.max_tokens, self.beams, self.prompt,
                                 provenance=model.provenance())
