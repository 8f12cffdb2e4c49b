#!/usr/bin/env python3
"""Greedy decoding tokens/s of vlmc against transformers' generate, same folder, same CPU, same threads.

    /work/V/bin/python bench/generate_hf.py --model /work/tinyllama-bf16 \
        --vlmc build-bf16/bench/bench_generate_hf --threads 2

Runs bench_generate_hf (vlmc, weights in the file's dtype and in f32; it validates its own rows) and then
transformers' LlamaForCausalLM.generate(do_sample=False) on the same prompt (prompt ids i * 7919 + 13 mod
vocab, the first one BOS; min_new_tokens = max_new_tokens, so both make every token), the model loaded with
torch_dtype=torch.bfloat16 (or --torch-dtype float32), torch.set_num_threads(threads).

Both sides report the decode rate as vlmc does: the tokens after the first over the time after the first.
transformers' decode time is generate(new) minus generate(1) (prefill and the first token), medians of
--repeats runs after one warm-up. Prints both, the ratio vlmc / transformers, and the prefill times.
A bench only: CI never runs Python (the C++ bench has its own --quick ctest).
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
import transformers
from transformers import LlamaForCausalLM


def vlmc_rows(args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "vlmc.json")
        cmd = [args.vlmc, "--model", args.model, "--weights", args.weights, "--prompt", str(args.prompt), "--new",
               str(args.new), "--threads", str(args.threads), "--repeats", str(args.repeats), "--json", out]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        with open(out) as f:
            return json.load(f)["rows"]


def transformers_rates(args):
    torch.set_num_threads(args.threads)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.torch_dtype]
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=dtype).eval()
    vocab = model.config.vocab_size
    ids = [1 if i == 0 else (i * 7919 + 13) % vocab for i in range(args.prompt)]
    input_ids = torch.tensor([ids])
    mask = torch.ones_like(input_ids)

    def run(new):
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=0)
        seconds = time.perf_counter() - start
        assert out.shape[1] == args.prompt + new, out.shape
        return seconds

    run(args.new)  # warm-up
    first = statistics.median(run(1) for _ in range(args.repeats))
    whole = statistics.median(run(args.new) for _ in range(args.repeats))
    decode = (args.new - 1) / (whole - first)
    return decode, first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a LlamaForCausalLM folder (bench/hf_random_model.py tinyllama)")
    ap.add_argument("--vlmc", required=True, help="the bench_generate_hf binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", default="file,f32", help="vlmc's --weights list")
    ap.add_argument("--torch-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()

    rows = vlmc_rows(args)
    bad = [r["version"] for r in rows if not r["valid"]]
    if bad:
        sys.exit(f"vlmc rows failed validation: {bad}")
    hf_decode, hf_first = transformers_rates(args)

    print(f"\ncpu threads {args.threads}, prompt {args.prompt} tokens, {args.new} new tokens, greedy")
    print(f"transformers {transformers.__version__} (torch {torch.__version__}, {openblas_core_note()}, {args.torch_dtype}): decode "
          f"{hf_decode:.2f} tokens/s, prefill + first token {hf_first:.3f} s")
    for r in rows:
        rate = 1000.0 / r["median_ms"]
        print(f"{r['version']}: decode {rate:.2f} tokens/s ({r['gbps']:.1f} GB/s of weights, memcpy "
              f"{r['ceiling']:.1f}), {rate / hf_decode:.2f}x transformers")


if __name__ == "__main__":
    main()
