"""A classifier ready for gradient work (visualize, attack): pixels in, logits out, on torch.

:class:`GradClassifier` takes float pixels ``(B, 3, H, W)`` in [0, 1] — the space attacks perturb
and saliency maps live in — through the same :class:`~cvtool.models.wrap.Normalized` wrapper and
the same preprocessing geometry as ``cvtool classify``, so a picture means the same thing to every
job. Parameters are frozen: gradients flow to the input only.

:func:`iter_pictures` yields decoded pictures (full resolution kept) or :class:`Failed` records,
one per input, in order, for jobs that work one picture at a time.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from cvtool.io.decode import decode_image
from cvtool.io.sources import Failed, Frame, expand, frame_jobs
from cvtool.models.loader import LoadedModel, ModelError, load


class TargetError(ValueError):
    """``--target`` names no class of the model; the message lists close matches."""


class GradClassifier:
    """``loaded`` (a classify model: registry name or checkpoint) on ``device``, frozen, in eval mode."""

    def __init__(self, loaded: LoadedModel, device: str = "auto", threads: int | None = None):
        import torch

        from cvtool.runtime.device import parse_device, torch_device

        if loaded.task != "classify":
            raise ModelError(f"model {loaded.name!r} is a {loaded.task} model; this job needs a classifier")
        if threads:
            torch.set_num_threads(threads)
        self.loaded = loaded
        self.name = loaded.name
        self.labels = loaded.labels
        self.preprocess = loaded.preprocess
        self.device = torch_device(parse_device(device))
        self.module = loaded.torch_module().to(self.device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @property
    def net(self):
        """The bare network (inside the normalising wrapper), whose layers have the user-facing names."""
        return self.module.net

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    def prepare(self, rgb: np.ndarray):
        """Full-resolution ``(H, W, 3)`` uint8 → network-sized float ``(1, 3, S, S)`` in [0, 1]."""
        return self.to_tensor(self.preprocess(rgb))

    def to_tensor(self, rgb: np.ndarray):
        """``(S, S, 3)`` uint8 (already network-sized) → float ``(1, 3, S, S)`` in [0, 1]."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
        return t.to(self.device, torch.float32) / 255.0

    def __call__(self, x):
        """Logits ``(B, num_classes)`` for float pixels ``(B, 3, H, W)`` in [0, 1]."""
        return self.module(x)

    def probs(self, x):
        import torch

        with torch.no_grad():
            return torch.softmax(self.module(x).float(), dim=1)

    def top(self, x) -> tuple[int, str, float]:
        """``(class_id, label, probability)`` of the top class of a single picture."""
        p = self.probs(x)[0]
        i = int(p.argmax())
        return i, self.labels[i], float(p[i])

    def target_index(self, target: str | int) -> int:
        """A class id from ``--target``: an id, or a label (case-insensitive; a unique whole word
        of a label, or else a unique prefix, is enough, e.g. ``Persian`` for ``Persian cat``)."""
        return resolve_target(target, self.labels)

    def label_record(self, class_id: int, prob: float | None = None) -> dict:
        d = {"class_id": int(class_id), "label": self.labels[class_id]}
        if prob is not None:
            d["score"] = round(float(prob), 6)
        return d


def resolve_target(target: str | int, labels: tuple[str, ...] | list[str]) -> int:
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(labels):
            raise TargetError(f"--target {text}: class ids run from 0 to {len(labels) - 1}")
        return i
    low = text.lower()
    exact = [i for i, name in enumerate(labels) if name.lower() == low]
    if exact:
        return exact[0]
    for rule in (lambda name: low in name.replace(",", " ").replace("-", " ").split(),
                 lambda name: name.startswith(low)):
        hits = [i for i, name in enumerate(labels) if rule(name.lower())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            shown = ", ".join(f"{labels[i]!r} ({i})" for i in hits[:6])
            raise TargetError(f"--target {text!r} matches several classes: {shown}"
                              f"{' …' if len(hits) > 6 else ''}; give the full label or the id")
    import difflib

    close = difflib.get_close_matches(low, [name.lower() for name in labels], n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TargetError(f"--target {text!r}: no such class in this model ({len(labels)} classes).{hint}")


def load_classifier(model: str, weights: str | None = None, device: str = "auto",
                    threads: int | None = None) -> GradClassifier:
    """``--model``/``--weights`` → :class:`GradClassifier`. Raises ModelError (or DeviceError)
    with a one-line reason, e.g. for an ONNX file (no gradients) or a detector."""
    loaded = load(model, weights)
    if loaded.task != "classify":
        raise ModelError(f"model {loaded.name!r} is a {loaded.task} model; this job needs a classifier")
    return GradClassifier(loaded, device, threads)


def iter_pictures(inputs: Iterable[str], max_pixels: int | None = None,
                  vid_stride: int = 1, null: bool = False) -> Iterator[Frame | Failed]:
    """Every input picture in order, decoded at full resolution (``Frame.rgb`` set), or a
    :class:`Failed` naming the input and why. Video files yield their frames."""
    def load_image(path: str) -> Frame:
        dec = decode_image(path, max_pixels)
        return Frame(path, dec.rgb, dec.orig_size, meta={"mode": dec.mode, "format": dec.format})

    for job in frame_jobs(expand(inputs, null=null), load_image, vid_stride, max_pixels):
        yield job()
