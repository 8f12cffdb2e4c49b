#!/usr/bin/env python3
"""A step of the main job (configs/fashion-mosaic.toml), vlmc against a PyTorch eager + transformers
replica, on 1 and 2 threads, in one run:

    V/bin/python bench/fashion_step.py build/vlmc [--stage 2|1|0-vision|0-language] [--steps 100]
        [--threads 1,2] [--rounds 3] [--json PATH]

vlmc     `vlmc --threads T train --config configs/fashion-mosaic.toml` as a user runs it, the other
         stage cut to one step and this one to 10 + --steps steps (stage 0 comes from, or goes to, a
         cache in a temporary folder: its first use trains it, untimed); the step time comes from the
         `step_s` of the stage's records in metrics.jsonl after the first 10 (the frozen encoder's
         features are computed once, before the steps, as vlmc's trainer does).
PyTorch  transformers' LlamaForCausalLM of the config's sizes (2 layers, width 128, 4 heads, MLP 256,
         vocabulary 52, 256 positions), LLaVA's mlp2x_gelu projector on precomputed features
         [32, 16, 128] spliced after the first text token, as many positions a sample as vlmc's
         records show for steps of that parity (stage 1's captions: 37; stage 2's questions: 25), the
         shifted LM loss on the text, backward, AdamW; stage 1: the language model frozen, the
         projector alone at lr 1e-3, no clipping; stage 2: clipping at 1.0, projector lr 1e-3, language
         model 5e-4. Timed over --steps steps after 10 untimed ones.
         Stage 0 (the encoder and the language model trained on their own, before any connector):
         0-vision is transformers' CLIPVisionModel of the config's sizes (width 128, 2 layers, 4 heads,
         MLP 256, one channel, 56 pixels, patch 14), the last hidden state's 16 patches averaged per
         mosaic cell (2x2 patches each) and classified by a Linear(128, 10), cross-entropy, clipping at
         1.0, AdamW (lr 3e-3, weight decay 0.05), batch 64; 0-language is the LlamaForCausalLM above on
         text alone, as many positions as vlmc's records show for steps of that parity, clipping at 1.0,
         AdamW (lr 1e-3, weight decay 0.01), batch 32. For these vlmc trains stage 0 in each timed run
         (a fresh cache).

A step's time is the mean of two medians, of the even steps and of the odd ones, on both sides. vlmc's
stage-0 language model fills its image slots from a grid of half the side every other step, so its
steps alternate between about 840 and 450 positions and take two distinct times; the median of all
steps then falls anywhere in the gap between the two, moved by a few steps either side. The mean of
the two medians is half a pair of steps, the time a run takes, and PyTorch runs the same alternation
of lengths. For the other stages even and odd steps are alike and this is their median.

Both are f32. For each thread count the two alternate --rounds times; prints each side's median ms per
step over the rounds and their ratio (and every round's figure), and the speed-up of 2 threads over 1;
then the same ratios from each side's fastest round (other load on a shared machine only slows a round);
then each round's own ratio (vlmc and PyTorch run back to back, in the same spell of other load): their
median and range over the rounds. The range is a distribution-free interval for the median ratio, of
confidence 1 - 2 * 0.5^rounds when the rounds are independent (94 % for 5 rounds): quote it with the
median.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from fast_openblas import openblas_core_note, use_fast_openblas

use_fast_openblas()  # before torch loads OpenBLAS

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

BATCH, VISUAL, WIDTH, VOCAB = 32, 16, 128, 52
VISION_BATCH, SIDE, PATCH, CLASSES = 64, 56, 14, 10
WARMUP = 10
STAGES = ["2", "1", "0-vision", "0-language"]
RECORD = {"2": "stage2", "1": "stage1", "0-vision": "stage0-vision", "0-language": "stage0-language"}
BATCH_OF = {"2": BATCH, "1": BATCH, "0-vision": VISION_BATCH, "0-language": BATCH}


def language_model():
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         rope_theta=10000.0, attn_implementation="eager")
    return LlamaForCausalLM(config).train()


def parity_mean_of_medians(steps_and_times):
    """The mean of the median time of the even steps and that of the odd ones (see the docstring)."""
    by_parity = [[t for s, t in steps_and_times if s % 2 == parity] for parity in (0, 1)]
    assert all(by_parity), "need timed steps of both parities"
    return statistics.mean(statistics.median(times) for times in by_parity)


def timed_steps(step, steps):
    """The mean of the even and odd steps' median seconds over `steps` calls of step(i) after WARMUP
    untimed ones; i counts from WARMUP + 1 as vlmc's records count their steps."""
    times = []
    for i in range(1, WARMUP + steps + 1):
        t0 = time.perf_counter()
        step(i)
        if i > WARMUP:
            times.append((i, time.perf_counter() - t0))
    return parity_mean_of_medians(times)


def pytorch_stage0_ms(part, positions, threads, steps):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    if part == "0-language":
        lm = language_model()
        params = list(lm.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        ids_of_parity = [torch.randint(0, VOCAB, (BATCH, p)) for p in positions]

        def step(i):
            ids = ids_of_parity[i % 2]
            logits = lm(input_ids=ids).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        config = CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, num_channels=1, image_size=SIDE, patch_size=PATCH,
                                  hidden_act="gelu")
        encoder = CLIPVisionModel(config).train()
        head = torch.nn.Linear(WIDTH, CLASSES)
        params = list(encoder.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.05)
        pixels = torch.randn(VISION_BATCH, 1, SIDE, SIDE)
        classes = torch.randint(0, CLASSES, (VISION_BATCH * 4,))
        grid = SIDE // PATCH

        def step(i):
            patches = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]  # [B, 16, D]
            cells = F.adaptive_avg_pool2d(patches.reshape(VISION_BATCH, grid, grid, WIDTH).permute(0, 3, 1, 2), 2)
            logits = head(cells.permute(0, 2, 3, 1).reshape(VISION_BATCH * 4, WIDTH))  # [B * 4, 10]
            loss = F.cross_entropy(logits, classes)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return 1e3 * timed_steps(step, steps)


def pytorch_step_ms(stage, positions, threads, steps):
    if stage.startswith("0-"):
        return pytorch_stage0_ms(stage, positions, threads, steps)
    stage = int(stage)
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    lm = language_model()
    projector = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU(), torch.nn.Linear(WIDTH, WIDTH))
    if stage == 1:
        lm.requires_grad_(False)
        params = list(projector.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    else:
        params = list(projector.parameters()) + list(lm.parameters())
        opt = torch.optim.AdamW([{"params": projector.parameters(), "lr": 1e-3},
                                 {"params": lm.parameters(), "lr": 5e-4}], weight_decay=0.0)
    features = torch.randn(BATCH, VISUAL, WIDTH)
    ids_of_parity = [torch.randint(0, VOCAB, (BATCH, p - VISUAL)) for p in positions]  # the text of each parity
    labels_of_parity = [torch.cat([ids[:, :1], torch.full((BATCH, VISUAL), -100), ids[:, 1:]], dim=1)
                        for ids in ids_of_parity]

    def step(i):
        ids, labels = ids_of_parity[i % 2], labels_of_parity[i % 2]
        text = lm.get_input_embeddings()(ids)
        embeds = torch.cat([text[:, :1], projector(features), text[:, 1:]], dim=1)  # [B, positions, 128]
        logits = lm(inputs_embeds=embeds).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
        loss.backward()
        if stage == 2:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return 1e3 * timed_steps(step, steps)


def vlmc_step_ms(vlmc, stage, root, cache, threads, steps, round_index=0):
    """The step time in ms (the mean of the even and odd steps' medians) and the positions a sample
    of even and of odd steps, from the stage's metrics."""
    name = f"s{stage}t{threads}r{round_index}"
    timed = str(WARMUP + steps)
    lengths = {"1": ["--stage1.steps", timed, "--stage2.steps", "1"],
               "2": ["--stage1.steps", "1", "--stage2.steps", timed],
               "0-vision": ["--stage0.vision.steps", timed, "--stage0.language.steps", "1",
                            "--stage1.steps", "1", "--stage2.steps", "1"],
               "0-language": ["--stage0.vision.steps", "1", "--stage0.language.steps", timed,
                              "--stage1.steps", "1", "--stage2.steps", "1"]}[stage]
    if stage.startswith("0-"):
        cache = os.path.join(root, f"cache-{name}")  # stage 0 must train in this run
    cmd = [vlmc, "--threads", str(threads), "train", "--config", "configs/fashion-mosaic.toml", "--run.name", name,
           "--run.runs_dir", root, "--run.cache_dir", cache, "--run.log_every_s", "1e9",
           "--run.checkpoint_every", "1000000", "--eval.mosaics", "1"] + lengths
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in open(os.path.join(root, name, "metrics.jsonl")) if line.strip()]
    timed = [r for r in records if r.get("stage") == RECORD[stage] and "step_s" in r][WARMUP:]
    assert len(timed) == steps, f"expected {steps} timed {RECORD[stage]} records, found {len(timed)}"
    positions = [round(statistics.median(r["tokens"] for r in timed if r["step"] % 2 == parity) / BATCH_OF[stage])
                 for parity in (0, 1)]
    return 1e3 * parity_mean_of_medians([(r["step"], r["step_s"]) for r in timed]), positions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vlmc")
    ap.add_argument("--stage", choices=STAGES, default="2")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3,
                    help="vlmc and PyTorch alternate this many times per thread count; their medians are compared "
                         "(other tenants of a shared machine move either by up to 30 %% between minutes)")
    ap.add_argument("--json")
    args = ap.parse_args()
    vlmc = os.path.abspath(args.vlmc)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # configs/ and the data paths
    threads = [int(t) for t in args.threads.split(",")]
    rows = {}
    positions = [0, 0]
    with tempfile.TemporaryDirectory() as root:
        cache = os.path.join(root, "cache")
        # Stage 0 trained once into the cache, untimed (stage 0's own runs train theirs).
        if not args.stage.startswith("0-"):
            subprocess.run([vlmc, "train", "--config", "configs/fashion-mosaic.toml", "--run.name", "stage0",
                            "--run.runs_dir", root, "--run.cache_dir", cache, "--stage1.steps", "1",
                            "--stage2.steps", "1", "--eval.mosaics", "1"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for t in threads:
            v, p = [], []
            for r in range(args.rounds):
                vlmc_ms, positions = vlmc_step_ms(vlmc, args.stage, root, cache, t, args.steps, r)
                v.append(vlmc_ms)
                p.append(pytorch_step_ms(args.stage, positions, t, args.steps))
            rows[t] = {"vlmc_ms": statistics.median(v), "pytorch_ms": statistics.median(p), "vlmc_rounds_ms": v,
                       "pytorch_rounds_ms": p}
    batch = BATCH_OF[args.stage]
    shape = (f"{batch * positions[0]} positions" if positions[0] == positions[1] else
             f"{batch * positions[0]} and {batch * positions[1]} positions on even and odd steps")
    print(f"{RECORD[args.stage]} step of configs/fashion-mosaic.toml (batch {batch}, {shape}, "
          f"f32), the mean of the even and odd steps' medians over {args.steps} steps; PyTorch {torch.__version__} ({openblas_core_note()}); the median of {args.rounds} "
          f"alternating rounds")
    for t, r in rows.items():
        print(f"  {t} thread(s): vlmc {r['vlmc_ms']:7.2f} ms  PyTorch {r['pytorch_ms']:7.2f} ms  "
              f"PyTorch / vlmc {r['pytorch_ms'] / r['vlmc_ms']:.2f}x   rounds: vlmc "
              + " ".join(f"{x:.2f}" for x in r["vlmc_rounds_ms"]) + ", PyTorch "
              + " ".join(f"{x:.2f}" for x in r["pytorch_rounds_ms"]))
    if 1 in rows and 2 in rows:
        print(f"  2 threads over 1: vlmc {rows[1]['vlmc_ms'] / rows[2]['vlmc_ms']:.2f}x, "
              f"PyTorch {rows[1]['pytorch_ms'] / rows[2]['pytorch_ms']:.2f}x")
    # On a shared machine other load only ever slows a round, and a 2-thread round more
    # (it needs both cores): the fastest rounds are the other estimate, printed beside.
    if args.rounds > 1:
        best = {t: (min(r["vlmc_rounds_ms"]), min(r["pytorch_rounds_ms"])) for t, r in rows.items()}
        line = "  fastest rounds: " + ", ".join(
            f"{t} thread(s) PyTorch / vlmc {p / v:.2f}x" for t, (v, p) in best.items())
        if 1 in best and 2 in best:
            line += (f"; 2 threads over 1: vlmc {best[1][0] / best[2][0]:.2f}x, "
                     f"PyTorch {best[1][1] / best[2][1]:.2f}x")
        print(line)
    # Each round runs vlmc and then PyTorch, a minute apart at most: a round's own ratio sees the
    # same spell of other load on both sides, so their spread is the interval to quote.
    for t, r in rows.items():
        ratios = sorted(p / v for v, p in zip(r["vlmc_rounds_ms"], r["pytorch_rounds_ms"]))
        r["paired_ratios"] = ratios
        # The smallest and largest of n independent rounds bracket their distribution's median with
        # probability 1 - 2 * 0.5^n whatever that distribution is (each round falls on either side
        # of the median with probability 1/2): 75 % for 3 rounds, 94 % for 5, 98 % for 7.
        coverage = 1 - 2 * 0.5 ** len(ratios)
        print(f"  paired rounds, {t} thread(s): PyTorch / vlmc median {statistics.median(ratios):.2f}x, "
              f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x over {len(ratios)} rounds"
              + (f" (a {100 * coverage:.0f} % interval for the median ratio)" if len(ratios) > 1 else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(t): r for t, r in rows.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
