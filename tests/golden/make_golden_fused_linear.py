#!/usr/bin/env python3
"""Writes tests/golden/fused_linear.safetensors: PyTorch's F.gelu(F.linear(x, w, b)) for
vlmc's linear_gelu, checked by tests/kernels/test_fused_linear.cpp (tag [fused_linear]).

Usage (from tests/golden, with Debian's /usr/bin/python3 and python3-torch):
    /usr/bin/python3 make_golden_fused_linear.py [--out DIR]

The file format, seeding and layout of each case are make_golden.py's (see README.md):
<case>.in.x, .in.w, [.in.b], .out, .proj, .grad.<name>, and <case>.args with
{"op": "linear_gelu", "approximate": "none" | "tanh"}.
"""


import torch
import torch.nn.functional as F

from make_golden import Family, randn, write_families


def fused_linear():
    fam = Family("fused_linear")
    # (x shape, out features, bias?). The odd shapes make every size a non-multiple of
    # any tile; K = 64 gives pre-activations of standard deviation 8, so GELU is taken
    # far out on both tails (where erf saturates and tanh's exp is clamped).
    shapes = {
        "small": ((4, 16), 8, True),
        "odd": ((7, 13), 9, True),
        "nobias": ((5, 6), 3, False),
        "batched": ((2, 3, 10), 6, True),
        "wide": ((3, 64), 33, True),
        "one_row": ((1, 5), 4, True),
    }
    for approx in ("none", "tanh"):
        for tag, (xs, n, bias) in shapes.items():
            k = xs[-1]

            def make(xs=xs, n=n, k=k, bias=bias):
                inputs = {"x": randn(*xs), "w": randn(n, k)}
                if bias:
                    inputs["b"] = randn(n)
                return inputs

            def fn(x, w, b=None, approx=approx):
                return F.gelu(F.linear(x, w, b), approximate=approx)

            fam.case(f"{tag}_{approx}", make, fn, op="linear_gelu", approximate=approx)
    return fam


def main():
    write_families(__doc__, [fused_linear])


if __name__ == "__main__":
    main()
