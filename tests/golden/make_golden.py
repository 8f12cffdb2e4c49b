#!/usr/bin/env python3
"""Writes the PyTorch golden files that tests/core/test_golden.cpp checks vlmc against.

Usage (from the repository root; see tests/golden/README.md):
    /usr/bin/python3 tests/golden/make_golden.py [--out tests/golden]

One file per op family. For each case the file holds
    <case>.in.<name>       every input (float inputs are f32, indices i64, masks u8)
    <case>.out             the output; ops with several outputs use <case>.out.<key>
    <case>.proj            a random projection of the output's shape (<case>.proj.<key>)
    <case>.grad.<name>     d sum(out * proj) / d input, for every float input
and, in "__metadata__", <case>.args: a JSON object naming the vlmc op ("op") and its
non-tensor parameters. The file-level metadata is
    {"format": "vlmc-golden", "version": "1", "torch": <version>, "family": <family>}.

Everything runs on the CPU in float32 with torch.manual_seed set per case (from the
case name), so the files are reproducible. The safetensors writer is our own (a JSON
header padded with spaces to a multiple of 8, then raw little-endian bytes) so that
no package beyond torch is needed.
"""

import argparse
import json
import os
import struct
import zlib

import torch
import torch.nn.functional as F

FORMAT = "vlmc-golden"
VERSION = "1"


# ---- safetensors writer ----------------------------------------------------------

_DTYPES = {
    torch.float32: ("F32", "f"),
    torch.int64: ("I64", "q"),
    torch.uint8: ("U8", "B"),
}


def tensor_bytes(t):
    """Little-endian element bytes of t in row-major order."""
    dtype, code = _DTYPES[t.dtype]
    values = t.detach().contiguous().reshape(-1).tolist()
    return dtype, struct.pack("<%d%s" % (len(values), code), *values)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) in file order; metadata: str -> str."""
    header = {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name, t in tensors:
        dtype, data = tensor_bytes(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in chunks:
            f.write(data)
    os.replace(tmp, path)


# ---- cases -------------------------------------------------------------------------

class Family:
    """Collects the cases of one file."""

    def __init__(self, name):
        self.name = name
        self.tensors = []  # (name, tensor) in file order
        self.metadata = {}
        self.cases = set()

    def case(self, name, make_inputs, fn, **args):
        """Adds one case.

        make_inputs() builds the inputs (called after seeding); fn(**inputs) returns
        a tensor or a dict key -> tensor of outputs. args are the op's non-tensor
        parameters and must contain "op", the name test_golden.cpp dispatches on.
        """
        assert name not in self.cases and "." not in name, name
        assert "op" in args, name
        self.cases.add(name)
        torch.manual_seed(zlib.crc32(name.encode("utf-8")))
        inputs = make_inputs()
        for t in inputs.values():
            if t.dtype.is_floating_point:
                t.requires_grad_(True)

        outputs = fn(**inputs)
        if isinstance(outputs, torch.Tensor):
            outputs = {"": outputs}

        # Back-propagate sum(out * proj) over the float outputs.
        projs = {}
        loss = None
        for key, out in outputs.items():
            if out.dtype.is_floating_point and out.requires_grad:
                projs[key] = torch.randn(out.shape)
                term = (out * projs[key]).sum()
                loss = term if loss is None else loss + term
        if loss is not None:
            loss.backward()

        for iname, t in inputs.items():
            self.tensors.append((f"{name}.in.{iname}", t.detach()))
        for key, out in outputs.items():
            suffix = f".{key}" if key else ""
            self.tensors.append((f"{name}.out{suffix}", out.detach()))
            if key in projs:
                self.tensors.append((f"{name}.proj{suffix}", projs[key]))
        if loss is not None:
            for iname, t in inputs.items():
                if t.dtype.is_floating_point:
                    grad = t.grad if t.grad is not None else torch.zeros_like(t)
                    self.tensors.append((f"{name}.grad.{iname}", grad))
        self.metadata[f"{name}.args"] = json.dumps(args, separators=(",", ":"))

    def write(self, out_dir):
        metadata = {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                    "family": self.name}
        metadata.update(self.metadata)
        path = os.path.join(out_dir, f"{self.name}.safetensors")
        write_safetensors(path, self.tensors, metadata)
        return path


def randn(*shape):
    return torch.randn(tuple(shape))


def positive(*shape, low=0.5, high=2.0):
    """Uniform in [low, high): keeps log, sqrt, pow and division away from 0."""
    return torch.rand(tuple(shape)) * (high - low) + low


def away_from_zero(*shape):
    """Magnitudes in [0.5, 2) with random signs (divisors)."""
    sign = torch.where(torch.rand(tuple(shape)) < 0.5, -1.0, 1.0)
    return positive(*shape) * sign


# Shape pairs for the broadcasting binary ops.
BINARY_SHAPES = {
    "same": ((3, 5), (3, 5)),
    "bcast": ((3, 1), (1, 4)),
    "trail": ((2, 3, 4), (4,)),
}


def elementwise():
    fam = Family("elementwise")
    binary = {
        "add": (torch.add, randn, randn),
        "sub": (torch.sub, randn, randn),
        "mul": (torch.mul, randn, randn),
        "div": (torch.div, randn, away_from_zero),
        "pow": (torch.pow, positive, randn),
        "maximum": (torch.maximum, randn, randn),
        "minimum": (torch.minimum, randn, randn),
    }
    for op, (fn, make_a, make_b) in binary.items():
        for tag, (sa, sb) in BINARY_SHAPES.items():
            fam.case(f"{op}_{tag}", lambda: {"a": make_a(*sa), "b": make_b(*sb)},
                     lambda a, b, fn=fn: fn(a, b), op=op)
    # A 0-dim operand broadcasts against anything.
    fam.case("add_zerodim", lambda: {"a": randn(2, 3), "b": randn()},
             lambda a, b: a + b, op="add")
    fam.case("mul_zerodim", lambda: {"a": randn(), "b": randn(3, 2)},
             lambda a, b: a * b, op="mul")

    # Scalar variants: tensor "x", scalar "s".
    scalar = [
        ("add_scalar", 2.5, randn, lambda x, s: x + s),
        ("sub_scalar", 1.25, randn, lambda x, s: x - s),
        ("rsub_scalar", 3.0, randn, lambda x, s: s - x),
        ("mul_scalar", -1.5, randn, lambda x, s: x * s),
        ("div_scalar", 4.0, randn, lambda x, s: x / s),
        ("rdiv_scalar", 2.0, away_from_zero, lambda x, s: s / x),
        ("pow_scalar", 2.5, positive, lambda x, s: x ** s),
    ]
    for op, s, make, fn in scalar:
        fam.case(op, lambda: {"x": make(3, 5)}, lambda x, fn=fn, s=s: fn(x, s), op=op, s=s)
    # Integer and negative exponents: the integer one has a signed base.
    fam.case("pow_scalar_int", lambda: {"x": randn(2, 3, 4)}, lambda x: x ** 3.0,
             op="pow_scalar", s=3.0)
    fam.case("pow_scalar_neg", lambda: {"x": positive(2, 3, 4)}, lambda x: x ** -0.5,
             op="pow_scalar", s=-0.5)

    # In place (never recorded): self += alpha * other (broadcast), self *= value.
    fam.case("add_inplace", lambda: {"self": randn(3, 4), "other": randn(1, 4)},
             lambda self, other: self.detach().clone().add_(other.detach(), alpha=0.5),
             op="add_", alpha=0.5)
    fam.case("mul_inplace", lambda: {"self": randn(2, 3, 4)},
             lambda self: self.detach().clone().mul_(-0.75), op="mul_", value=-0.75)
    return fam


def unary():
    fam = Family("unary")
    ops = [
        ("neg", randn, torch.neg),
        ("exp", randn, torch.exp),
        ("log", positive, torch.log),
        ("sqrt", positive, torch.sqrt),
        ("rsqrt", positive, torch.rsqrt),
        ("abs", randn, torch.abs),
        ("tanh", randn, torch.tanh),
        ("sigmoid", randn, torch.sigmoid),
        ("relu", randn, torch.relu),
        ("silu", randn, F.silu),
    ]
    for op, make, fn in ops:
        fam.case(op, lambda: {"x": make(2, 3, 5)}, lambda x, fn=fn: fn(x), op=op)
    fam.case("gelu", lambda: {"x": randn(2, 3, 5) * 2}, lambda x: F.gelu(x),
             op="gelu", approximate="none")
    fam.case("gelu_tanh", lambda: {"x": randn(2, 3, 5) * 2},
             lambda x: F.gelu(x, approximate="tanh"), op="gelu", approximate="tanh")
    return fam


def reduce():
    fam = Family("reduce")
    fam.case("sum_all", lambda: {"x": randn(3, 5)}, lambda x: x.sum(), op="sum")
    fam.case("sum_dim", lambda: {"x": randn(2, 3, 4)}, lambda x: x.sum(dim=[1]),
             op="sum", dims=[1], keepdim=False)
    fam.case("sum_dims_keepdim", lambda: {"x": randn(2, 3, 4)},
             lambda x: x.sum(dim=[0, 2], keepdim=True), op="sum", dims=[0, 2], keepdim=True)
    fam.case("sum_neg_dim", lambda: {"x": randn(3, 5)}, lambda x: x.sum(dim=[-1]),
             op="sum", dims=[-1], keepdim=False)
    fam.case("mean_all", lambda: {"x": randn(3, 5)}, lambda x: x.mean(), op="mean")
    fam.case("mean_dims", lambda: {"x": randn(2, 3, 4)}, lambda x: x.mean(dim=[0, 2]),
             op="mean", dims=[0, 2], keepdim=False)
    fam.case("mean_dim_keepdim", lambda: {"x": randn(2, 3, 4)},
             lambda x: x.mean(dim=[1], keepdim=True), op="mean", dims=[1], keepdim=True)

    def max_dim(x, dim, keepdim):
        r = torch.max(x, dim=dim, keepdim=keepdim)
        return {"values": r.values, "indices": r.indices}

    fam.case("max_dim", lambda: {"x": randn(3, 5)}, lambda x: max_dim(x, 1, False),
             op="max_dim", dim=1, keepdim=False)
    fam.case("max_dim_keepdim", lambda: {"x": randn(2, 3, 4)}, lambda x: max_dim(x, 0, True),
             op="max_dim", dim=0, keepdim=True)
    fam.case("max_all", lambda: {"x": randn(3, 5)}, lambda x: x.max(), op="max_all")
    fam.case("argmax", lambda: {"x": randn(3, 5)}, lambda x: torch.argmax(x, dim=1),
             op="argmax", dim=1, keepdim=False)
    fam.case("argmax_keepdim", lambda: {"x": randn(2, 3, 4)},
             lambda x: torch.argmax(x, dim=-1, keepdim=True), op="argmax", dim=-1, keepdim=True)
    fam.case("sum_to", lambda: {"x": randn(2, 3, 4)}, lambda x: x.sum_to_size(3, 1),
             op="sum_to", shape=[3, 1])
    fam.case("sum_to_rank", lambda: {"x": randn(2, 3, 4)}, lambda x: x.sum_to_size(4),
             op="sum_to", shape=[4])
    return fam


def linalg():
    fam = Family("linalg")
    mm = [
        ("matmul_2d", (3, 5), (5, 4)),
        ("matmul_batched", (2, 3, 5), (2, 5, 4)),
        ("matmul_bcast", (2, 1, 3, 4), (3, 4, 2)),
        ("matmul_bcast_2d", (2, 3, 5), (5, 4)),
        ("matmul_1d_2d", (5,), (5, 4)),
        ("matmul_2d_1d", (3, 5), (5,)),
        ("matmul_1d_1d", (5,), (5,)),
        ("matmul_1d_3d", (5,), (2, 5, 3)),
    ]
    for name, sa, sb in mm:
        fam.case(name, lambda: {"a": randn(*sa), "b": randn(*sb)},
                 lambda a, b: torch.matmul(a, b), op="matmul")
    fam.case("linear_bias", lambda: {"x": randn(2, 3, 5), "weight": randn(4, 5), "bias": randn(4)},
             lambda x, weight, bias: F.linear(x, weight, bias), op="linear")
    fam.case("linear_nobias", lambda: {"x": randn(3, 5), "weight": randn(4, 5)},
             lambda x, weight: F.linear(x, weight), op="linear")
    return fam


def rms_norm_ref(x, normalized_shape, weight, eps):
    """torch 1.13 has no F.rms_norm: x / sqrt(mean(x^2 over the normalized dims) + eps) * w."""
    dims = list(range(-len(normalized_shape), 0))
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    return y * weight if weight is not None else y


def nn():
    fam = Family("nn")
    for op, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        fam.case(f"{op}_last", lambda: {"x": randn(3, 5) * 2}, lambda x, fn=fn: fn(x, -1),
                 op=op, dim=-1)
        fam.case(f"{op}_first", lambda: {"x": randn(3, 5) * 2}, lambda x, fn=fn: fn(x, 0),
                 op=op, dim=0)
        fam.case(f"{op}_middle", lambda: {"x": randn(2, 3, 4) * 2}, lambda x, fn=fn: fn(x, 1),
                 op=op, dim=1)

    fam.case("layer_norm_1d", lambda: {"x": randn(2, 3, 5), "weight": randn(5), "bias": randn(5)},
             lambda x, weight, bias: F.layer_norm(x, (5,), weight, bias, 1e-5),
             op="layer_norm", normalized_shape=[5], eps=1e-5)
    fam.case("layer_norm_2d",
             lambda: {"x": randn(2, 3, 5) * 3 + 1, "weight": randn(3, 5), "bias": randn(3, 5)},
             lambda x, weight, bias: F.layer_norm(x, (3, 5), weight, bias, 1e-5),
             op="layer_norm", normalized_shape=[3, 5], eps=1e-5)
    fam.case("layer_norm_plain", lambda: {"x": randn(4, 7)},
             lambda x: F.layer_norm(x, (7,), None, None, 1e-3),
             op="layer_norm", normalized_shape=[7], eps=1e-3)

    fam.case("rms_norm_1d", lambda: {"x": randn(2, 3, 5), "weight": randn(5)},
             lambda x, weight: rms_norm_ref(x, (5,), weight, 1e-6),
             op="rms_norm", normalized_shape=[5], eps=1e-6)
    fam.case("rms_norm_2d", lambda: {"x": randn(2, 3, 5), "weight": randn(3, 5)},
             lambda x, weight: rms_norm_ref(x, (3, 5), weight, 1e-6),
             op="rms_norm", normalized_shape=[3, 5], eps=1e-6)
    fam.case("rms_norm_plain", lambda: {"x": randn(4, 7)},
             lambda x: rms_norm_ref(x, (7,), None, 1e-5),
             op="rms_norm", normalized_shape=[7], eps=1e-5)

    # Repeated indices: their gradient rows add up.
    fam.case("embedding",
             lambda: {"weight": randn(7, 4), "indices": torch.tensor([[1, 5, 1], [0, 6, 5]])},
             lambda weight, indices: F.embedding(indices, weight), op="embedding")
    fam.case("embedding_1d", lambda: {"weight": randn(5, 3), "indices": torch.tensor([4, 0, 4, 2])},
             lambda weight, indices: F.embedding(indices, weight), op="embedding")

    fam.case("cross_entropy",
             lambda: {"logits": randn(5, 4) * 2, "targets": torch.tensor([3, 0, 2, 2, 1])},
             lambda logits, targets: F.cross_entropy(logits, targets),
             op="cross_entropy", ignore_index=-100)
    fam.case("cross_entropy_ignore",
             lambda: {"logits": randn(6, 5) * 2,
                      "targets": torch.tensor([4, -100, 0, 1, -100, 4])},
             lambda logits, targets: F.cross_entropy(logits, targets, ignore_index=-100),
             op="cross_entropy", ignore_index=-100)
    return fam


def index():
    fam = Family("index")

    def listed(n, fn):
        return lambda **ts: fn([ts[f"t{i}"] for i in range(n)])

    fam.case("cat_dim0", lambda: {"t0": randn(2, 3), "t1": randn(1, 3), "t2": randn(3, 3)},
             listed(3, lambda ts: torch.cat(ts, 0)), op="cat", n=3, dim=0)
    fam.case("cat_dim1", lambda: {"t0": randn(2, 3, 4), "t1": randn(2, 1, 4)},
             listed(2, lambda ts: torch.cat(ts, 1)), op="cat", n=2, dim=1)
    fam.case("cat_last", lambda: {"t0": randn(3, 2), "t1": randn(3, 5)},
             listed(2, lambda ts: torch.cat(ts, -1)), op="cat", n=2, dim=-1)
    fam.case("stack_dim0", lambda: {"t0": randn(3, 4), "t1": randn(3, 4), "t2": randn(3, 4)},
             listed(3, lambda ts: torch.stack(ts, 0)), op="stack", n=3, dim=0)
    fam.case("stack_dim1", lambda: {"t0": randn(2, 3), "t1": randn(2, 3)},
             listed(2, lambda ts: torch.stack(ts, 1)), op="stack", n=2, dim=1)
    fam.case("stack_last", lambda: {"t0": randn(2, 3), "t1": randn(2, 3)},
             listed(2, lambda ts: torch.stack(ts, -1)), op="stack", n=2, dim=-1)

    def pieces(ts):
        return {str(i): t for i, t in enumerate(ts)}

    fam.case("split_size", lambda: {"x": randn(5, 3)},
             lambda x: pieces(torch.split(x, 2, dim=0)), op="split", split_size=2, dim=0)
    fam.case("split_sizes", lambda: {"x": randn(2, 7)},
             lambda x: pieces(torch.split(x, [3, 1, 3], dim=1)), op="split", sizes=[3, 1, 3], dim=1)

    fam.case("index_select_dim0", lambda: {"x": randn(4, 5), "index": torch.tensor([2, 0, 2])},
             lambda x, index: torch.index_select(x, 0, index), op="index_select", dim=0)
    fam.case("index_select_dim2", lambda: {"x": randn(2, 3, 5), "index": torch.tensor([4, 1])},
             lambda x, index: torch.index_select(x, 2, index), op="index_select", dim=2)
    fam.case("gather_dim1",
             lambda: {"x": randn(3, 4), "index": torch.tensor([[0, 3], [2, 2], [1, 0]])},
             lambda x, index: torch.gather(x, 1, index), op="gather", dim=1)
    fam.case("gather_dim0",
             lambda: {"x": randn(3, 4), "index": torch.tensor([[2, 0, 1, 2], [0, 0, 2, 1]])},
             lambda x, index: torch.gather(x, 0, index), op="gather", dim=0)

    fam.case("where_same",
             lambda: {"cond": (torch.rand(3, 4) < 0.5).to(torch.uint8), "a": randn(3, 4),
                      "b": randn(3, 4)},
             lambda cond, a, b: torch.where(cond.bool(), a, b), op="where")
    fam.case("where_bcast",
             lambda: {"cond": torch.tensor([[1, 0, 0, 1]], dtype=torch.uint8), "a": randn(3, 1),
                      "b": randn(2, 3, 4)},
             lambda cond, a, b: torch.where(cond.bool(), a, b), op="where")

    fam.case("masked_fill_same",
             lambda: {"x": randn(3, 4), "mask": (torch.rand(3, 4) < 0.5).to(torch.uint8)},
             lambda x, mask: x.masked_fill(mask.bool(), -2.5), op="masked_fill", value=-2.5)
    fam.case("masked_fill_bcast",
             lambda: {"x": randn(2, 3, 4), "mask": torch.tensor([[1], [0], [1]], dtype=torch.uint8)},
             lambda x, mask: x.masked_fill(mask.bool(), 1e4), op="masked_fill", value=1e4)
    return fam


def pool():
    fam = Family("pool")

    # vlmc pools channels-last grids [B, H, W, C]; the reference is the seed's
    # path: permute to [B, C, H, W], nn.AdaptiveAvgPool2d, permute back.
    def channels_last_pool(out_h, out_w):
        def fn(x):
            return F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), (out_h, out_w)).permute(0, 2, 3, 1)
        return fn

    for name, (b, h, w, c, oh, ow) in {
        "pool_24_to_12": (2, 24, 24, 3, 12, 12),
        "pool_5x7_to_3x2": (2, 5, 7, 4, 3, 2),
        "pool_upsample": (1, 3, 2, 5, 5, 4),
        "pool_global": (3, 6, 6, 2, 1, 1),
        "pool_27_to_8": (1, 27, 27, 2, 8, 8),
    }.items():
        fam.case(name, lambda b=b, h=h, w=w, c=c: {"x": randn(b, h, w, c)},
                 channels_last_pool(oh, ow), op="adaptive_avg_pool2d", out_h=oh, out_w=ow)
    return fam


FAMILIES = [elementwise, unary, reduce, linalg, nn, index, pool]


def write_families(description, families):
    """The command line every golden script shares: writes each family's file to --out.

    Torch runs on one thread so sums and products are bit-stable: rerunning with
    the same torch gives byte-identical files.
    """
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="directory for the .safetensors files (default: this script's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for make in families:
        fam = make()
        path = fam.write(args.out)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {len(fam.cases)} cases, {size} bytes")
    print(f"torch {torch.__version__}, {total} bytes in all")


def main():
    write_families(__doc__, FAMILIES)


if __name__ == "__main__":
    main()
