#!/usr/bin/env python3
"""One LLaVA stage-1 training step in PyTorch eager, timed: the baseline of
bench/bench_llava_step.cpp (same flags, same sizes, same printed and JSON fields).

    python3 bench/llava_step.py [--device cpu|cuda] [--precision f32|bf16] [--batch 1] [--seq 2048]
        [--image-tokens 576] [--dim-vision 1024] [--hidden 2048] [--intermediate 5632] [--layers 22]
        [--heads 32] [--kv-heads 4] [--vocab 32000] [--warmup 2] [--repeats 5] [--json PATH] [--quick]

The step: vision features [B, N, Dv] (random) -> LLaVA's mlp2x_gelu connector
(Linear, GELU, Linear: Dv -> hidden) -> spliced at the <image> placeholder
(second position) into random text ids, so that each sample is exactly --seq
long -> a LLaMA-shaped decoder (RMSNorm, rotary positions, grouped-KV causal
attention through F.scaled_dot_product_attention, SwiGLU MLP; frozen) -> the
shifted causal LM loss (image positions ignored) -> backward -> AdamW on the
connector only (lr 1e-3, no weight decay: LLaVA-1.5's stage 1).

--precision bf16 runs the forward under torch.autocast(dtype=torch.bfloat16);
the backward and the optimizer run outside it, as PyTorch recommends. The
default sizes are TinyLlama's (about 1.1B parameters). --quick: hidden 64, 2
layers, 4 heads, 2 KV heads, vocab 512, seq 64, 16 visual tokens of width 64.

Before timing, the first batch's loss must be finite and within 20 % of
ln(vocab) (the model is initialised as LLaMA's, N(0, 0.02)); otherwise exit 1.
Peak memory is torch.cuda.max_memory_allocated() over the timed steps (n/a on the CPU).
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import time

from fast_openblas import openblas_core_note, use_fast_openblas

use_fast_openblas()  # before torch loads OpenBLAS

import torch
import torch.nn as nn
import torch.nn.functional as F

QUICK = dict(hidden=64, intermediate=176, layers=2, heads=4, kv_heads=2, vocab=512, seq=64, image_tokens=16,
             dim_vision=64, warmup=0, repeats=1)
FULL = dict(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000, seq=2048, image_tokens=576,
            dim_vision=1024, warmup=2, repeats=5)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(length, head_dim, theta, device):
    """cos, sin [L, Dh]: the frequencies repeated twice along Dh (LLaMA's layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    freqs = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def causal_attention(q, k, v):
    """q [B, H, L, Dh], k and v [B, H, L, Dh] -> [B, H, L, Dh]. PyTorch 2's fused
    kernel where it exists; the same maths written out on older versions."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    length = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.hidden // a.heads
        self.q_proj = nn.Linear(a.hidden, a.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(a.hidden, a.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(a.hidden, a.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(a.heads * self.head_dim, a.hidden, bias=False)

    def forward(self, x, cos, sin):
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos.to(q.dtype) + rotate_half(q) * sin.to(q.dtype)
        k = k * cos.to(k.dtype) + rotate_half(k) * sin.to(k.dtype)
        groups = self.heads // self.kv_heads  # each KV head serves `groups` query heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        out = causal_attention(q, k, v).transpose(1, 2).reshape(b, length, -1)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.gate_proj = nn.Linear(a.hidden, a.intermediate, bias=False)
        self.up_proj = nn.Linear(a.hidden, a.intermediate, bias=False)
        self.down_proj = nn.Linear(a.intermediate, a.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.hidden)
        self.mlp = MLP(a)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaForCausalLM(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(DecoderLayer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        self.head_dim = a.hidden // a.heads
        for m in self.modules():  # LLaMA's initialisation: N(0, initializer_range 0.02)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, inputs_embeds):
        cos, sin = rotary(inputs_embeds.shape[1], self.head_dim, 10000.0, inputs_embeds.device)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def make_batch(a, device, generator):
    """Text ids [B, T] (a BOS-like 1, the <image> at position 1, random text) and
    features [B, N, Dv]; T = seq - N + 1 so that each spliced sample is seq long."""
    text = a.seq - a.image_tokens + 1
    ids = torch.randint(0, a.vocab, (a.batch, text), generator=generator)
    ids[:, 0] = 1
    ids[:, 1] = -200
    features = torch.randn(a.batch, a.image_tokens, a.dim_vision, generator=generator)
    return ids.to(device), features.to(device)


def step_loss(llm, connector, ids, features):
    """LLaVA's splice (the image's tokens replace the placeholder), the model, the shifted loss."""
    visual = connector(features)  # [B, N, D]
    embed = llm.embed_tokens
    inputs = torch.cat([embed(ids[:, :1]), visual, embed(ids[:, 2:])], dim=1)  # promotes a bf16 visual to f32
    ignore = torch.full((ids.shape[0], visual.shape[1]), -100, dtype=ids.dtype, device=ids.device)
    labels = torch.cat([ids[:, :1], ignore, ids[:, 2:]], dim=1)
    logits = llm(inputs)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    parser.add_argument("--batch", type=int, default=1)
    for name in ["seq", "image-tokens", "dim-vision", "hidden", "intermediate", "layers", "heads", "kv-heads",
                 "vocab", "warmup", "repeats"]:
        parser.add_argument("--" + name, type=int, default=None,
                            help=f"default {FULL[name.replace('-', '_')]} ({QUICK[name.replace('-', '_')]} with --quick)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs on the CPU in seconds")
    a = parser.parse_args()
    for key, value in (QUICK if a.quick else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.seq <= a.image_tokens:
        parser.error(f"--seq {a.seq} must exceed --image-tokens {a.image_tokens} (the text fills the rest)")
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        parser.error("--hidden must split into --heads of even width, and --heads into --kv-heads groups")
    torch.set_num_threads(a.threads or os.cpu_count())

    device = torch.device(a.device)
    on_gpu = device.type == "cuda"
    torch.manual_seed(a.seed)
    llm = LlamaForCausalLM(a).to(device)
    llm.requires_grad_(False)  # stage 1: the language model is frozen
    connector = nn.Sequential(nn.Linear(a.dim_vision, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.hidden)).to(device)
    optimizer = torch.optim.AdamW(connector.parameters(), lr=1e-3, weight_decay=0.0)
    ids, features = make_batch(a, device, torch.Generator().manual_seed(a.seed))

    def autocast():
        if a.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    uniform = math.log(a.vocab)
    with torch.no_grad(), autocast():
        first_loss = step_loss(llm, connector, ids, features).item()
    if not math.isfinite(first_loss) or abs(first_loss - uniform) > 0.2 * uniform:
        raise SystemExit(f"llava_step.py: validation failed: loss at init {first_loss} is not within 20 % of "
                         f"ln(vocab) = {uniform}")

    def train_step():
        with autocast():
            loss = step_loss(llm, connector, ids, features)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize(device)

    for _ in range(a.warmup):
        train_step()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        train_step()
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    tokens_per_s = a.batch * a.seq / (median * 1e-3)
    peak = torch.cuda.max_memory_allocated(device) if on_gpu else None
    parameters = sum(p.numel() for p in llm.parameters()) + sum(p.numel() for p in connector.parameters())
    trainable = sum(p.numel() for p in connector.parameters())

    print(f"LLaVA stage-1 step (torch {torch.__version__}, {openblas_core_note()}) on {device}, {a.precision}, {torch.get_num_threads()} threads\n"
          f"  model:        hidden {a.hidden}, intermediate {a.intermediate}, {a.layers} layers, {a.heads} heads "
          f"({a.kv_heads} KV), vocab {a.vocab}\n"
          f"  parameters:   {parameters} ({trainable} trainable: the connector)\n"
          f"  batch {a.batch} x seq {a.seq} ({a.image_tokens} visual tokens of width {a.dim_vision})\n"
          f"  first loss:   {first_loss:.6f} (ln(vocab) {uniform:.6f})\n"
          f"  step:         median {median:.2f} ms of {a.repeats} after {a.warmup} warm-up "
          f"(min {min(times):.2f}, max {max(times):.2f})\n"
          f"  tokens/s:     {tokens_per_s:.1f}\n"
          f"  peak memory:  {'n/a' if peak is None else f'{peak / 2**20:.1f} MiB'}", flush=True)
    if a.json:
        row = {"bench": "llava_step", "impl": "torch", "torch": torch.__version__, "device": str(device),
               "precision": a.precision, "batch": a.batch, "seq": a.seq, "image_tokens": a.image_tokens,
               "dim_vision": a.dim_vision, "hidden": a.hidden, "intermediate": a.intermediate, "layers": a.layers,
               "heads": a.heads, "kv_heads": a.kv_heads, "vocab": a.vocab, "parameters": parameters,
               "trainable_parameters": trainable, "first_loss": round(first_loss, 6), "repeats": a.repeats,
               "warmup": a.warmup, "median_ms": round(median, 4), "min_ms": round(min(times), 4),
               "max_ms": round(max(times), 4), "tokens_per_s": round(tokens_per_s, 3), "peak_memory_bytes": peak,
               "threads": torch.get_num_threads()}
        write_atomically(a.json, json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
