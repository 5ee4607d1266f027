"""Classification metrics from a confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

import torch


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    idx = target.to(torch.int64) * num_classes + pred.to(torch.int64)
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def summarize(cm: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/F1/support."""
    cm = cm.to(torch.float64)
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    n = float(cm.sum())
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    present = support > 0
    per_class = [{"class": c, "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                  "f1": round(float(f1[i]), 4), "support": int(support[i])} for i, c in enumerate(classes)]
    return {
        "images": int(n),
        "accuracy": round(float(tp.sum()) / n, 5) if n else 0.0,
        "balanced_accuracy": round(float(recall[present].mean()), 5) if present.any() else 0.0,
        "macro_f1": round(float(f1[present].mean()), 5) if present.any() else 0.0,
        "per_class": per_class,
        "confusion": cm.to(torch.int64).tolist(),
    }
