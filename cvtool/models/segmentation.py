"""Segmentation networks as cvtool runs them: one output tensor, the same for torch and ONNX.

* :func:`torchvision_semantic` builds torchvision's semantic segmenters un-initialised, with the
  auxiliary head when the official weights carry one (so their state_dicts load strictly).
* :class:`SemanticLogits` reads torchvision's ``{"out": logits, "aux": …}`` dict as the
  ``(B, C, H, W)`` logits alone (the auxiliary head is a training aid and is not run).
* :class:`InstanceRows` runs Mask R-CNN without its final paste step and packs each detection
  with its low-resolution mask, so the task can paste the masks at the picture's own resolution.
"""

from __future__ import annotations

import torch
from torch import nn

AUX_PREFIX = "aux_classifier."


def torchvision_semantic(arch: str, aux: bool = False, num_classes: int = 21) -> nn.Module:
    """``torchvision.models.segmentation.<arch>`` without any download."""
    import torchvision.models.segmentation as seg

    return getattr(seg, arch)(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


def fit_aux_head(module: nn.Module, state_dict: dict) -> dict:
    """Make ``state_dict`` and ``module`` agree on the auxiliary head, which inference never
    uses: weights without it (e.g. a model built with ``aux_loss=False``) drop the module's; a
    module without one ignores the weights' copy. Returns the state_dict to load."""
    has_aux = any(k.startswith(AUX_PREFIX) for k in state_dict)
    if getattr(module, "aux_classifier", None) is not None and not has_aux:
        module.aux_classifier = None
    elif getattr(module, "aux_classifier", None) is None and has_aux:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIX)}
    return state_dict


class SemanticLogits(nn.Module):
    """Shape:
        - Input: float ``(B, 3, H, W)``, normalised.
        - Output: logits ``(B, C, H, W)`` (torchvision upsamples them to the input size).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        if getattr(net, "aux_classifier", None) is not None:
            net.aux_classifier = None  # not needed for inference: skip its compute
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out["out"] if isinstance(out, dict) else out


MASK_FIELDS = 7  # [batch, x1, y1, x2, y2, score, class_id] before the flattened mask
MASK_SIDE = 28  # torchvision's Mask R-CNN mask head resolution


class InstanceRows(nn.Module):
    """Mask R-CNN → one ``(K, 7 + M*M)`` float tensor: ``[batch_index, x1, y1, x2, y2, score,
    class_id]`` (box normalised by the input's width and height) followed by the detection's ``M×M`` mask
    probabilities (M = 28 for torchvision's heads) in box coordinates, before any pasting.

    The picture arrives resized as the model's own transform would resize it (shorter side
    800, longer at most 1333); the transform leaves it as it is, and thresholds come in as
    inputs like :class:`~cvtool.models.detection.TorchvisionDetector`.

    Shape:
        - Input: float ``(B, 3, H, W)`` in [0, 1], ``iou_threshold (1,)``, ``score_threshold (1,)``.
        - Output: ``(K, 7 + M*M)``.
    """

    def __init__(self, net: nn.Module, max_det: int = 100):
        super().__init__()
        self.net = net
        self.max_det = max_det

    def forward(self, x: torch.Tensor, iou_threshold: torch.Tensor, score_threshold: torch.Tensor
                ) -> torch.Tensor:
        net = self.net
        heads = net.roi_heads
        heads.nms_thresh = float(iou_threshold.reshape(-1)[0])
        heads.score_thresh = float(score_threshold.reshape(-1)[0])
        heads.detections_per_img = self.max_det
        from cvtool.models.detection import keep_input_size

        keep_input_size(net.transform, int(x.shape[-2]), int(x.shape[-1]))  # already resized by cvtool
        images, _ = net.transform(list(x))
        features = net.backbone(images.tensors)
        proposals, _ = net.rpn(images, features)
        dets, _ = heads(features, proposals, images.image_sizes)
        rows = []
        for b, (d, (h, w)) in enumerate(zip(dets, images.image_sizes)):
            n = d["boxes"].shape[0]
            scale = x.new_tensor([1.0 / w, 1.0 / h] * 2)  # the network's pixels → normalised
            masks = d["masks"].reshape(n, -1) if n else x.new_zeros((0, MASK_SIDE * MASK_SIDE))
            rows.append(torch.cat([x.new_full((n, 1), b), d["boxes"] * scale, d["scores"].unsqueeze(1),
                                   d["labels"].unsqueeze(1).to(x.dtype), masks.to(x.dtype)], 1))
        return torch.cat(rows) if rows else x.new_zeros((0, MASK_FIELDS + MASK_SIDE * MASK_SIDE))


def wrap(net: nn.Module, head: str) -> nn.Module:
    """The segment task's view of a bare network (``head``: "semantic" or "instance")."""
    return InstanceRows(net) if head == "instance" else SemanticLogits(net)
