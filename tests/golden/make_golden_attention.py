#!/usr/bin/env python3
"""Writes tests/golden/attention.safetensors: plain-torch attention for vlmc's
scaled_dot_product_attention, checked by tests/kernels/test_attention.cpp (tag [attention]).

Usage (from tests/golden, with Debian's /usr/bin/python3 and python3-torch):
    /usr/bin/python3 make_golden_attention.py [--out DIR]

The reference is spelled out (no F.scaled_dot_product_attention, which torch 1.13 lacks):
(q @ kᵀ * scale).masked_fill(~visible, -inf).softmax(-1) @ v, with the KV heads
repeat_interleave'd to the query heads. Cases: <case>.in.q/k/v [, .in.mask u8 [B, S]],
.out, .proj, .grad.q/k/v, and <case>.args {"op": "sdpa", "causal": bool}.
"""

import math

import torch

from make_golden import Family, randn, write_families


def reference(q, k, v, mask=None, causal=False):
    t, s, dh = q.shape[2], k.shape[2], q.shape[3]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(dh))
    hidden = torch.zeros(q.shape[0], 1, t, s, dtype=torch.bool)
    if mask is not None:
        hidden = hidden | (mask == 0)[:, None, None, :]
    if causal:
        i = torch.arange(t)[:, None]
        j = torch.arange(s)[None, :]
        hidden = hidden | (j > i + s - t)[None, None]
    return scores.masked_fill(hidden, float("-inf")).softmax(-1) @ v


def attention():
    fam = Family("attention")
    # name: (B, Hq, Hkv, T, S, Dh, causal, padding mask)
    cases = {
        "plain": (2, 2, 2, 4, 6, 8, False, False),
        "causal_square": (1, 3, 3, 6, 6, 4, True, False),
        "causal_longer_keys": (2, 2, 2, 3, 7, 5, True, False),
        "padding": (2, 2, 2, 4, 5, 6, False, True),
        "padding_causal": (2, 2, 1, 5, 5, 4, True, True),
        "grouped": (2, 4, 2, 5, 6, 8, False, False),
        "odd": (1, 2, 2, 5, 7, 3, False, False),
        "odd_grouped_causal": (2, 4, 2, 5, 7, 3, True, False),
    }
    for name, (b, hq, hkv, t, s, dh, causal, pad) in cases.items():
        def make(b=b, hq=hq, hkv=hkv, t=t, s=s, dh=dh, pad=pad, causal=causal):
            inputs = {"q": randn(b, hq, t, dh), "k": randn(b, hkv, s, dh), "v": randn(b, hkv, s, dh)}
            if pad:
                # Each sample keeps a prefix of its keys (at least the last one visible to every
                # causal row), like right-padded batches; sample 0 also drops a middle key.
                m = torch.ones(b, s, dtype=torch.uint8)
                m[0, 1] = 0
                # (Causal rows see a prefix of the keys: key 0 must stay visible to row 0.)
                m[1, s - 1 if not causal else s // 2] = 0
                m[1, 0] = 0 if not causal else 1
                inputs["mask"] = m
            return inputs

        def fn(q, k, v, mask=None, causal=causal):
            return reference(q, k, v, mask, causal)

        fam.case(name, make, fn, op="sdpa", causal=causal)
    return fam


def main():
    write_families(__doc__, [attention])


if __name__ == "__main__":
    main()
