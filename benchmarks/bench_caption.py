"""Captioning speed: the default model (BLIP base) greedy and with beams, and the labels fallback.

    python benchmarks/bench_caption.py [--rounds 2] [--max-tokens 20] [--batch 1,4] [--folder DIR]

No captioning weights ship with cvtool and this machine may be offline, so the BLIP base
architecture is built from its configuration (ViT-B/16 at 384x384, 12-layer BERT-style decoder
with cross-attention, 30,524-token vocabulary) with *random* weights and saved as a Hugging Face
folder, which cvtool then loads like the real one (``--weights FOLDER``). Speed barely depends
on the weight values, but the caption length does: a random model's captions are gibberish and
would stop at arbitrary lengths, so every caption is generated to exactly ``--max-tokens`` tokens
(the end token is never chosen by a random model in practice; the script checks every record
and reports the token counts). Real BLIP captions are usually 8-12 tokens, so real runs with
the default ``--max-tokens 30`` cost less than the 20-token rows here suggest.

Measured in one process, through cvtool's whole caption path (sources, decode, preprocess,
batching, generation, records) on the six bundled photos:

  (a) blip_base greedy, all on torch (--backend torch), at each --batch
  (b) blip_base greedy, the default: image encoder on ONNX Runtime, generation on torch
  (c) blip_base beam search (--beams 3), default backend
  (c') greedy with the generation loop on all cores (--threads N) instead of cvtool's one thread
  (d) the BLIP image encoder alone, torch and ONNX Runtime (its share of a caption's cost)
  (e) --model labels: the bundled classifier + detector on ONNX Runtime, and the sentence

Each contender's best round is kept (the machine is shared and noisy). Prints a Markdown table
for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def build_blip_base_folder(folder: Path) -> Path:
    """BLIP base's architecture (as in Salesforce/blip-image-captioning-base's config.json) with
    random weights, and a BERT tokenizer over a synthetic 30,522-word vocabulary with BERT's
    special-token ids, saved with save_pretrained."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = [f"[unused{i}]" for i in range(30522)]
    for i, tok in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}.items():
        vocab[i] = tok
    for i in range(1000, 30522):
        vocab[i] = f"w{i}"
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"))
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    config = BlipConfig(
        text_config=dict(vocab_size=30524, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, bos_token_id=30522,
                         pad_token_id=0, sep_token_id=102),
        vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, image_size=384, patch_size=16, initializer_range=0.02),
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=20)
    ap.add_argument("--batch", default="1,4", help="batch sizes for blip_base, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--folder", type=Path, default=None,
                    help="where to keep the random BLIP base folder (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("CVTOOL_HOME", tempfile.mkdtemp(prefix="cvtool-bench-home-"))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (cli.common.calm_cpu_threads)

    import numpy as np
    import torch

    from cvtool.io.decode import decode_image
    from cvtool.io.sources import expand
    from cvtool.models.loader import load
    from cvtool.runtime.device import cpu_count
    from cvtool.tasks import caption as cap
    from cvtool.tasks.base import RunOptions, run

    folder = build_blip_base_folder(args.folder or Path(tempfile.mkdtemp(prefix="cvtool-blip-random-")))
    photos = sorted(SAMPLES.glob("*.jpg"))
    n = len(photos)
    blip = load("blip_base", str(folder), task=cap.TASK)
    hybrid = cap.GenerationRunner(blip, "auto", args.device)  # exports the image encoder once
    eager = cap.GenerationRunner(blip, "torch", args.device)
    assert hybrid.encoder is not None, "the image encoder did not export"
    labels = cap.load_labels_model()
    labels_runner = cap.LabelsRunner(labels, "auto", args.device)
    batches = [int(b) for b in args.batch.split(",")]
    tokens_seen: set[int] = set()

    def caption_run(runner, beams: int, batch: int):
        post = cap.Captioner(runner.net, args.max_tokens, beams)

        def go():
            sink = io.StringIO()
            for rec, _ in run(cap.TASK, blip, runner, expand([str(SAMPLES)]), post, RunOptions(batch=batch)):
                d = rec.to_dict()
                assert d["ok"], d
                tokens_seen.add(d["tokens"])
                sink.write(json.dumps(d) + "\n")
        return go

    pixels = np.stack([blip.preprocess(decode_image(str(p)).rgb) for p in photos])

    def encoder_torch():
        cap._set_threads(eager.encode_threads)
        with torch.inference_mode():
            for i in range(n):
                eager.torch_encoder(torch.from_numpy(pixels[i:i + 1]).to(eager.torch.torch_device))

    def encoder_onnx():
        for i in range(n):
            hybrid.encoder(pixels[i:i + 1])

    def labels_run():
        post = cap.LabelsCaptioner(labels)
        for rec, _ in run(cap.TASK, labels, labels_runner, expand([str(SAMPLES)]), post, RunOptions(batch=4)):
            assert rec.ok

    contenders = {}
    for b in batches:
        contenders[f"blip_base greedy, all torch (--backend torch), --batch {b}"] = caption_run(eager, 1, b)
        contenders[f"blip_base greedy, encoder on ONNX Runtime (default), --batch {b}"] = caption_run(hybrid, 1, b)
        contenders[f"blip_base --beams 3, encoder on ONNX Runtime (default), --batch {b}"] = caption_run(hybrid, 3, b)
    threads = cpu_count()
    all_threads = cap.GenerationRunner(blip, "auto", args.device, threads=threads)
    contenders[f"blip_base greedy, default backend, generation on {threads} threads (--threads {threads}), "
               f"--batch {batches[0]}"] = caption_run(all_threads, 1, batches[0])
    contenders["BLIP image encoder alone, torch, batch 1"] = encoder_torch
    contenders["BLIP image encoder alone, ONNX Runtime, batch 1"] = encoder_onnx
    contenders["--model labels (classifier + detector, ONNX Runtime), --batch 4"] = labels_run
    for fn in contenders.values():  # warm-up
        fn()
    best = {k: float("inf") for k in contenders}
    for _ in range(args.rounds):
        for k, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)

    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"machine: {platform.machine()}, {cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"device {hybrid.device}; load average {', '.join(f'{x:.2f}' for x in load_avg)}")
    print(f"{n} photos, best of {args.rounds} rounds; --max-tokens {args.max_tokens}; generated tokens per "
          f"caption seen: {sorted(tokens_seen)}\n")
    print("| path | s/img | img/s |")
    print("|---|---:|---:|")
    for k, v in best.items():
        print(f"| {k} | {v / n:.3f} | {n / v:.2f} |")
    b0 = batches[0]
    for backend, enc in (("torch", "torch"), ("encoder on ONNX Runtime (default)", "ONNX Runtime")):
        total = best[f"blip_base greedy, {'all torch (--backend torch)' if enc == 'torch' else backend}, --batch {b0}"]
        share = best[f"BLIP image encoder alone, {enc}, batch 1"] / total
        print(f"image encoder's share of a greedy {args.max_tokens}-token caption ({enc} encoder, "
              f"--batch {b0}): {share:.0%}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
