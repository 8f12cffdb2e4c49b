#!/usr/bin/env python3
"""Writes tests/golden/connectors.safetensors: the seed's own connector classes
(LinearProjection, MLPConnector, DownsamplingConnector, CAbstractor,
DynamicResolutionConnector, OCRProjectionConnector) at small odd sizes, in
training and eval mode, for tests/modules/test_connector_golden.cpp.

Usage (from the repository root, with Debian's torch; see README.md):
    /usr/bin/python3 tests/golden/make_golden_connectors.py [--out DIR] [--seed-dir DIR]

The classes are not copied into the repository: they are executed from the
seed chapter's Python blocks at run time, by bench/seed_connectors.py's loader.

Per case, beside the file format of make_golden.py:
    <case>.state.<key>       the module's state_dict() before the forward, buffers
                             included (num_batches_tracked: i64, shape []); the
                             BatchNorm and LayerNorm affine parameters and running
                             statistics are randomised so that they matter
    <case>.in.visual_features  the input [B, N, Dv]
    <case>.out, <case>.proj  the output and a random projection of its shape
    <case>.grad.visual_features, <case>.grad.<param>
                             d sum(out * proj) / d input and every parameter
                             (zeros where a parameter gets no gradient, as the
                             dynamic connector's scorer)
    <case>.after.<buffer>    training mode: every buffer after the forward
and <case>.args: {"type": make_connector's name, the ConnectorConfig fields the
case sets, "training": bool, "target_tokens": int or null}.
"""

import argparse
import importlib.util
import json
import os
import zlib

import torch

from make_golden import Family, write_safetensors, FORMAT, VERSION

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def load_seed(seed_dir):
    spec = importlib.util.spec_from_file_location("seed_connectors",
                                                  os.path.join(ROOT, "bench", "seed_connectors.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_seed_classes(seed_dir)


# make_connector's type name -> (seed class, its constructor arguments in order).
CLASSES = {
    "linear": ("LinearProjection", ["dim_vision", "dim_llm"]),
    "mlp": ("MLPConnector", ["dim_vision", "dim_llm", "dim_hidden"]),
    "downsample": ("DownsamplingConnector", ["dim_vision", "dim_llm", "grid_size", "target_size"]),
    "c-abstractor": ("CAbstractor", ["dim_vision", "dim_llm", "grid_size", "target_size", "num_conv_layers"]),
    "dynamic": ("DynamicResolutionConnector", ["dim_vision", "dim_llm", "max_tokens", "min_tokens"]),
    "ocr": ("OCRProjectionConnector", ["dim_vision", "dim_llm", "max_visual_tokens"]),
}

# (case, type, constructor arguments, batch, tokens, target_tokens)
CASES = [
    ("linear", "linear", dict(dim_vision=12, dim_llm=10), 2, 7, None),
    ("mlp", "mlp", dict(dim_vision=12, dim_llm=10), 2, 7, None),
    ("mlp_hidden", "mlp", dict(dim_vision=12, dim_llm=10, dim_hidden=9), 3, 5, None),
    ("downsample", "downsample", dict(dim_vision=12, dim_llm=10, grid_size=5, target_size=3), 2, 25, None),
    ("cabs", "c-abstractor", dict(dim_vision=12, dim_llm=10, grid_size=7, target_size=2, num_conv_layers=2),
     2, 49, None),
    ("cabs3", "c-abstractor", dict(dim_vision=6, dim_llm=5, grid_size=9, target_size=2, num_conv_layers=3),
     2, 81, None),
    ("dynamic_select", "dynamic", dict(dim_vision=12, dim_llm=10, max_tokens=16, min_tokens=2), 2, 9, 4),
    ("dynamic_max", "dynamic", dict(dim_vision=12, dim_llm=10, max_tokens=5, min_tokens=2), 2, 9, None),
    ("dynamic_pass", "dynamic", dict(dim_vision=12, dim_llm=10, max_tokens=16, min_tokens=2), 2, 9, None),
    ("ocr_short", "ocr", dict(dim_vision=12, dim_llm=10, max_visual_tokens=6), 2, 4, None),
    ("ocr_interp", "ocr", dict(dim_vision=12, dim_llm=10, max_visual_tokens=6), 2, 9, None),
]


def randomise_norms(module):
    """Non-trivial affine parameters and running statistics for every norm layer."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape) * 0.3)
                m.running_mean.copy_(torch.randn(m.running_mean.shape) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape) + 0.5)
                m.num_batches_tracked.fill_(3)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape))


def record_case(fam, name, module, run, x, args, training):
    """Runs run(x) on module (its norms already randomised) and records the
    case: its state before, input, output, projection, every gradient of
    sum(out * proj), the buffers after (training) and args as <name>.args.
    Shared with make_golden_post_llava.py."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.train(training)
    x.requires_grad_(True)
    out = run(x)
    proj = torch.randn(out.shape)
    (out * proj).sum().backward()

    for key, t in state.items():
        fam.tensors.append((f"{name}.state.{key}", t))
    fam.tensors.append((f"{name}.in.visual_features", x.detach()))
    fam.tensors.append((f"{name}.out", out.detach()))
    fam.tensors.append((f"{name}.proj", proj))
    fam.tensors.append((f"{name}.grad.visual_features", x.grad))
    for key, p in module.named_parameters():
        fam.tensors.append((f"{name}.grad.{key}", p.grad if p.grad is not None else torch.zeros_like(p)))
    if training:
        for key, b in module.named_buffers():
            fam.tensors.append((f"{name}.after.{key}", b.detach().clone()))
    fam.metadata[f"{name}.args"] = json.dumps(args, separators=(",", ":"))


def add_case(fam, seed, name, kind, config, batch, tokens, target_tokens, training):
    assert name not in fam.cases and "." not in name, name
    fam.cases.add(name)
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    cls_name, arg_names = CLASSES[kind]
    module = seed[cls_name](*[config.get(a) for a in arg_names if a in config or a != "dim_hidden"])
    randomise_norms(module)
    x = torch.randn(batch, tokens, config["dim_vision"])
    run = (lambda v: module(v, target_tokens)) if kind == "dynamic" else module
    args = dict(type=kind, training=training, target_tokens=target_tokens, **config)
    record_case(fam, name, module, run, x, args, training)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--seed-dir", default=os.path.join(ROOT, "..", "shared", "seed"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed = load_seed(args.seed_dir)
    fam = Family("connectors")
    for name, kind, config, batch, tokens, target in CASES:
        for training in (True, False):
            add_case(fam, seed, f"{name}_{'train' if training else 'eval'}", kind, config, batch, tokens,
                     target, training)
    print(fam.write(args.out))


if __name__ == "__main__":
    main()
