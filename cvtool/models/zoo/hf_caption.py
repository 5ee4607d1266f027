"""Hugging Face captioners as one torch module: normalised pixels in, caption token ids out.

:class:`CaptionNet` holds a ``transformers`` captioning model and its tokenizer, built from a
weights folder (what ``save_pretrained`` writes: ``config.json``, the weights, the tokenizer
files). Two families are supported:

* ``blip`` — ``BlipForConditionalGeneration`` (ViT image encoder, BERT-style text decoder with
  cross-attention). It can continue a text prompt (conditional captioning).
* ``vision-encoder-decoder`` — ``VisionEncoderDecoderModel``, e.g. ViT + GPT-2. No prompt.

cvtool feeds it like every other model: uint8 pictures resized as the folder's
``preprocessor_config.json`` says (:class:`~cvtool.models.hf_preprocess.HFPreprocess`, equal
to the processor's own resize), normalised by :class:`~cvtool.models.wrap.Normalized` with the
processor's mean/std. Generation is
deterministic (greedy, or beam search with ``beams > 1``; never sampling).

The two halves are separate methods: :meth:`CaptionNet.encode` (the image encoder, exported to
ONNX as :class:`ImageEncoder`) and :meth:`CaptionNet.generate_from` (the generation loop over
its embeddings, which stays in torch); ``forward`` chains them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

_MODEL_CLASS = {"blip": "BlipForConditionalGeneration", "vision-encoder-decoder": "VisionEncoderDecoderModel"}


class CaptionNet(nn.Module):
    """``(B, 3, H, W)`` normalised pixels → ``(B, T)`` int64 ids of the generated tokens.

    The returned ids are only the new tokens (no start token, no prompt), ``T <= max_tokens``;
    a row that ended early is padded with ``pad_id`` after its ``end_id``.
    """

    def __init__(self, model: nn.Module, tokenizer, family: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        if family == "blip":
            text = model.config.text_config
            self.end_id, self.pad_id = int(text.sep_token_id), int(text.pad_token_id)
        else:
            gen = model.generation_config
            end = gen.eos_token_id if gen.eos_token_id is not None else model.config.decoder.eos_token_id
            self.end_id = int(end[0] if isinstance(end, (list, tuple)) else end)
            pad = gen.pad_token_id if gen.pad_token_id is not None else model.config.pad_token_id
            self.pad_id = int(self.end_id if pad is None else pad)

    @property
    def supports_prompt(self) -> bool:
        return self.family == "blip"

    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's token ids without special tokens (BLIP's tokenizer lower-cases)."""
        if not self.supports_prompt:
            raise ValueError(f"a {self.family} captioner cannot continue a prompt")
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image encoder: ``(B, 3, H, W)`` normalised pixels → ``(B, N, D)`` image embeddings
        (the part of a caption's cost that does not depend on its length)."""
        if self.family == "blip":
            return self.model.vision_model(pixel_values=pixel_values)[0]
        return self.model.encoder(pixel_values=pixel_values)[0]

    def generate_from(self, embeds: torch.Tensor, max_tokens: int = 20, beams: int = 1,
                      prompt_ids: tuple[int, ...] | None = None) -> torch.Tensor:
        """The generation loop over the image embeddings from :meth:`encode` → new token ids."""
        b = embeds.shape[0]
        kwargs = dict(max_new_tokens=int(max_tokens), num_beams=int(beams), num_return_sequences=1,
                      do_sample=False)
        with warnings.catch_warnings():
            # transformers' advice about generation settings (e.g. a config's max_length being
            # overridden by max_new_tokens) is not for cvtool's users
            warnings.simplefilter("ignore")
            if self.family == "blip":
                # What BlipForConditionalGeneration.generate does after its vision model: the
                # decoder starts from its BOS token, followed by the prompt (if any).
                text = self.model.config.text_config
                ids = [int(text.bos_token_id), *(prompt_ids or ())]
                input_ids = torch.tensor([ids] * b, dtype=torch.long, device=embeds.device)
                mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
                out = self.model.text_decoder.generate(
                    input_ids=input_ids, eos_token_id=self.end_id, pad_token_id=self.pad_id,
                    encoder_hidden_states=embeds, encoder_attention_mask=mask, **kwargs)
                start = len(ids)
            else:
                if prompt_ids:
                    raise ValueError(f"a {self.family} captioner cannot continue a prompt")
                from transformers.modeling_outputs import BaseModelOutput

                out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=embeds), **kwargs)
                start = 1  # the decoder start token
        return out[:, start:]

    def forward(self, pixel_values: torch.Tensor, max_tokens: int = 20, beams: int = 1,
                prompt_ids: tuple[int, ...] | None = None) -> torch.Tensor:
        return self.generate_from(self.encode(pixel_values), max_tokens, beams, prompt_ids)


class ImageEncoder(nn.Module):
    """A captioner's image encoder alone (:meth:`CaptionNet.encode`), for the ONNX export."""

    def __init__(self, net: CaptionNet):
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net.encode(pixel_values)


def build_captioner(path: str, family: str, image_size: int) -> CaptionNet:
    """Build the captioner in the Hugging Face folder ``path`` (offline). Refuses a folder that
    holds another kind of model, or whose image encoder takes another input size than its
    ``preprocessor_config.json`` (else the registry entry, ``image_size``) feeds it."""
    from cvtool.models.hf import from_pretrained
    from cvtool.models.hf_preprocess import CONFIG_FILE, HFPreprocess

    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read config.json ({e})") from None
    found = config.get("model_type")
    if found != family:
        raise ValueError(f"config.json declares a {found!r} model, not a {family!r} captioner")
    vision = config.get("vision_config" if family == "blip" else "encoder") or {}
    size = vision.get("image_size", 384 if family == "blip" else 224)  # transformers' defaults
    feeds, who = (int(image_size), int(image_size)), "this model entry"
    if (Path(path) / CONFIG_FILE).is_file():
        pre = HFPreprocess.from_config(json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8")))
        if pre.fixed_size:
            feeds, who = pre.input_size, CONFIG_FILE
    if (int(size), int(size)) != tuple(feeds):
        raise ValueError(f"its image encoder takes {size}x{size} pictures, but {who} feeds "
                         f"{feeds[0]}x{feeds[1]}")
    model = from_pretrained(_MODEL_CLASS[family], path)
    tokenizer = from_pretrained("AutoTokenizer", path)
    return CaptionNet(model, tokenizer, family).eval()
