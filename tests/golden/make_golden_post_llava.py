#!/usr/bin/env python3
"""Writes tests/golden/post_llava_connectors.safetensors: the connectors that came
after LLaVA, run by their reference PyTorch code at small odd sizes, in training
and eval mode, for tests/modules/test_connector_golden.cpp (the same case format
as make_golden_connectors.py).

Usage (from the repository root, in the venv of tests/golden/README.md: Debian's
torch with transformers 4.45.2):
    V/bin/python tests/golden/make_golden_post_llava.py [--out DIR]

The references:
  patch-merger   transformers 4.45's Qwen2-VL `PatchMerger`, fed the patch grid
                 in the order Qwen2-VL's image processor emits it (each r x r
                 window's patches consecutive, row-major inside the window);
  perceiver      transformers 4.45's `Idefics2Connector` (SwiGLU modality
                 projection, then the perceiver resampler), eager attention;
  qwen-resampler Qwen-VL's `Resampler` (attn_pool: nn.MultiheadAttention,
                 MAE's 2D sin-cos positions, get_abs_pos's bicubic resize) and
                 its VisionTransformer's ln_post and proj, restated below from
                 the published model code;
  pixel-shuffle  InternVL-Chat's `pixel_shuffle` (ps_version v2) and `mlp1`,
                 restated below from the published model code;
  ldp-v2         MobileVLM V2's `LDPNetV2Projector` (FeatureIRLayer,
                 TokenDownLayer, PosInjectLayer), restated below from the
                 published model code;
  honeybee       Honeybee's `CAbstractor` (pos_emb, RegStage, adaptive pooling,
                 RegStage, readout), restated below from the published model
                 code around timm 0.9.16's own `RegStage` (with Debian's
                 python3-torchvision; timm installed with --no-deps).
The restated ones are written here; the others run from transformers.
"""

import argparse
import math
import os
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from make_golden import Family
from make_golden_connectors import record_case

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- InternVL-Chat: pixel shuffle, then LayerNorm -> Linear -> GELU -> Linear --------------

def internvl_pixel_shuffle(x, scale_factor):
    """InternVL's ps_version v2 on a [n, w, h, c] grid (w is the row index, as
    InternVL names it): two reshapes with a transpose between and after."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()


class InternVLProjector(nn.Module):
    def __init__(self, dim_vision, dim_llm, merge_size):
        super().__init__()
        self.merge_size = merge_size
        merged = dim_vision * merge_size * merge_size
        self.mlp1 = nn.Sequential(nn.LayerNorm(merged), nn.Linear(merged, dim_llm), nn.GELU(),
                                  nn.Linear(dim_llm, dim_llm))

    def forward(self, x):  # InternVL's extract_feature after the vision model
        b, n, c = x.shape
        side = int(n ** 0.5)
        grid = x.reshape(b, side, side, c)
        shuffled = internvl_pixel_shuffle(grid, 1.0 / self.merge_size)
        return self.mlp1(shuffled.reshape(b, -1, shuffled.shape[-1]))


# ---- Honeybee: the C-Abstractor --------------------------------------------------------------

class HoneybeeCAbstractor(nn.Module):
    """Honeybee's Projector + ConvProjector + CAbstractor with prenorm off and
    no eos tokens (its defaults), positions on the patches only."""

    def __init__(self, dim_vision, dim_llm, grid_size, target_size, dim_hidden, reg_depth):
        super().__init__()
        from functools import partial
        from timm.layers import LayerNorm2d
        from timm.models.regnet import RegStage
        self.pos_emb = nn.Parameter(torch.zeros(1, grid_size * grid_size, dim_vision))
        nn.init.trunc_normal_(self.pos_emb, mean=0.0, std=0.02)
        reg_block = partial(RegStage, stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d)
        self.net = nn.Sequential(reg_block(reg_depth, dim_vision, dim_hidden),
                                 nn.AdaptiveAvgPool2d((target_size, target_size)),
                                 reg_block(reg_depth, dim_hidden, dim_hidden))
        self.readout = nn.Sequential(nn.Linear(dim_hidden, dim_llm), nn.SiLU(), nn.Linear(dim_llm, dim_llm))

    def forward(self, x):
        x = x + self.pos_emb
        b, n, c = x.shape
        side = int(n ** 0.5)
        grid = x.transpose(1, 2).reshape(b, c, side, side)  # "b (h w) d -> b d h w"
        grid = self.net(grid)
        return self.readout(grid.flatten(2).transpose(1, 2))  # "b d h w -> b (h w) d"


# ---- MobileVLM V2: LDPv2 ----------------------------------------------------------------------

class FeatureIRLayer(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x):
        return self.mlp(x)


class TokenDownLayer(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.dwn = nn.Sequential(nn.AdaptiveAvgPool2d(shape))

    def forward(self, x):
        b, num_tokens, c = x.shape
        h = int(math.sqrt(num_tokens))
        x = x.permute(0, 2, 1).reshape(b, -1, h, h)
        return self.dwn(x).flatten(2).transpose(1, 2)


class PosInjectLayer(nn.Module):
    def __init__(self, in_dim, out_dim, stride=1):
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, stride, 1, bias=True, groups=out_dim))

    def forward(self, x):
        b, num_tokens, c = x.shape
        h = int(math.sqrt(num_tokens))
        cnn_feat = x.transpose(1, 2).view(b, c, h, h)
        return (self.peg(cnn_feat) + cnn_feat).flatten(2).transpose(1, 2)


class LDPNetV2Projector(nn.Module):
    def __init__(self, dim_vision, dim_llm, target_size):
        super().__init__()
        self.mlp = FeatureIRLayer(dim_vision, dim_llm)
        self.dwn = TokenDownLayer((target_size, target_size))
        self.peg = PosInjectLayer(dim_llm, dim_llm, stride=1)

    def forward(self, x):
        return self.peg(self.dwn(self.mlp(x)))


# ---- Qwen-VL: the resampler (attn_pool), ln_post and proj --------------------------------------

def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.
    omega = 1. / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_abs_pos(abs_pos, tgt_size):
    src_size = int(math.sqrt(abs_pos.size(0)))
    tgt_size = int(math.sqrt(tgt_size))
    if src_size == tgt_size:
        return abs_pos
    grid = abs_pos.float().reshape(1, src_size, src_size, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(tgt_size, tgt_size), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).flatten(0, 2).to(dtype=abs_pos.dtype)


class QwenResampler(nn.Module):
    """Qwen-VL's Resampler. pos_embed is a buffer here (Qwen-VL: a Parameter
    with requires_grad off); the state_dict key and values are the same."""

    def __init__(self, grid_size, embed_dim, num_heads, kv_dim):
        super().__init__()
        self.num_queries = grid_size ** 2
        self.register_buffer("pos_embed", torch.from_numpy(get_2d_sincos_pos_embed(embed_dim, grid_size)).float())
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        nn.init.trunc_normal_(self.query, std=.02)
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x):
        pos_embed = get_abs_pos(self.pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1),
                        x)[0]
        return out.permute(1, 0, 2)


class QwenVLProjector(nn.Module):
    """attn_pool, then VisionTransformer's ln_post and x @ proj, as Qwen-VL's
    visual.py ends its forward."""

    def __init__(self, dim_vision, dim_llm, num_latents, resampler_heads):
        super().__init__()
        grid = int(math.sqrt(num_latents))
        self.attn_pool = QwenResampler(grid, dim_llm, resampler_heads, dim_vision)
        self.ln_post = nn.LayerNorm(dim_llm, eps=1e-6)
        self.proj = nn.Parameter((dim_llm ** -0.5) * torch.randn(dim_llm, dim_llm))

    def forward(self, x):
        return self.ln_post(self.attn_pool(x)) @ self.proj


# ---- Qwen2-VL: the patch merger on the processor's window order ---------------------------------

class Qwen2VLMerger(nn.Module):
    """transformers' PatchMerger (as `merger`, so the state_dict keys are the
    checkpoint's visual.merger.* without the prefix) on a row-major grid
    reordered the way Qwen2-VL's image processor orders patches."""

    def __init__(self, dim_vision, dim_llm, merge_size):
        super().__init__()
        from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger
        self.merge_size = merge_size
        self.merger = PatchMerger(dim_llm, dim_vision, merge_size)

    def forward(self, x):
        b, n, c = x.shape
        side, r = int(n ** 0.5), self.merge_size
        # [b, h/r, r, w/r, r, c] -> [b, h/r, w/r, r, r, c]: the processor's order
        windows = x.reshape(b, side // r, r, side // r, r, c).permute(0, 1, 3, 2, 4, 5)
        return self.merger(windows.reshape(-1, c)).reshape(b, (side // r) ** 2, -1)

    def state_dict(self, *args, **kwargs):
        return self.merger.state_dict(*args, **kwargs)

    def named_parameters(self, *args, **kwargs):
        return self.merger.named_parameters(*args, **kwargs)


# ---- Idefics2: modality projection + perceiver resampler ------------------------------------------

def idefics2_connector(dim_vision, dim_llm, dim_hidden, num_latents, resampler_depth, resampler_heads,
                       resampler_head_dim, resampler_kv_heads):
    from transformers import Idefics2Config
    from transformers.models.idefics2.modeling_idefics2 import Idefics2Connector
    config = Idefics2Config(
        vision_config=dict(hidden_size=dim_vision),
        text_config=dict(model_type="mistral", hidden_size=dim_llm, intermediate_size=dim_hidden,
                         rms_norm_eps=1e-6, hidden_act="silu"),
        perceiver_config=dict(hidden_act="silu", resampler_n_latents=num_latents,
                              resampler_depth=resampler_depth, resampler_n_heads=resampler_heads,
                              resampler_head_dim=resampler_head_dim, num_key_value_heads=resampler_kv_heads))
    config._attn_implementation = "eager"
    module = Idefics2Connector(config)
    with torch.no_grad():  # Idefics2 starts the latents at ones; any values will do here
        module.perceiver_resampler.latents.normal_()
    return module


class Idefics2Reference(nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.connector = idefics2_connector(**config)

    def forward(self, x):  # every patch is real: the attention mask is all ones
        return self.connector(x, torch.ones(x.shape[0], x.shape[1], dtype=torch.long))

    def state_dict(self, *args, **kwargs):
        return self.connector.state_dict(*args, **kwargs)

    def named_parameters(self, *args, **kwargs):
        return self.connector.named_parameters(*args, **kwargs)


def build(kind, c):
    if kind == "patch-merger":
        return Qwen2VLMerger(c["dim_vision"], c["dim_llm"], c["merge_size"])
    if kind == "pixel-shuffle":
        return InternVLProjector(c["dim_vision"], c["dim_llm"], c["merge_size"])
    if kind == "ldp-v2":
        return LDPNetV2Projector(c["dim_vision"], c["dim_llm"], c["target_size"])
    if kind == "perceiver":
        keys = ["dim_vision", "dim_llm", "dim_hidden", "num_latents", "resampler_depth", "resampler_heads",
                "resampler_head_dim", "resampler_kv_heads"]
        return Idefics2Reference(**{k: c[k] for k in keys})
    if kind == "honeybee":
        return HoneybeeCAbstractor(c["dim_vision"], c["dim_llm"], c["grid_size"], c["target_size"], c["dim_hidden"],
                                   c["reg_depth"])
    if kind == "qwen-resampler":
        return QwenVLProjector(c["dim_vision"], c["dim_llm"], c["num_latents"], c["resampler_heads"])
    raise ValueError(kind)


# (case, type, ConnectorConfig fields, batch, tokens)
CASES = [
    ("merger", "patch-merger", dict(dim_vision=6, dim_llm=10, grid_size=4, merge_size=2), 2, 16),
    ("merger_r3", "patch-merger", dict(dim_vision=5, dim_llm=7, grid_size=6, merge_size=3), 2, 36),
    ("shuffle", "pixel-shuffle", dict(dim_vision=6, dim_llm=10, grid_size=4, merge_size=2), 2, 16),
    ("shuffle_r3", "pixel-shuffle", dict(dim_vision=5, dim_llm=7, grid_size=6, merge_size=3), 2, 36),
    ("ldp", "ldp-v2", dict(dim_vision=12, dim_llm=10, grid_size=6, target_size=3), 2, 36),
    ("ldp_uneven", "ldp-v2", dict(dim_vision=12, dim_llm=10, grid_size=5, target_size=3), 2, 25),
    ("perceiver", "perceiver", dict(dim_vision=10, dim_llm=8, dim_hidden=9, num_latents=5, resampler_depth=2,
                                    resampler_heads=4, resampler_head_dim=3, resampler_kv_heads=2), 2, 7),
    ("perceiver_mha", "perceiver", dict(dim_vision=8, dim_llm=12, dim_hidden=10, num_latents=3,
                                        resampler_depth=1, resampler_heads=2, resampler_head_dim=5,
                                        resampler_kv_heads=2), 3, 4),
    ("honeybee", "honeybee", dict(dim_vision=12, dim_llm=10, grid_size=6, target_size=3, dim_hidden=9,
                                  reg_depth=2), 2, 36),
    ("honeybee_same", "honeybee", dict(dim_vision=10, dim_llm=7, grid_size=5, target_size=2, dim_hidden=10,
                                       reg_depth=1), 3, 25),
    ("qwen", "qwen-resampler", dict(dim_vision=10, dim_llm=12, num_latents=16, resampler_heads=3), 2, 16),
    ("qwen_upsampled", "qwen-resampler", dict(dim_vision=10, dim_llm=12, num_latents=16, resampler_heads=3), 2, 36),
    ("qwen_downsampled", "qwen-resampler", dict(dim_vision=8, dim_llm=8, num_latents=9, resampler_heads=2), 3, 4),
]


def randomise_norms(module):
    """Non-trivial affine parameters for every norm layer (LayerNorm, RMSNorm)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape))
            elif type(m).__name__ == "Idefics2RMSNorm":
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape))


def add_case(fam, name, kind, config, batch, tokens, training):
    assert name not in fam.cases and "." not in name, name
    fam.cases.add(name)
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    module = build(kind, config)
    randomise_norms(module)
    x = torch.randn(batch, tokens, config["dim_vision"])
    args = dict(type=kind, training=training, target_tokens=None, **config)
    record_case(fam, name, module, module, x, args, training)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fam = Family("post_llava_connectors")
    for name, kind, config, batch, tokens in CASES:
        for training in (True, False):
            add_case(fam, f"{name}_{'train' if training else 'eval'}", kind, config, batch, tokens, training)
    print(fam.write(args.out))


if __name__ == "__main__":
    main()
