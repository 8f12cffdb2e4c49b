#!/usr/bin/env python3
"""LLaVA stage 1 on Hugging Face folders, vlmc against PyTorch eager + transformers, in one run.

    V/bin/python bench/llava_stage1_hf.py build/vlmc TOWER_DIR LM_DIR [--steps 4] [--batch 2]
        [--threads 2] [--samples 32] [--json PATH]

TOWER_DIR is a CLIPVisionModel folder with its preprocessor_config.json, LM_DIR a LlamaForCausalLM
folder with a SentencePiece tokenizer (bench/hf_random_model.py clip-b16 / tinyllama --tokenizer
make random ones of CLIP ViT-B/16's and TinyLlama-1.1B's shapes, in bf16).

Both sides train LLaVA-1.5's stage 1 on the same files: --samples COCO-sized JPEGs (640x480) with
short captions, LLaVA's `plain` template, a fresh mlp2x_gelu projector trained with AdamW (lr 1e-3)
over the frozen tower (hidden state -2, CLS dropped) and the frozen LM; frozen weights bf16 as in the
files, every product in bf16 (vlmc: --run.precision bf16, model.weights_dtype file; PyTorch: the
bf16 modules under torch.autocast("cpu", torch.bfloat16), the projector f32 as LLaVA keeps it).

  vlmc     `vlmc train` (data.format llava, model.stage 1) as a user runs it: the loader decodes
           with one worker thread while the step runs; tokens/s is the median of tokens / step_s
           over metrics.jsonl's steps after the first (step_s includes any wait for data).
  PyTorch  transformers' CLIPVisionModel and LlamaForCausalLM, the splice by hand as LLaVA's
           prepare_inputs_labels_for_multimodal does; images preprocessed before the clock starts
           (a DataLoader's workers would hide them); the median over the steps after the first.

Tokens are the spliced positions (visual tokens + text, padding excluded). Peak memory is the peak
resident set of each side's process: vlmc runs first, as a child of this process before it has
loaded any model (a child's peak counts its memory from before exec too), PyTorch after it in this
process. Prints both and the ratio.
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from fast_openblas import openblas_core_note, use_fast_openblas

use_fast_openblas()  # before torch loads OpenBLAS

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaForCausalLM, LlamaTokenizer

WORDS = "a dog cat on the grass red blue car street man woman with table sitting next to small large".split()


def write_data(root, samples, seed=0):
    rng = np.random.default_rng(seed)
    images = os.path.join(root, "images")
    os.makedirs(images)
    data = []
    for i in range(samples):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(images, f"{i}.jpg"), quality=90)
        caption = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 16))))
        data.append({"id": str(i), "image": f"{i}.jpg",
                     "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}]})
    path = os.path.join(root, "data.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, images, data


def run_pytorch(args, data, images):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    tower = CLIPVisionModel.from_pretrained(args.tower, torch_dtype="auto").eval().requires_grad_(False)
    lm = LlamaForCausalLM.from_pretrained(args.lm, torch_dtype="auto").eval().requires_grad_(False)
    processor = CLIPImageProcessor.from_pretrained(args.tower)
    tokenizer = LlamaTokenizer.from_pretrained(args.lm)
    dv, d = tower.config.hidden_size, lm.config.hidden_size
    projector = torch.nn.Sequential(torch.nn.Linear(dv, d), torch.nn.GELU(), torch.nn.Linear(d, d))
    opt = torch.optim.AdamW(projector.parameters(), lr=1e-3, weight_decay=0.0)
    embed = lm.get_input_embeddings()

    # LLaVA's preprocess_plain: <image> (one placeholder), the caption, "\n"; the labels mask the image.
    batches = []
    for s in range(args.steps):
        rows = data[s * args.batch:(s + 1) * args.batch]
        pixels = processor([Image.open(os.path.join(images, r["image"])) for r in rows], return_tensors="pt")
        texts = [tokenizer(r["conversations"][1]["value"] + "\n", add_special_tokens=False).input_ids for r in rows]
        batches.append((pixels["pixel_values"].to(tower.dtype), texts))

    times, tokens = [], []
    for pixels, texts in batches:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            features = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            visual = projector(features.float())  # [B, N, D]
            rows, labels = [], []
            bos = embed(torch.tensor([tokenizer.bos_token_id]))
            for b, ids in enumerate(texts):
                text = embed(torch.tensor(ids))
                rows.append(torch.cat([bos.to(visual.dtype), visual[b], text.to(visual.dtype)]))
                labels.append([-100] * (1 + visual.shape[1]) + ids)
            length = max(r.shape[0] for r in rows)
            mask = torch.zeros(len(rows), length, dtype=torch.long)
            padded = torch.zeros(len(rows), length, d, dtype=rows[0].dtype)
            target = torch.full((len(rows), length), -100)
            for b, r in enumerate(rows):
                padded[b, :r.shape[0]] = r
                mask[b, :r.shape[0]] = 1
                target[b, :r.shape[0]] = torch.tensor(labels[b])
            logits = lm(inputs_embeds=padded, attention_mask=mask).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
        tokens.append(int(mask.sum()))
        print(f"  pytorch step {len(times)}: loss {loss.item():.4f}, {times[-1]:.2f} s, {tokens[-1]} tokens", flush=True)
    rates = [n / t for n, t in zip(tokens[1:], times[1:])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return statistics.median(rates), statistics.median(times[1:]), peak, math.log(lm.config.vocab_size)


def run_vlmc(args, root, data_json, images):
    runs = os.path.join(root, "runs")
    cmd = [args.vlmc, "--threads", str(args.threads), "train", "--run.name", "bench", "--run.runs_dir", runs,
           "--run.precision", "bf16", "--run.log_every_s", "1e9", "--run.checkpoint_every", "1000000",
           "--data.format", "llava", "--data.json", data_json, "--data.image_folder", images,
           "--data.template", "plain", "--data.image_aspect_ratio", "square", "--data.workers", "1",
           # the plan checks memory at model_max_length tokens; these samples are about 215
           "--data.model_max_length", "256",
           "--model.vision_tower", args.tower, "--model.language_model", args.lm, "--model.weights_dtype", "file",
           "--model.stage", "1", "--stage1.steps", str(args.steps), "--stage1.batch_size", str(args.batch),
           "--stage1.lr", "1e-3", "--stage1.warmup_ratio", "0", "--stage1.max_grad_norm", "1.0"]
    subprocess.run(cmd, check=True)
    records = [json.loads(line) for line in open(os.path.join(runs, "bench", "metrics.jsonl")) if line.strip()]
    steps = [r for r in records if r.get("stage") == "stage1"]
    for r in steps:
        print(f"  vlmc step {r['step']}: loss {r['loss']:.4f}, {r['step_s']:.2f} s, {r['tokens']} tokens")
    rates = [r["tokens"] / r["step_s"] for r in steps[1:]]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return statistics.median(rates), statistics.median([r["step_s"] for r in steps[1:]]), peak, steps[0]["loss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vlmc")
    ap.add_argument("tower")
    ap.add_argument("lm")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=0, help="default: steps x batch")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.vlmc = os.path.abspath(args.vlmc)
    assert args.steps >= 2, "--steps: at least 2 (the first is not timed)"
    with tempfile.TemporaryDirectory() as root:
        data_json, images, data = write_data(root, args.samples or args.steps * args.batch)
        print("vlmc", flush=True)
        vlmc_rate, vlmc_step, vlmc_peak, first_loss = run_vlmc(args, root, data_json, images)
        print("PyTorch eager + transformers", torch.__version__, f"({openblas_core_note()})", flush=True)
        torch_rate, torch_step, torch_peak, ln_v = run_pytorch(args, data, images)
    # Validation: a fresh projector over a random LM predicts about uniformly.
    if not (math.isfinite(first_loss) and abs(first_loss - ln_v) < 0.2 * ln_v):
        print(f"vlmc's first loss {first_loss} is not within 20 % of ln(vocab) {ln_v:.3f}")
        return 1
    print(f"\nstage-1 step, batch {args.batch}, {args.threads} threads, median of {args.steps - 1} steps:")
    print(f"  vlmc     {vlmc_rate:9.1f} tokens/s  {vlmc_step:7.2f} s/step  peak RSS {vlmc_peak / 1e9:.2f} GB")
    print(f"  PyTorch  {torch_rate:9.1f} tokens/s  {torch_step:7.2f} s/step  peak RSS {torch_peak / 1e9:.2f} GB")
    print(f"  vlmc / PyTorch tokens/s: {vlmc_rate / torch_rate:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vlmc_tokens_per_s": vlmc_rate, "pytorch_tokens_per_s": torch_rate,
                       "vlmc_peak_rss": vlmc_peak, "pytorch_peak_rss": torch_peak, "batch": args.batch,
                       "threads": args.threads, "steps": args.steps}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
