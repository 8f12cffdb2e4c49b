#!/usr/bin/env python3
"""Writes tests/golden/clip_vision.safetensors: Hugging Face's CLIPVisionModel
(output_hidden_states=True), written here from the architecture in plain torch with
the checkpoints' parameter names (Debian has no `transformers`), for
tests/modules/test_clip_vision.cpp (tag [clip_vision]).

Usage (from the repository root, with Debian's /usr/bin/python3 and python3-torch):
    /usr/bin/python3 tests/golden/make_golden_clip_vision.py [--out DIR]

File format and per-case seeding as make_golden.py. Per case:
    <case>.state.<key>        the state_dict under HF's names (vision_model.embeddings.
                              class_embedding, ...), every tensor randomised, LayerNorms
                              included, so that each one matters
    <case>.in.images          pixel values [B, C, H, W] (NCHW, as HF's pixel_values and
                              as vlmc's CLIPVisionModel takes them)
    <case>.out.hidden_states.<i>  i = 0: the embeddings after pre_layrnorm; i >= 1: layer i
    <case>.out.pooler_output  post_layernorm(last_hidden_state[:, 0])
    <case>.proj               random projection of hidden_states[-2] (LLaVA's features)
    <case>.proj.pooler_output random projection of the pooled output (only when args.pooled)
    <case>.grad.images, <case>.grad.<param>
                              d loss / d input and every parameter, loss = sum(hs[-2] * proj)
                              (+ sum(pooler_output * proj.pooler_output) when pooled);
                              zeros where a parameter gets no gradient
and <case>.args: {"op": "clip_vision", the CLIPVisionConfig keys, "pooled": bool}.
"""

import argparse
import json
import os
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_golden import write_safetensors, FORMAT, VERSION


# ---- CLIPVisionModel, after transformers' modeling_clip.py ---------------------------

class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.patch_embedding = nn.Conv2d(c["num_channels"], d, c["patch_size"], c["patch_size"], bias=False)
        self.num_positions = (c["image_size"] // c["patch_size"]) ** 2 + 1
        self.position_embedding = nn.Embedding(self.num_positions, d)
        self.register_buffer("position_ids", torch.arange(self.num_positions).expand((1, -1)),
                             persistent=False)

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.class_embedding.expand(b, 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.scale = (d // self.heads) ** -0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q = split(self.q_proj(x) * self.scale)  # HF scales q before the product
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = c["hidden_act"]
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.self_attn = Attention(c)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(c)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.embeddings = Embeddings(c)
        self.pre_layrnorm = nn.LayerNorm(d, eps=eps)
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(d, eps=eps)


class CLIPVisionModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.vision_model = VisionTransformer(c)

    def forward(self, pixel_values):
        vm = self.vision_model
        h = vm.pre_layrnorm(vm.embeddings(pixel_values))
        hidden_states = [h]
        for layer in vm.encoder.layers:
            h = layer(h)
            hidden_states.append(h)
        pooled = vm.post_layernorm(h[:, 0, :])
        return hidden_states, pooled


# ---- cases -----------------------------------------------------------------------------

CASES = {
    # The brief's small tower: 12x12 RGB, patch 4 (9 patches + CLS), quick_gelu.
    "small_quick_gelu": dict(config=dict(hidden_size=16, intermediate_size=24, num_attention_heads=2,
                                         num_hidden_layers=2, num_channels=3, image_size=12, patch_size=4,
                                         layer_norm_eps=1e-5, hidden_act="quick_gelu"),
                             batch=2, pooled=False),
    # Exact GELU, 3 heads of 4, 3 layers, 2 channels, and an image size that the patch
    # does not divide (10 = 2*4 + 2: the convolution drops the last 2 rows and columns);
    # the loss also reads the pooled output, so every parameter gets a gradient.
    "odd_gelu_pooled": dict(config=dict(hidden_size=12, intermediate_size=20, num_attention_heads=3,
                                        num_hidden_layers=3, num_channels=2, image_size=10, patch_size=4,
                                        layer_norm_eps=1e-6, hidden_act="gelu"),
                            batch=3, pooled=True),
}


def add_case(tensors, metadata, name, spec):
    c = spec["config"]
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    model = CLIPVisionModel(c)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape))
        # LayerNorm gains around 1 so that the stacked layers keep a sensible scale.
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1.0 + 0.2 * torch.randn(mod.weight.shape))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape))
    state = model.state_dict()
    for key in state:
        tensors.append((f"{name}.state.{key}", state[key]))

    images = torch.randn(spec["batch"], c["num_channels"], c["image_size"], c["image_size"])
    images.requires_grad_(True)
    hidden_states, pooled = model(images)
    proj = torch.randn(hidden_states[-2].shape)
    loss = (hidden_states[-2] * proj).sum()
    tensors.append((f"{name}.in.images", images))
    for i, h in enumerate(hidden_states):
        tensors.append((f"{name}.out.hidden_states.{i}", h))
    tensors.append((f"{name}.out.pooler_output", pooled))
    tensors.append((f"{name}.proj", proj))
    if spec["pooled"]:
        proj_pooled = torch.randn(pooled.shape)
        loss = loss + (pooled * proj_pooled).sum()
        tensors.append((f"{name}.proj.pooler_output", proj_pooled))
    loss.backward()
    tensors.append((f"{name}.grad.images", images.grad))
    for pname, p in model.named_parameters():
        tensors.append((f"{name}.grad.{pname}", p.grad if p.grad is not None else torch.zeros_like(p)))
    metadata[f"{name}.args"] = json.dumps(dict(op="clip_vision", pooled=spec["pooled"], **c),
                                          separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="directory for clip_vision.safetensors (default: this script's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # bit-stable sums and products
    os.makedirs(args.out, exist_ok=True)
    tensors, metadata = [], {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                             "family": "clip_vision"}
    for name, spec in CASES.items():
        add_case(tensors, metadata, name, spec)
    path = os.path.join(args.out, "clip_vision.safetensors")
    write_safetensors(path, tensors, metadata)
    print(f"{path}: {len(CASES)} cases, {os.path.getsize(path)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main()
