#!/usr/bin/env python3
"""Times the seed's own PyTorch connector classes, for comparison with
`vlmc connector bench` (same flags, same FLOP count, same JSON fields).

The classes are not copied here: the script reads the Python blocks out of the
seed chapter (../shared/seed/*.txt) and executes the ones that define the
connectors, so what runs is exactly the specification's code.

    /usr/bin/python3 bench/seed_connectors.py --type mlp --batch 4 --tokens 576 \\
        [--backward [--grad sum|random]] [--threads K] [--device cpu|cuda] [--precision f32|bf16] [--json] [dims]

--type all (the default) times the six connectors one after the other. Each
row is the median forward (or, with --backward, forward + backward of
sum(output), or with --grad random of a fixed N(0,1) gradient of the output's
shape) time over --repeats runs after --warmup untimed ones, with the
module in training mode as the seed constructs it (forward alone runs under
torch.no_grad()). --precision bf16 runs the forward and the backward under
torch.autocast(device_type, dtype=torch.bfloat16), the mixed precision that
`vlmc connector bench --precision bf16` matches (bf16 matmul operands, f32
weights and accumulation).
"""
import argparse
import contextlib
import glob
import json
import os
import re
import statistics
import time

from fast_openblas import openblas_core_note, use_fast_openblas

use_fast_openblas()  # before torch loads OpenBLAS

import torch

TYPES = ["linear", "mlp", "downsample", "c-abstractor", "dynamic", "ocr"]


def load_seed_classes(seed_dir):
    text = "".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(seed_dir, "*.txt"))))
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        # Only blocks that define the connector classes; skip demos and training loops.
        if re.search(r"^class \w+\(nn\.Module\)", block, flags=re.M) and "LLaVAModel" not in block:
            block = block.split('if __name__ == "__main__":')[0]
            exec(compile(block, "seed", "exec"), namespace)
    return namespace


def default_seed_dir():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "seed")


def make_connector(seed, kind, a):
    """The seed class for `kind`, built from the dims flags (the seed's defaults)."""
    if kind == "linear":
        return seed["LinearProjection"](a.dim_vision, a.dim_llm)
    if kind == "mlp":
        return seed["MLPConnector"](a.dim_vision, a.dim_llm, a.dim_hidden or None)
    if kind == "downsample":
        return seed["DownsamplingConnector"](a.dim_vision, a.dim_llm, grid_size=a.grid_size,
                                             target_size=a.target_size)
    if kind == "c-abstractor":
        return seed["CAbstractor"](a.dim_vision, a.dim_llm, grid_size=a.grid_size, target_size=a.target_size,
                                   num_conv_layers=a.num_conv_layers)
    if kind == "dynamic":
        return seed["DynamicResolutionConnector"](a.dim_vision, a.dim_llm, max_tokens=a.max_tokens,
                                                  min_tokens=a.min_tokens)
    if kind == "ocr":
        return seed["OCRProjectionConnector"](a.dim_vision, a.dim_llm, max_visual_tokens=a.max_visual_tokens)
    raise ValueError(f"unknown connector type {kind!r}; known: {', '.join(TYPES)}")


def run_forward(module, kind, x, target_tokens):
    if kind == "dynamic":
        return module(x, target_tokens or None)
    return module(x)


def connector_flops(kind, a, batch, tokens):
    """(forward, backward) matmul/conv FLOPs, counted as `vlmc connector bench`
    does: 2 per multiply-add; the backward computes every weight gradient (1x
    the layer's forward) and the input gradient of layers whose input needs
    one (1x more); the benchmark's features need none."""
    dv, dl = a.dim_vision, a.dim_llm
    pooled = batch * a.target_size * a.target_size
    f = [0.0, 0.0]

    def layer(flops, input_grad):
        f[0] += flops
        f[1] += 2 * flops if input_grad else flops

    def mlp(rows, hidden, input_grad):
        layer(2.0 * rows * dv * hidden, input_grad)
        layer(2.0 * rows * hidden * dl, True)

    if kind == "linear":
        layer(2.0 * batch * tokens * dv * dl, False)
    elif kind == "mlp":
        mlp(batch * tokens, a.dim_hidden or dl, False)
    elif kind == "downsample":
        mlp(pooled, dl, False)
    elif kind == "c-abstractor":
        side = a.grid_size
        for i in range(a.num_conv_layers):
            stride = 2 if (a.grid_size // (2 ** (i + 1))) >= a.target_size else 1
            side = (side - 1) // stride + 1
            layer(2.0 * batch * side * side * dv * dv * 9, i > 0)
        mlp(pooled, dl, a.num_conv_layers > 0)
    elif kind == "dynamic":
        keep = a.target_tokens or min(tokens, a.max_tokens)
        if tokens <= keep:
            mlp(batch * tokens, dl, False)
        else:
            f[0] += 2.0 * batch * tokens * dv  # the scorer: top-k gives it no gradient
            mlp(batch * keep, dl, False)
    elif kind == "ocr":
        mlp(batch * tokens, dl, True)  # features + pos_embed: the positions need a gradient
    return f


def add_dims(parser):
    parser.add_argument("--dim-vision", type=int, default=1024)
    parser.add_argument("--dim-llm", type=int, default=4096)
    parser.add_argument("--dim-hidden", type=int, default=0, help="mlp: 0 = dim_llm (the seed's default)")
    parser.add_argument("--grid-size", type=int, default=24)
    parser.add_argument("--target-size", type=int, default=12)
    parser.add_argument("--num-conv-layers", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=576)
    parser.add_argument("--min-tokens", type=int, default=64)
    parser.add_argument("--max-visual-tokens", type=int, default=1024)
    parser.add_argument("--target-tokens", type=int, default=0, help="dynamic: 0 = None (the seed's default)")


def bench_one(seed, kind, a, device):
    torch.manual_seed(a.seed)
    module = make_connector(seed, kind, a).to(device)
    x = torch.randn(a.batch, a.tokens, a.dim_vision, device=device)

    def autocast():
        if a.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    grad = []  # --grad random: drawn at the first backward, once the output's shape is known

    def step():
        if a.backward:
            module.zero_grad(set_to_none=True)
            with autocast():
                out = run_forward(module, kind, x, a.target_tokens)
                if a.grad == "random":
                    if not grad:  # in the output's dtype (bf16 under autocast): no cast inside the timed step
                        grad.append(torch.randn(out.shape, device=device).to(out.dtype))
                    out.backward(grad[0])
                else:
                    out.sum().backward()
        else:
            with torch.no_grad(), autocast():
                out = run_forward(module, kind, x, a.target_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    for _ in range(a.warmup):
        out = step()
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        out = step()
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    fwd, bwd = connector_flops(kind, a, a.batch, a.tokens)
    flops = fwd + (bwd if a.backward else 0.0)
    row = {"impl": "torch", "torch": torch.__version__, "openblas": os.environ.get("OPENBLAS_CORETYPE", "detected"),
           "type": kind, "batch": a.batch, "tokens": a.tokens,
           "dim_vision": a.dim_vision, "dim_llm": a.dim_llm, "threads": torch.get_num_threads(),
           "device": str(device), "backward": a.backward, "repeats": a.repeats,
           "median_ms": round(median, 4), "min_ms": round(min(times), 4), "max_ms": round(max(times), 4),
           "gflop": round(flops / 1e9, 4), "gflops": round(flops / (median * 1e-3) / 1e9, 3),
           "parameters": sum(p.numel() for p in module.parameters()), "output_shape": list(out.shape),
           "precision": a.precision, "grad": a.grad if a.backward else "none"}
    if a.json:
        print(json.dumps(row), flush=True)
    else:
        mode = ("forward+backward (random gradient)" if a.grad == "random" else "forward+backward") if a.backward else "forward"
        print(f"connector {kind} (torch {torch.__version__}, {openblas_core_note()}) on {device}, {a.precision}, "
              f"{row['threads']} threads\n"
              f"  parameters:    {row['parameters']}\n  input shape:   {list(x.shape)}\n"
              f"  output shape:  {row['output_shape']}\n"
              f"  {mode} time: median {median:.2f} ms of {a.repeats} after {a.warmup} warm-up "
              f"(min {min(times):.2f}, max {max(times):.2f})\n"
              f"  {row['gflops']:.1f} GFLOP/s ({row['gflop']:.2f} GFLOP of matmul/conv)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-dir", default=default_seed_dir())
    parser.add_argument("--type", default="all", choices=TYPES + ["all"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=576)
    parser.add_argument("--backward", action="store_true", help="time forward + backward of sum(output)")
    parser.add_argument("--grad", default="sum", choices=["sum", "random"],
                        help="with --backward: sum (the gradient of sum(output), all ones) or random (a fixed "
                             "N(0,1) gradient of the output's shape, as a loss downstream gives)")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                        help="bf16: forward and backward under torch.autocast(dtype=torch.bfloat16)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    add_dims(parser)
    a = parser.parse_args()

    torch.set_num_threads(a.threads or os.cpu_count())
    seed = load_seed_classes(a.seed_dir)
    device = torch.device(a.device)
    for kind in (TYPES if a.type == "all" else [a.type]):
        bench_one(seed, kind, a, device)


if __name__ == "__main__":
    main()
