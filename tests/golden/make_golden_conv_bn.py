#!/usr/bin/env python3
"""Writes tests/golden/conv_bn.safetensors: PyTorch's nn.Conv2d, and nn.Conv2d +
nn.BatchNorm2d (+ nn.GELU), for vlmc's conv2d and conv2d_batchnorm
(tests/kernels/test_conv_bn.cpp compares against it).

Usage (from tests/golden, with Debian's torch; see README.md):
    /usr/bin/python3 make_golden_conv_bn.py [--out DIR]

vlmc holds grids channels last, x [B, H, W, Cin]; the reference runs the
modules on x.permute(0, 3, 1, 2) and permutes the output back to
[B, Ho, Wo, Cout]. The weight is PyTorch's [Cout, Cin, kh, kw] either way.

Per case, beside the file format of make_golden.py:
    <case>.in.<name>     x, weight, conv_bias (when the conv has one) and, for
                         conv2d_batchnorm, bn_weight, bn_bias, running_mean,
                         running_var, num_batches_tracked (i64, 0-dim): the
                         values before the forward
    <case>.out.y         the output; <case>.proj.y its random projection
    <case>.grad.<name>   d sum(y * proj) / d input for x, weight, conv_bias,
                         bn_weight, bn_bias (the batch-norm buffers get none)
    <case>.out.running_mean / running_var / num_batches_tracked
                         the buffers after the forward (training updates them)
and <case>.args: {"op", "stride", "padding", "training", "gelu", "momentum", "eps"}.
"""

import json
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_golden import Family, randn, write_families


def conv_case(fam, name, *, batch, h, w, cin, cout, k, stride, padding, conv_bias=True,
              batchnorm=True, training=True, gelu=False, momentum=0.1, eps=1e-5, affine=True):
    """Adds one case: conv (+ batch norm (+ GELU)) on a channels-last input."""
    assert name not in fam.cases and "." not in name, name
    fam.cases.add(name)
    torch.manual_seed(zlib.crc32(name.encode("utf-8")))
    kh, kw = k if isinstance(k, tuple) else (k, k)

    conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias=conv_bias)
    with torch.no_grad():
        conv.weight.copy_(randn(cout, cin, kh, kw) * 0.5)
        if conv_bias:
            conv.bias.copy_(randn(cout))
    x = randn(batch, h, w, cin).requires_grad_(True)
    inputs = {"x": x, "weight": conv.weight}
    if conv_bias:
        inputs["conv_bias"] = conv.bias

    bn = None
    if batchnorm:
        bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum, affine=affine)
        with torch.no_grad():
            if affine:
                bn.weight.copy_(1 + 0.5 * randn(cout))
                bn.bias.copy_(0.5 * randn(cout))
            bn.running_mean.copy_(0.5 * randn(cout))
            bn.running_var.copy_(torch.rand(cout) + 0.5)
            bn.num_batches_tracked.fill_(3)
        bn.train(training)
        if affine:
            inputs["bn_weight"] = bn.weight
            inputs["bn_bias"] = bn.bias
    # The values the op starts from (the forward updates the buffers in place).
    stored = [(f"{name}.in.{key}", t.detach().clone()) for key, t in inputs.items()]
    if bn is not None:
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            stored.append((f"{name}.in.{key}", getattr(bn, key).detach().clone()))

    out = conv(x.permute(0, 3, 1, 2))
    if bn is not None:
        out = bn(out)
    if gelu:
        out = F.gelu(out)
    y = out.permute(0, 2, 3, 1)
    proj = torch.randn(y.shape)
    (y * proj).sum().backward()

    stored.append((f"{name}.out.y", y.detach().contiguous()))
    stored.append((f"{name}.proj.y", proj))
    for key, t in inputs.items():
        stored.append((f"{name}.grad.{key}", t.grad.detach().clone()))
    if bn is not None:
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            stored.append((f"{name}.out.{key}", getattr(bn, key).detach().clone()))
    fam.tensors.extend(stored)
    args = {"op": "conv2d_batchnorm" if batchnorm else "conv2d", "stride": stride,
            "padding": padding, "training": training, "gelu": gelu, "momentum": momentum,
            "eps": eps}
    fam.metadata[f"{name}.args"] = json.dumps(args, separators=(",", ":"))


def conv_bn():
    fam = Family("conv_bn")
    # Plain convolutions: 3x3 same padding, stride 2 on an odd grid without
    # bias, the pointwise (1x1) path, a rectangular kernel, padding 0.
    conv_case(fam, "conv_k3_s1_p1", batch=2, h=5, w=6, cin=3, cout=4, k=3, stride=1, padding=1,
              batchnorm=False)
    conv_case(fam, "conv_k3_s2_p1_odd_nobias", batch=2, h=7, w=5, cin=3, cout=5, k=3, stride=2,
              padding=1, conv_bias=False, batchnorm=False)
    conv_case(fam, "conv_k1", batch=2, h=4, w=3, cin=5, cout=3, k=1, stride=1, padding=0,
              batchnorm=False)
    conv_case(fam, "conv_k3x2_s2_p0", batch=1, h=6, w=7, cin=2, cout=3, k=(3, 2), stride=2,
              padding=0, batchnorm=False)

    # Conv + BatchNorm2d (+ GELU), training: batch statistics, buffer updates.
    conv_case(fam, "cbn_train_k3_s2_p1_odd", batch=2, h=7, w=5, cin=3, cout=4, k=3, stride=2,
              padding=1)
    conv_case(fam, "cbn_train_gelu_k3_s1_p1_nobias", batch=2, h=6, w=4, cin=4, cout=3, k=3,
              stride=1, padding=1, conv_bias=False, gelu=True)
    conv_case(fam, "cbn_train_gelu_k1", batch=3, h=3, w=5, cin=6, cout=5, k=1, stride=1,
              padding=0, gelu=True)
    conv_case(fam, "cbn_train_k3_s2_p0", batch=3, h=7, w=5, cin=2, cout=3, k=3, stride=2,
              padding=0)
    conv_case(fam, "cbn_train_momentum_eps", batch=2, h=5, w=5, cin=3, cout=4, k=3, stride=1,
              padding=1, momentum=0.3, eps=1e-3, gelu=True)
    conv_case(fam, "cbn_train_noaffine", batch=2, h=4, w=5, cin=3, cout=2, k=3, stride=2,
              padding=1, affine=False)

    # Eval: the running statistics normalize; the buffers stay as they were.
    conv_case(fam, "cbn_eval_gelu_k3_s2_p1_odd", batch=2, h=7, w=5, cin=3, cout=4, k=3,
              stride=2, padding=1, training=False, gelu=True)
    conv_case(fam, "cbn_eval_k1_nobias", batch=2, h=3, w=4, cin=4, cout=3, k=1, stride=1,
              padding=0, conv_bias=False, training=False)
    conv_case(fam, "cbn_eval_k3x2_p0", batch=1, h=5, w=6, cin=2, cout=3, k=(3, 2), stride=1,
              padding=0, training=False)
    return fam


def main():
    write_families(__doc__, [conv_bn])


if __name__ == "__main__":
    main()
