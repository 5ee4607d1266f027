"""Registry entries for the Hugging Face captioners (no torch or transformers import here).

Their preprocessing comes from the weights folder's ``preprocessor_config.json`` when the
model is loaded (:mod:`cvtool.models.hf_preprocess`). The values below, typed from each
repository's file, are only the fallback for folders without one (cvtool says so):

* BLIP (``BlipImageProcessor``): stretch to 384×384, bicubic, OpenAI CLIP mean/std.
* ViT-GPT2 (``ViTFeatureExtractor``): stretch to 224×224, bilinear, mean = std = 0.5.

``family`` is the ``model_type`` the weights folder's ``config.json`` must declare, and
``image_size`` the input size its image encoder must take (checked when the folder is built).
"""

from cvtool.models.hf_preprocess import FALLBACK, HFPreprocess
from cvtool.models.registry import ModelSpec, Weights, register

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

register(ModelSpec(
    name="blip_base",
    task="caption",
    builder="cvtool.models.zoo.hf_caption:build_captioner",
    builder_kwargs={"family": "blip", "image_size": 384},
    description="BLIP base image captioning (ViT-B/16 encoder, BERT-style decoder; fine-tuned on COCO "
                "captions by Salesforce); the default; takes --prompt.",
    input_sizes="fixed",
    exportable=False,
    export_note=("a captioner generates text in a loop over its decoder, which stays in torch; "
                 "`cvtool caption` exports and caches its image encoder by itself (docs/caption.md)"),
    weights=Weights(
        filename="hf/blip_base",
        preprocess=HFPreprocess(processor="BlipImageProcessor", height=384, width=384, resample=3,
                                image_mean=CLIP_MEAN, image_std=CLIP_STD, source=FALLBACK),
        labels="",
        license="BSD-3-Clause",
        source="Hugging Face Hub: Salesforce/blip-image-captioning-base (transformers "
               "BlipForConditionalGeneration + BERT tokenizer)",
        hf_repo="Salesforce/blip-image-captioning-base",
        hf_files=("config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
                  "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"),
    ),
))

register(ModelSpec(
    name="vit_gpt2",
    task="caption",
    builder="cvtool.models.zoo.hf_caption:build_captioner",
    builder_kwargs={"family": "vision-encoder-decoder", "image_size": 224},
    description="ViT-GPT2 image captioning (ViT-B/16 encoder, GPT-2 decoder, COCO 2017; nlpconnect); "
                "no --prompt.",
    input_sizes="fixed",
    exportable=False,
    export_note=("a captioner generates text in a loop over its decoder, which stays in torch; "
                 "`cvtool caption` exports and caches its image encoder by itself (docs/caption.md)"),
    weights=Weights(
        filename="hf/vit_gpt2",
        preprocess=HFPreprocess(processor="ViTFeatureExtractor", height=224, width=224, resample=2,
                                image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), source=FALLBACK),
        labels="",
        license="Apache-2.0",
        source="Hugging Face Hub: nlpconnect/vit-gpt2-image-captioning (transformers "
               "VisionEncoderDecoderModel + GPT-2 tokenizer); its weights are a pytorch_model.bin, which "
               "transformers reads with torch.load(weights_only=True)",
        hf_repo="nlpconnect/vit-gpt2-image-captioning",
        hf_files=("config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin",
                  "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json",
                  "tokenizer_config.json", "vocab.json", "merges.txt"),
    ),
))
