"""Registry entries for the Hugging Face captioners (no torch or transformers import here).

Their preprocessing is copied from each repository's ``preprocessor_config.json`` so that
listing models never imports transformers:

* BLIP (``BlipImageProcessor``): stretch to 384×384, bicubic, OpenAI CLIP mean/std.
* ViT-GPT2 (``ViTFeatureExtractor``): stretch to 224×224, bilinear, mean = std = 0.5.

``family`` is the ``model_type`` the weights folder's ``config.json`` must declare, and
``image_size`` the input size its image encoder must take (checked when the folder is built).
"""

from cvtool.models.preprocess import Preprocess
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
        preprocess=Preprocess(resize=0, crop=384, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"),
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
        preprocess=Preprocess(resize=0, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                              interpolation="bilinear"),
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
