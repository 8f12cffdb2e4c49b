#!/usr/bin/env python3
"""Writes tests/golden/optim.safetensors: torch.optim.AdamW driven by a cosine-with-warmup
LambdaLR and clip_grad_norm_, replayed by tests/optim/test_adamw.cpp (tag [optim]).

Usage (from tests/golden, with Debian's /usr/bin/python3 and python3-torch):
    /usr/bin/python3 make_golden_optim.py [--out DIR]

Each case <case> runs STEPS training steps over five parameters in four groups
(weight decay / none, and a "connector." group with its own lr, betas and eps), on
stored per-step gradients (so the replay needs no model). It holds
    <case>.init.<param>    the initial parameter values
    <case>.grad.<param>    [STEPS, *shape] the gradient fed at each step
    <case>.final.<param>   the parameters after STEPS steps
and <case>.args (metadata, JSON): the hyper-parameters, the groups, "has_grad"
(per parameter, the steps at which it gets a gradient; the others leave .grad None, so
AdamW skips it), "lrs" ([step][group], the lr each step used) and "norms" (what
clip_grad_norm_ returned each step). Floats in JSON round-trip exactly.

The schedule is transformers.get_cosine_schedule_with_warmup written out from its
documentation, with a floor (min_lr_ratio) as transformers' cosine_with_min_lr:
    warmup = ceil(warmup_ratio * total)
    step < warmup: step / max(1, warmup)
    else: p = (step - warmup) / max(1, total - warmup); c = 0.5 * (1 + cos(pi * p))
          floor + (1 - floor) * c
"""

import argparse
import json
import math
import os
import zlib

import torch

from make_golden import FORMAT, VERSION, write_safetensors

STEPS = 20

# name -> shape; the 1-D "norm.weight" and the biases take no weight decay.
PARAMS = {
    "proj.weight": (5, 4),
    "proj.bias": (5,),
    "norm.weight": (4,),
    "connector.weight": (3, 4),
    "connector.bias": (3,),
}
GROUPS = [  # (name, params, lr, weight_decay, betas, eps)
    ("decay", ["proj.weight"], 5e-2, 0.1, (0.9, 0.999), 1e-8),
    ("no_decay", ["proj.bias", "norm.weight"], 5e-2, 0.0, (0.9, 0.999), 1e-8),
    ("connector.decay", ["connector.weight"], 2e-1, 0.05, (0.8, 0.95), 1e-6),
    ("connector.no_decay", ["connector.bias"], 2e-1, 0.0, (0.8, 0.95), 1e-6),
]
MAX_NORM = 1.0
# Steps at which "proj.bias" has no gradient (AdamW skips it; its step count stalls).
BIAS_SKIPPED = {5, 6, 11}


def cosine_with_warmup(step, warmup, total, floor):
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    cosine = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return floor + (1.0 - floor) * cosine


def run_case(name, warmup_ratio, min_lr_ratio):
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    params = {n: torch.randn(s) for n, s in PARAMS.items()}
    # Per-step gradient scales: some steps far above MAX_NORM (clipped), some below.
    scales = [0.05 if s % 3 == 1 else 1.5 for s in range(STEPS)]
    grads = {n: torch.stack([torch.randn(s) * scales[k] for k in range(STEPS)])
             for n, s in PARAMS.items()}
    warmup = math.ceil(warmup_ratio * STEPS)

    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    groups = [{"params": [leaves[n] for n in names], "lr": lr, "weight_decay": wd,
               "betas": betas, "eps": eps} for _, names, lr, wd, betas, eps in GROUPS]
    opt = torch.optim.AdamW(groups, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, warmup, STEPS, min_lr_ratio))

    lrs, norms = [], []
    has_grad = {n: [] for n in PARAMS}
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        for n, leaf in leaves.items():
            if n == "proj.bias" and step in BIAS_SKIPPED:
                continue
            leaf.grad = grads[n][step].clone()
            has_grad[n].append(step)
        total = torch.nn.utils.clip_grad_norm_(list(leaves.values()), MAX_NORM)
        norms.append(float(total))
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()

    tensors = []
    for n in PARAMS:
        tensors.append((f"{name}.init.{n}", params[n]))
        tensors.append((f"{name}.grad.{n}", grads[n]))
        tensors.append((f"{name}.final.{n}", leaves[n].detach()))
    args = {
        "steps": STEPS, "warmup_ratio": warmup_ratio, "warmup_steps": warmup,
        "min_lr_ratio": min_lr_ratio, "max_norm": MAX_NORM,
        "groups": [{"name": g, "params": names, "lr": lr, "weight_decay": wd,
                    "betas": list(betas), "eps": eps}
                   for g, names, lr, wd, betas, eps in GROUPS],
        "has_grad": has_grad, "lrs": lrs, "norms": norms,
    }
    return tensors, {f"{name}.args": json.dumps(args, separators=(",", ":"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="directory for optim.safetensors (default: this script's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    tensors = []
    metadata = {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                "family": "optim"}
    # warmup_ratio 0.03 of 20 steps = 1 warmup step (LLaVA's ratio); 0.2 = 4 steps.
    for name, ratio, floor in [("warm003", 0.03, 0.0), ("warm020", 0.2, 0.0),
                               ("warm020_floor", 0.2, 0.1)]:
        t, m = run_case(name, ratio, floor)
        tensors += t
        metadata.update(m)
    path = os.path.join(args.out, "optim.safetensors")
    write_safetensors(path, tensors, metadata)
    print("wrote", path)


if __name__ == "__main__":
    main()
