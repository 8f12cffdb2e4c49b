#!/usr/bin/env python3
"""The main job's stage-2 step (configs/fashion-mosaic.toml), vlmc against a PyTorch eager +
transformers replica, on 1 and 2 threads, in one run:

    V/bin/python bench/fashion_step.py build/vlmc [--steps 100] [--threads 1,2] [--json PATH]

vlmc     `vlmc --threads T train --config configs/fashion-mosaic.toml` as a user runs it, stage 1 cut to
         one step and stage 2 to --steps steps (stage 0 comes from, or goes to, a cache in a temporary
         folder: its first use trains it, untimed); the step time is the median `step_s` of stage 2's
         records in metrics.jsonl after the first 10 (the frozen encoder's features are computed once,
         before the steps, as vlmc's trainer does).
PyTorch  transformers' LlamaForCausalLM of the config's sizes (2 layers, width 128, 4 heads, MLP 256,
         vocabulary 52, 256 positions), LLaVA's mlp2x_gelu projector on precomputed features
         [32, 16, 128] spliced after the first text token of 9 (25 positions a sample, 800 a step),
         the shifted LM loss on the text, backward, gradient clipping at 1.0, AdamW (projector lr 1e-3,
         language model 5e-4); the median over --steps steps after 10 untimed ones.

Both are f32. Prints each side's ms per step and the ratio, per thread count, and the speed-up of 2
threads over 1.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, VISUAL, TEXT, WIDTH, VOCAB = 32, 16, 9, 128, 52
WARMUP = 10


def pytorch_step_ms(threads, steps):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         rope_theta=10000.0, attn_implementation="eager")
    lm = LlamaForCausalLM(config).train()
    projector = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU(), torch.nn.Linear(WIDTH, WIDTH))
    opt = torch.optim.AdamW([{"params": projector.parameters(), "lr": 1e-3}, {"params": lm.parameters(), "lr": 5e-4}],
                            weight_decay=0.0)
    features = torch.randn(BATCH, VISUAL, WIDTH)
    ids = torch.randint(0, VOCAB, (BATCH, TEXT))
    labels = torch.cat([ids[:, :1], torch.full((BATCH, VISUAL), -100), ids[:, 1:]], dim=1)
    params = list(projector.parameters()) + list(lm.parameters())
    times = []
    for step in range(WARMUP + steps):
        t0 = time.perf_counter()
        text = lm.get_input_embeddings()(ids)
        embeds = torch.cat([text[:, :1], projector(features), text[:, 1:]], dim=1)  # [B, 25, 128]
        logits = lm(inputs_embeds=embeds).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def vlmc_step_ms(vlmc, root, cache, threads, steps):
    name = f"t{threads}"
    cmd = [vlmc, "--threads", str(threads), "train", "--config", "configs/fashion-mosaic.toml", "--run.name", name,
           "--run.runs_dir", root, "--run.cache_dir", cache, "--run.log_every_s", "1e9",
           "--run.checkpoint_every", "1000000", "--stage1.steps", "1", "--stage2.steps", str(WARMUP + steps),
           "--eval.mosaics", "1"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in open(os.path.join(root, name, "metrics.jsonl")) if line.strip()]
    times = [r["step_s"] for r in records if r.get("stage") == "stage2" and "step_s" in r][WARMUP:]
    assert len(times) == steps, f"expected {steps} timed stage-2 records, found {len(times)}"
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vlmc")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    vlmc = os.path.abspath(args.vlmc)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # configs/ and the data paths
    threads = [int(t) for t in args.threads.split(",")]
    rows = {}
    with tempfile.TemporaryDirectory() as root:
        cache = os.path.join(root, "cache")
        # Stage 0 trained once into the cache, untimed.
        subprocess.run([vlmc, "train", "--config", "configs/fashion-mosaic.toml", "--run.name", "stage0",
                        "--run.runs_dir", root, "--run.cache_dir", cache, "--stage1.steps", "1", "--stage2.steps", "1",
                        "--eval.mosaics", "1"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for t in threads:
            rows[t] = {"vlmc_ms": vlmc_step_ms(vlmc, root, cache, t, args.steps),
                       "pytorch_ms": pytorch_step_ms(t, args.steps)}
    print(f"stage-2 step of configs/fashion-mosaic.toml (batch {BATCH}, {BATCH * (VISUAL + TEXT)} positions, f32), "
          f"median of {args.steps} steps; PyTorch {torch.__version__}")
    for t, r in rows.items():
        print(f"  {t} thread(s): vlmc {r['vlmc_ms']:7.2f} ms  PyTorch {r['pytorch_ms']:7.2f} ms  "
              f"PyTorch / vlmc {r['pytorch_ms'] / r['vlmc_ms']:.2f}x")
    if 1 in rows and 2 in rows:
        print(f"  2 threads over 1: vlmc {rows[1]['vlmc_ms'] / rows[2]['vlmc_ms']:.2f}x, "
              f"PyTorch {rows[1]['pytorch_ms'] / rows[2]['pytorch_ms']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(t): r for t, r in rows.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
