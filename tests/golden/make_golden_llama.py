#!/usr/bin/env python3
"""Writes tests/golden/llama.safetensors: a LLaMA decoder (Hugging Face's LlamaForCausalLM
architecture, written out in plain torch under HF's parameter names) for vlmc's
nn::LlamaForCausalLM, checked by tests/modules/test_llama.cpp (tag [llama]).

Usage (with Debian's /usr/bin/python3 and python3-torch; `transformers` is not needed):
    /usr/bin/python3 tests/golden/make_golden_llama.py [--out DIR]

Each case <case> holds
    <case>.state.<hf name>    every parameter (model.embed_tokens.weight, model.layers.0...)
    <case>.in.input_ids       i64 [B, T]; sample 1 is right-padded
    <case>.in.attention_mask  i64 [B, T] (1 = real token)
    <case>.in.position_ids    i64 [B, T]: 0..len-1, 0 on padding (as LLaVA's splice gives)
    <case>.in.labels          i64 [B, T]: the ids, -100 on padding
    <case>.out.logits         f32 [B, T, V]
    <case>.proj               a random projection of the logits
    <case>.grad.<hf name>     d sum(logits * proj) / d parameter
    <case>.loss               HF's causal LM loss: cross-entropy of logits[:, :-1] against
                              labels[:, 1:], -100 ignored
and <case>.args in the metadata: the LlamaConfig fields (HF's key names). Float32, one
thread, torch.manual_seed from a CRC-32 of the case name: the file is reproducible.
"""

import argparse
import json
import math
import os
import zlib

import torch
import torch.nn.functional as F

from make_golden import FORMAT, VERSION, write_safetensors


def init_params(cfg):
    """HF's state_dict names -> tensors, N(0, 0.02)-ish weights and non-trivial norm weights."""
    d, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    h, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh = d // h
    p = {"model.embed_tokens.weight": torch.randn(v, d)}
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{layer}."
        # Larger than HF's 0.02 init so that attention and the MLP matter in the output.
        p[pre + "self_attn.q_proj.weight"] = torch.randn(h * dh, d) * 0.3
        p[pre + "self_attn.k_proj.weight"] = torch.randn(hkv * dh, d) * 0.3
        p[pre + "self_attn.v_proj.weight"] = torch.randn(hkv * dh, d) * 0.3
        p[pre + "self_attn.o_proj.weight"] = torch.randn(d, h * dh) * 0.3
        p[pre + "mlp.gate_proj.weight"] = torch.randn(i, d) * 0.3
        p[pre + "mlp.up_proj.weight"] = torch.randn(i, d) * 0.3
        p[pre + "mlp.down_proj.weight"] = torch.randn(d, i) * 0.3
        p[pre + "input_layernorm.weight"] = 1.0 + 0.1 * torch.randn(d)
        p[pre + "post_attention_layernorm.weight"] = 1.0 + 0.1 * torch.randn(d)
    p["model.norm.weight"] = 1.0 + 0.1 * torch.randn(d)
    if not cfg["tie_word_embeddings"]:
        p["lm_head.weight"] = torch.randn(v, d) * 0.3
    return p


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(position_ids, dh, theta):
    """LlamaRotaryEmbedding: cos, sin [B, 1, T, Dh]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
    freqs = position_ids[..., None].float() * inv_freq  # [B, T, Dh/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


def forward(p, cfg, input_ids, attention_mask, position_ids):
    d, h, hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh, eps = d // h, cfg["rms_norm_eps"]
    b, t = input_ids.shape
    x = F.embedding(input_ids, p["model.embed_tokens.weight"])
    cos, sin = rotary(position_ids, dh, cfg["rope_theta"])
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [B, 1, T, T]
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{layer}."
        a = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = F.linear(a, p[pre + "self_attn.q_proj.weight"]).view(b, t, h, dh).transpose(1, 2)
        k = F.linear(a, p[pre + "self_attn.k_proj.weight"]).view(b, t, hkv, dh).transpose(1, 2)
        v = F.linear(a, p[pre + "self_attn.v_proj.weight"]).view(b, t, hkv, dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(h // hkv, dim=1)  # HF's repeat_kv
        v = v.repeat_interleave(h // hkv, dim=1)
        scores = q @ k.transpose(2, 3) / math.sqrt(dh)
        scores = scores.masked_fill(~allowed, float("-inf"))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h * dh)
        x = x + F.linear(o, p[pre + "self_attn.o_proj.weight"])
        m = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        gate = F.linear(m, p[pre + "mlp.gate_proj.weight"])
        up = F.linear(m, p[pre + "mlp.up_proj.weight"])
        x = x + F.linear(F.silu(gate) * up, p[pre + "mlp.down_proj.weight"])
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return F.linear(x, head)


def case(name, cfg, tensors, metadata):
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    b, t = 2, 7
    lengths = [t, 4]  # sample 1: 4 tokens, then right padding
    params = init_params(cfg)
    for w in params.values():
        w.requires_grad_(True)
    input_ids = torch.randint(0, cfg["vocab_size"], (b, t))
    attention_mask = torch.zeros(b, t, dtype=torch.int64)
    position_ids = torch.zeros(b, t, dtype=torch.int64)
    for row, n in enumerate(lengths):
        attention_mask[row, :n] = 1
        position_ids[row, :n] = torch.arange(n)
        input_ids[row, n:] = 0  # the pad id
    labels = input_ids.masked_fill(attention_mask == 0, -100)

    logits = forward(params, cfg, input_ids, attention_mask, position_ids)
    proj = torch.randn(logits.shape)
    (logits * proj).sum().backward()
    v = cfg["vocab_size"]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100)

    for pname, w in params.items():
        tensors.append((f"{name}.state.{pname}", w.detach()))
    tensors += [(f"{name}.in.input_ids", input_ids), (f"{name}.in.attention_mask", attention_mask),
                (f"{name}.in.position_ids", position_ids), (f"{name}.in.labels", labels),
                (f"{name}.out.logits", logits.detach()), (f"{name}.proj", proj),
                (f"{name}.loss", loss.detach())]
    for pname, w in params.items():
        tensors.append((f"{name}.grad.{pname}", w.grad))
    metadata[f"{name}.args"] = json.dumps(cfg, separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="directory for llama.safetensors (default: this script's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # bit-stable sums and products
    os.makedirs(args.out, exist_ok=True)
    base = {"vocab_size": 23, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False}
    # The second case: tied head, one KV head shared by all four, another theta and eps.
    tied = dict(base, num_key_value_heads=1, rope_theta=500000.0, rms_norm_eps=1e-5,
                tie_word_embeddings=True)
    tensors, metadata = [], {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                             "family": "llama"}
    case("gqa", base, tensors, metadata)
    case("tied", tied, tensors, metadata)
    path = os.path.join(args.out, "llama.safetensors")
    write_safetensors(path, tensors, metadata)
    print(f"{path}: 2 cases, {os.path.getsize(path)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main()
