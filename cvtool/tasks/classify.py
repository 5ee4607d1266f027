"""Image classification: logits → softmax → top-k labels."""

from __future__ import annotations

import numpy as np

from cvtool.io.sources import Frame
from cvtool.models.loader import LoadedModel

TASK = "classify"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """Turns a classifier's output ``(B, num_classes)`` into ranked labels per image."""

    def __init__(self, model: LoadedModel, topk: int = 5):
        self.model = model
        self.labels = model.labels
        self.topk = max(1, min(int(topk), len(self.labels)))
        # Files whose graph ends in a softmax (Ultralytics classify) give probabilities already.
        foreign = getattr(model, "foreign", None)
        self.probabilities = foreign is not None and foreign.layout == "probabilities"

    def __call__(self, logits: np.ndarray, frames: list[Frame]) -> list[dict]:
        if isinstance(logits, list):
            logits = logits[0]
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise ValueError(f"classifier output has shape {logits.shape}, expected (B, {len(self.labels)})")
        probs = logits.astype(np.float64) if self.probabilities else softmax(logits.astype(np.float64))
        k = self.topk
        idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        out = []
        for row, cand in zip(probs, idx):
            order = cand[np.argsort(-row[cand], kind="stable")]
            top = [{"rank": r + 1, "class_id": int(c), "label": self.labels[c],
                    "score": round(float(row[c]), 6)} for r, c in enumerate(order)]
            out.append({"label": top[0]["label"], "class_id": top[0]["class_id"],
                        "score": top[0]["score"], "topk": top})
        return out
