"""Monocular relative depth models from Hugging Face: Depth Anything V2 and DPT (MiDaS 3.0).

All of them predict **relative inverse depth** (disparity-like: larger = nearer) up to an
unknown scale and shift, one value per pixel of their input. cvtool feeds them the whole
picture the way the weights folder's ``preprocessor_config.json`` says
(:mod:`cvtool.models.hf_preprocess`; Depth Anything keeps the aspect ratio with both sides
multiples of 14, e.g. 451×300 → 518×350) and maps the output back to the picture's own size
as the reference post-processing does (:mod:`cvtool.tasks.depth`). The preprocessing below is
only the fallback for folders without that file.

Weights are Hugging Face folders (``config.json`` + ``model.safetensors``), found by
:mod:`cvtool.models.weights`: ``--weights FOLDER``, a folder imported with ``cvtool models
import``, Hugging Face's cache, or a download with Hugging Face's own code when online.
The builder loads the folder with ``transformers`` (imported only here, only when a model is
built) and returns a module whose output is the bare depth map ``(B, H, W)``.

Licences (from each Hub repository's model card):
  * Depth Anything V2 Small: Apache-2.0 (the default).
  * Depth Anything V2 Base and Large: CC-BY-NC-4.0, **non-commercial use only**. Registered so
    that users who may use them can; the licence is in their description and ``models list``.
  * Intel DPT-Large and DPT-Hybrid (MiDaS 3.0): Apache-2.0.
Nothing here imports torch or transformers at module level (listing models stays cheap).
"""

from __future__ import annotations

from functools import lru_cache

from cvtool.models.hf_preprocess import FALLBACK, HFPreprocess
from cvtool.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from cvtool.models.registry import ModelSpec, Weights, register

# Network input sizes must be a multiple of this (the ViT patch size, or the stride of the
# hybrid's convolutional stem), for `cvtool depth --imgsz`.
SIZE_MULTIPLE: dict[str, int] = {}

_PAPER_DA2 = "Yang et al., Depth Anything V2 (arXiv:2406.09414), https://github.com/DepthAnything/Depth-Anything-V2"
_PAPER_DPT = "Ranftl et al., Vision Transformers for Dense Prediction (arXiv:2103.13413), https://github.com/isl-org/DPT"
_FILES = ("config.json", "preprocessor_config.json", "*.safetensors")

# name, Hub repo, parameters (M), licence, note
_DEPTH_ANYTHING = (
    ("depth_anything_v2_small", "depth-anything/Depth-Anything-V2-Small-hf", 24.8, "Apache-2.0", ""),
    ("depth_anything_v2_base", "depth-anything/Depth-Anything-V2-Base-hf", 97.5,
     "CC-BY-NC-4.0 (non-commercial use only)", " NON-COMMERCIAL licence (CC-BY-NC-4.0)."),
    ("depth_anything_v2_large", "depth-anything/Depth-Anything-V2-Large-hf", 335.3,
     "CC-BY-NC-4.0 (non-commercial use only)", " NON-COMMERCIAL licence (CC-BY-NC-4.0)."),
)

for _name, _repo, _params, _lic, _note in _DEPTH_ANYTHING:
    SIZE_MULTIPLE[_name] = 14
    register(ModelSpec(
        name=_name,
        task="depth",
        builder="cvtool.models.zoo.hf_depth:depth_model",
        builder_kwargs={"model_type": "depth_anything"},
        description=f"Depth Anything V2 {_name.rsplit('_', 1)[1].capitalize()} ({_params}M parameters): "
                    f"DINOv2 ViT encoder + DPT head, relative inverse depth.{_note}",
        input_sizes="dynamic",  # any multiple of 14; ONNX exports with free height and width
        weights=Weights(
            filename=_repo.split("/")[1],
            # Fallback only (a folder's preprocessor_config.json wins): the values of the
            # Hub repos' DPTImageProcessor config: keep the aspect ratio, scale as little as
            # possible toward 518x518, both sides multiples of 14, bicubic, ImageNet mean/std.
            preprocess=HFPreprocess(processor="DPTImageProcessor", height=518, width=518,
                                    keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                                    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, source=FALLBACK),
            labels="",
            license=f"{_lic}; weights by the Depth Anything authors (TikTok/HKU), {_repo} on the Hugging Face Hub",
            source=f"Hugging Face Hub {_repo} ({_PAPER_DA2})",
            hf_repo=_repo,
            hf_files=_FILES,
        ),
    ))

# name, Hub repo, parameters (M), note
_DPT = (
    ("dpt_hybrid_midas", "Intel/dpt-hybrid-midas", 123.1, "DPT-Hybrid (ViT-Hybrid: BiT ResNet-50 stem + ViT-Base)"),
    ("dpt_large", "Intel/dpt-large", 343.0, "DPT-Large (ViT-Large/16)"),
)

for _name, _repo, _params, _arch in _DPT:
    SIZE_MULTIPLE[_name] = 32
    register(ModelSpec(
        name=_name,
        task="depth",
        builder="cvtool.models.zoo.hf_depth:depth_model",
        builder_kwargs={"model_type": "dpt"},
        description=f"Intel {_arch}, MiDaS 3.0 ({_params}M parameters): relative inverse depth.",
        input_sizes="static",
        weights=Weights(
            filename=_repo.split("/")[1],
            # Fallback only (a folder's preprocessor_config.json wins): DPTImageProcessor's
            # defaults as the model cards use them, a 384x384 stretch, bicubic, mean/std 0.5.
            preprocess=HFPreprocess(processor="DPTImageProcessor", height=384, width=384, resample=3,
                                    image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), source=FALLBACK),
            labels="",
            license=f"Apache-2.0; weights by Intel ISL, {_repo} on the Hugging Face Hub (trained on the "
                    "MIX-6 mixture of depth datasets, see the paper for their terms)",
            source=f"Hugging Face Hub {_repo} ({_PAPER_DPT})",
            hf_repo=_repo,
            hf_files=_FILES,
        ),
    ))


@lru_cache(maxsize=None)
def _depth_output_class():
    from torch import nn

    class DepthOutput(nn.Module):
        """A ``transformers`` depth model as a plain module: normalised pixels ``(B, 3, H, W)``
        → ``predicted_depth`` ``(B, H', W')`` (relative inverse depth, larger = nearer)."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.depth_anything = type(net).__name__ == "DepthAnythingForDepthEstimation"

        def forward(self, pixel_values):
            if not self.depth_anything:
                return self.net(pixel_values=pixel_values).predicted_depth
            return _depth_anything_forward(self.net, pixel_values)

    return DepthOutput


def _depth_anything_forward(net, pixel_values):
    """``DepthAnythingForDepthEstimation.forward`` step by step, except that the head's last
    upsampling takes its size from the input tensor's shape instead of Python ints
    (transformers casts it with ``int()``, which an ONNX trace freezes to the example's
    size). The same operations on the same weights: the parity tests compare it with the
    reference model end to end."""
    from torch import nn

    out = net.backbone.forward_with_filtered_kwargs(pixel_values, output_hidden_states=None,
                                                    output_attentions=None)
    p = net.config.patch_size
    ph, pw = pixel_values.shape[-2] // p, pixel_values.shape[-1] // p
    hidden = net.neck(out.feature_maps, ph, pw)
    head = net.head
    x = head.conv1(hidden[head.head_in_index])
    x = nn.functional.interpolate(x, size=(ph * head.patch_size, pw * head.patch_size), mode="bilinear",
                                  align_corners=True)
    x = head.activation1(head.conv2(x))
    x = head.activation2(head.conv3(x)) * head.max_depth
    return x.squeeze(dim=1)


def depth_model(path: str, model_type: str | None = None):
    """Build a depth model from a Hugging Face folder (offline, quiet); refuses a folder that
    holds another kind of model than ``model_type``."""
    import json
    from pathlib import Path

    cfg = json.loads((Path(path) / "config.json").read_text())
    if model_type and cfg.get("model_type") != model_type:
        raise ValueError(f"config.json says model_type {cfg.get('model_type')!r}, expected {model_type!r}")
    from cvtool.models.hf import from_pretrained

    net = from_pretrained("AutoModelForDepthEstimation", path)
    return _depth_output_class()(net).eval()
