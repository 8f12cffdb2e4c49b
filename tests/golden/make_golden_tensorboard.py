#!/usr/bin/env python3
"""Writes tests/golden/tensorboard/events.out.tfevents.golden: a small TensorBoard events
file written by PyTorch's own torch.utils.tensorboard.SummaryWriter, checked by
tests/train/test_tensorboard.cpp (tag [tensorboard]), which must read exactly the scalars
of SCALARS below from it.

Usage (the venv with Debian's torch 1.13 and tensorboard from PyPI, see README.md):
    /work/V/bin/python tests/golden/make_golden_tensorboard.py [--out DIR]

DIR (default tests/golden) gets tensorboard/events.out.tfevents.golden. The file holds the
file_version event, the scalars in both forms SummaryWriter knows (simple_value, and with
new_style=True a rank-0 DT_FLOAT tensor, as newer writers store scalars), and one text and
one histogram summary, which a scalar reader must skip. Wall times are fixed; only the
file_version event's wall time changes from run to run.
"""

import argparse
import glob
import os
import tempfile

import torch
from torch.utils.tensorboard import SummaryWriter

WALL = 1700000000.25
# (tag, step, value, new_style); the test compares float32(value) exactly.
SCALARS = [
    ("train/loss", 0, 2.5, False),
    ("train/lr", 0, 1e-4, False),
    ("train/loss", 10, 1.0 / 3.0, False),
    ("train/lr", 10, 2e-5, False),
    ("eval/accuracy", 10, 0.8125, True),
    ("train/loss", 20, -0.1, True),
    ("train/loss", 2**40, 123456.789, False),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    out_dir = os.path.join(args.out, "tensorboard")
    os.makedirs(out_dir, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(log_dir=tmp)
        for i, (tag, step, value, new_style) in enumerate(SCALARS):
            writer.add_scalar(tag, value, global_step=step, walltime=WALL + i, new_style=new_style)
            if i == 2:  # non-scalar summaries between the scalars
                writer.add_text("notes", "not a scalar", global_step=5, walltime=WALL + 0.5)
                # add_histogram_raw: torch 1.13's add_histogram fails on Debian's numpy 1.24
                writer.add_histogram_raw("weights", min=0.0, max=2.0, num=4, sum=4.0, sum_squares=6.0,
                                         bucket_limits=[0.5, 1.5, 2.5], bucket_counts=[1, 2, 1],
                                         global_step=5, walltime=WALL + 0.75)
        writer.close()
        (written,) = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
        target = os.path.join(out_dir, "events.out.tfevents.golden")
        os.replace(written, target)
    print(f"wrote {target} ({os.path.getsize(target)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
