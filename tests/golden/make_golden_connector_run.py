#!/usr/bin/env python3
"""Writes tests/golden/connector_run/<case>/: PyTorch-made cases for the
end-to-end test of `vlmc connector run` (tests/cli/test_connector_cli.cpp,
tag [cli]).

Usage (from the repository root, with Debian's torch; see README.md):
    /usr/bin/python3 tests/golden/make_golden_connector_run.py [--out DIR]

The connectors are the seed's own classes, loaded from the chapter text at
run time by bench/seed_connectors.py (never copied). Each case is one module
at small odd sizes, and four files:

    weights.safetensors      the module's state_dict() (BatchNorm buffers
                             included), after randomising the BatchNorm
                             affine parameters and running statistics and
                             OCR's positions, so every tensor matters
    input.safetensors        visual_features [B, N, Dv]
    grad_output.safetensors  grad_output, shaped as the output (absent for
                             forward-only cases)
    expected.safetensors     what `connector run` must write: visual_tokens;
                             with a gradient, grad.visual_features and
                             grad.<param> for every parameter (zeros where
                             PyTorch leaves .grad None); state.<buffer> for
                             every buffer after the forward.

expected.safetensors's metadata holds "args": a JSON list of the flags the
test passes besides --weights/--input/--grad-output/--out (--type, the dims,
--eval), and "grad": "1" or "0".
"""

import argparse
import json
import os
import sys
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from make_golden import FORMAT, VERSION, write_safetensors  # noqa: E402
from seed_connectors import default_seed_dir, load_seed_classes  # noqa: E402

DV, DL = 12, 10  # small odd widths (Dv != Dllm so a transposed weight cannot pass)


def build(seed, kind, kw):
    if kind == "linear":
        return seed["LinearProjection"](DV, DL)
    if kind == "mlp":
        return seed["MLPConnector"](DV, DL, kw.get("dim_hidden"))
    if kind == "downsample":
        return seed["DownsamplingConnector"](DV, DL, grid_size=kw["grid_size"], target_size=kw["target_size"])
    if kind == "c-abstractor":
        return seed["CAbstractor"](DV, DL, grid_size=kw["grid_size"], target_size=kw["target_size"],
                                   num_conv_layers=kw["num_conv_layers"])
    if kind == "dynamic":
        return seed["DynamicResolutionConnector"](DV, DL, max_tokens=kw["max_tokens"], min_tokens=kw["min_tokens"])
    if kind == "ocr":
        return seed["OCRProjectionConnector"](DV, DL, max_visual_tokens=kw["max_visual_tokens"])
    raise ValueError(kind)


def randomise(module):
    """Non-default values for everything the default init leaves trivial."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features) + 0.5)
                m.bias.copy_(torch.randn(m.num_features) * 0.5)
                m.running_mean.copy_(torch.randn(m.num_features) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(3)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.normalized_shape) + 0.5)
                m.bias.copy_(torch.randn(m.normalized_shape) * 0.5)
        if hasattr(module, "pos_embed"):
            module.pos_embed.copy_(torch.randn_like(module.pos_embed))


def check_topk_margin(module, x, target_tokens):
    """The kept set must not hinge on float rounding: a clear score gap at k."""
    n = x.shape[1]
    k = target_tokens or min(n, module.max_tokens)
    if n <= k:
        return
    with torch.no_grad():
        scores = module.token_selector(x).squeeze(-1).sort(dim=1, descending=True).values
    gap = (scores[:, k - 1] - scores[:, k]).min().item()
    assert gap > 1e-4, f"top-k boundary gap {gap} is too small; change the case"


def flag_list(kind, kw, evaluate):
    args = ["--type", kind, "--dim-vision", str(DV), "--dim-llm", str(DL)]
    for key, value in kw.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    if evaluate:
        args.append("--eval")
    return args


def make_case(seed, out_dir, name, kind, *, batch, tokens, evaluate=False, grad=True, **kw):
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    module_kw = {k: v for k, v in kw.items() if k != "target_tokens"}
    module = build(seed, kind, module_kw)
    randomise(module)
    module.train(not evaluate)
    weights = [(k, v.detach().clone()) for k, v in module.state_dict().items()]

    x = torch.randn(batch, tokens, DV)
    x_leaf = x.clone().requires_grad_(grad)
    target_tokens = kw.get("target_tokens")
    if kind == "dynamic":
        check_topk_margin(module, x, target_tokens)
        y = module(x_leaf, target_tokens)
    else:
        y = module(x_leaf)

    expected = [("visual_tokens", y.detach())]
    grad_output = None
    if grad:
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
        expected.append(("grad.visual_features", x_leaf.grad))
        for pname, p in module.named_parameters():
            expected.append(("grad." + pname, p.grad if p.grad is not None else torch.zeros_like(p)))
    for bname, b in module.named_buffers():
        expected.append(("state." + bname, b.detach().clone()))

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "torch": torch.__version__, "family": "connector_run"}
    write_safetensors(os.path.join(case_dir, "weights.safetensors"), weights, meta)
    write_safetensors(os.path.join(case_dir, "input.safetensors"), [("visual_features", x)], meta)
    grad_path = os.path.join(case_dir, "grad_output.safetensors")
    if grad:
        write_safetensors(grad_path, [("grad_output", grad_output)], meta)
    elif os.path.exists(grad_path):
        os.remove(grad_path)
    write_safetensors(os.path.join(case_dir, "expected.safetensors"), expected,
                      dict(meta, args=json.dumps(flag_list(kind, kw, evaluate)), grad="1" if grad else "0"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "connector_run"))
    parser.add_argument("--seed-dir", default=default_seed_dir())
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed = load_seed_classes(args.seed_dir)

    grid = dict(grid_size=5, target_size=2)  # 25 tokens; the c-abstractor's strides are 2 then 1
    cases = [
        ("linear_train", "linear", dict(batch=2, tokens=7)),
        ("mlp_train", "mlp", dict(batch=2, tokens=7, dim_hidden=7)),
        ("mlp_eval_forward", "mlp", dict(batch=3, tokens=5, evaluate=True, grad=False)),
        ("downsample_train", "downsample", dict(batch=2, tokens=25, **grid)),
        ("cabstractor_train", "c-abstractor", dict(batch=2, tokens=25, num_conv_layers=2, **grid)),
        ("cabstractor_eval", "c-abstractor", dict(batch=2, tokens=25, num_conv_layers=2, evaluate=True, **grid)),
        ("cabstractor_train_forward", "c-abstractor",
         dict(batch=3, tokens=25, num_conv_layers=1, grad=False, **grid)),
        ("dynamic_target", "dynamic", dict(batch=2, tokens=25, max_tokens=576, min_tokens=4, target_tokens=9)),
        ("dynamic_max_tokens", "dynamic", dict(batch=2, tokens=25, max_tokens=16, min_tokens=4)),
        ("dynamic_passthrough", "dynamic", dict(batch=2, tokens=7, max_tokens=16, min_tokens=4)),
        ("ocr_interpolate", "ocr", dict(batch=2, tokens=25, max_visual_tokens=16)),
        ("ocr_slice", "ocr", dict(batch=2, tokens=7, max_visual_tokens=16)),
    ]
    for name, kind, kw in cases:
        make_case(seed, args.out, name, kind, **kw)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
