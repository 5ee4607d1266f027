"""Non-maximum suppression inside the model, so torch and exported ONNX graphs agree.

``DetectWithNMS(net)`` turns a dense detector's output (``boxes (B, N, 4)`` normalised x1y1x2y2
shared by all classes, ``scores (B, N, C)`` with class 0 = background) into one flat list of
detections ``(K, 7)``: ``[batch_index, x1, y1, x2, y2, score, class_id]``, class ids as the
network numbers them (for COCO detectors the 90-id numbering).

Per class, anchors scoring above ``score_threshold`` are suppressed greedily at IoU
``iou_threshold`` and at most ``max_per_class`` survive — exactly the semantics of ONNX's
``NonMaxSuppression``, which is what the export writes (one node, dynamic batch, both thresholds
as graph inputs), while eager torch runs torchvision's NMS. Choosing the best ``--max-det`` of
an image, class filters and class-agnostic merging happen afterwards, in
:mod:`cvtool.tasks.detect`, identically for both backends.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms  # imported here: importing it during an ONNX trace fails

MAX_PER_CLASS = 100


class _NonMaxSuppression(torch.autograd.Function):
    """``boxes (B, N, 4)``, ``scores (B, C, N)`` → selected ``(K, 3)`` int64 [batch, class, box]."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_threshold, score_threshold):
        out = []
        iou, conf = float(iou_threshold.reshape(-1)[0]), float(score_threshold.reshape(-1)[0])
        for b in range(boxes.shape[0]):
            cls, idx = torch.nonzero(scores[b] > conf, as_tuple=True)
            if idx.numel() == 0:
                continue
            s = scores[b, cls, idx]
            keep = batched_nms(boxes[b, idx].float(), s.float(), cls, iou)  # by decreasing score
            cls_k, idx_k = cls[keep], idx[keep]
            # at most max_per_class per class, best first (keep is sorted by score)
            order = torch.argsort(cls_k, stable=True)
            cls_s, idx_s = cls_k[order], idx_k[order]
            first = torch.searchsorted(cls_s, cls_s, right=False)
            rank = torch.arange(cls_s.numel(), device=cls_s.device) - first
            ok = rank < max_per_class
            sel = torch.stack([torch.full_like(cls_s[ok], b), cls_s[ok], idx_s[ok]], 1)
            out.append(sel)
        if not out:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        return torch.cat(out).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        mpc = g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64))
        return g.op("NonMaxSuppression", boxes, scores, mpc, iou_threshold, score_threshold)


class DetectWithNMS(nn.Module):
    """Wraps a dense detector; see the module docstring for the output layout.

    Shape:
        - Input: what ``net`` takes, plus ``iou_threshold (1,)`` and ``score_threshold (1,)``.
        - Output: ``(K, 7)`` float ``[batch_index, x1, y1, x2, y2, score, class_id]``.
    """

    def __init__(self, net: nn.Module, max_per_class: int = MAX_PER_CLASS, background: bool = True):
        super().__init__()
        self.net = net
        self.max_per_class = max_per_class
        self.first_class = 1 if background else 0

    def forward(self, x: torch.Tensor, iou_threshold: torch.Tensor, score_threshold: torch.Tensor
                ) -> torch.Tensor:
        boxes, scores = self.net(x)
        scores = scores[:, :, self.first_class:].transpose(1, 2).contiguous()  # (B, C', N)
        sel = _NonMaxSuppression.apply(boxes.contiguous(), scores, self.max_per_class,
                                       iou_threshold.reshape(1).float(), score_threshold.reshape(1).float())
        b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
        picked = boxes[b, i]
        score = scores[b, c, i]
        return torch.cat([b.unsqueeze(1).to(picked.dtype), picked, score.unsqueeze(1).to(picked.dtype),
                          (c + self.first_class).unsqueeze(1).to(picked.dtype)], 1)


def keep_input_size(transform, height: int, width: int) -> None:
    """Make a torchvision ``GeneralizedRCNNTransform`` leave an ``height``×``width`` input at
    its size: cvtool has already resized the picture exactly as the transform would have
    (:class:`cvtool.models.preprocess.Preprocess` kinds "rcnn" and "stretch"), so its own resize
    must be the identity (scale 1, bilinear at the same size changes no pixel)."""
    transform.min_size = (min(height, width),)
    transform.max_size = max(height, width)
    if getattr(transform, "fixed_size", None) is not None:  # SSD: a fixed (w, h)
        transform.fixed_size = (width, height)


class TorchvisionDetector(nn.Module):
    """Reads a torchvision detection model (which normalises and runs NMS itself) into the
    same ``(K, 7)`` layout as :class:`DetectWithNMS`; the thresholds set the model's own. The
    input arrives already resized as the model's transform would resize it; the transform is
    told to keep it as it is (:func:`keep_input_size`).

    Shape:
        - Input: float ``(B, 3, H, W)`` in [0, 1], ``iou_threshold (1,)``, ``score_threshold (1,)``.
        - Output: ``(K, 7)`` ``[batch_index, x1, y1, x2, y2, score, class_id]``, x normalised by
          W and y by H.
    """

    def __init__(self, net: nn.Module, max_det: int = MAX_PER_CLASS):
        super().__init__()
        self.net = net
        self.max_det = max_det

    def forward(self, x: torch.Tensor, iou_threshold: torch.Tensor, score_threshold: torch.Tensor
                ) -> torch.Tensor:
        holder = getattr(self.net, "roi_heads", self.net)  # Faster R-CNN keeps them in its ROI heads
        holder.nms_thresh = float(iou_threshold.reshape(-1)[0])
        holder.score_thresh = float(score_threshold.reshape(-1)[0])
        holder.detections_per_img = self.max_det
        keep_input_size(self.net.transform, int(x.shape[-2]), int(x.shape[-1]))
        size = x.new_tensor([x.shape[-1], x.shape[-2], x.shape[-1], x.shape[-2]])
        rows = []
        for b, out in enumerate(self.net(list(x))):
            n = out["boxes"].shape[0]
            rows.append(torch.cat([x.new_full((n, 1), b), out["boxes"] / size, out["scores"].unsqueeze(1),
                                   out["labels"].unsqueeze(1).to(x.dtype)], 1))
        return torch.cat(rows) if rows else x.new_zeros((0, 7))
