#!/usr/bin/env python3
"""Converts a model folder's PyTorch pickle weights (pytorch_model.bin, or the shards named by
pytorch_model.bin.index.json) to safetensors, which is what vlmc reads. The original LLaVA
checkpoints (liuhaotian/llava-v1.5-7b, ...) ship as pickles.

    python3 scripts/bin_to_safetensors.py SRC_DIR DST_DIR

Writes DST_DIR/model.safetensors (one pickle) or one model-0000i-of-0000n.safetensors per pickle
shard plus model.safetensors.index.json, and copies every other file of SRC_DIR (config.json,
tokenizer files, ...). Tensors keep their dtype. Needs torch and safetensors (pip install
safetensors); Debian's python3-torch will do.

torch.load unpickles, which can run code: convert only files you trust (weights_only=True is used
where the installed torch has it).
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file


def load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")


def save(state, path):
    # safetensors refuses tensors that share memory (tied weights): each gets its own copy.
    save_file({k: v.contiguous().clone() for k, v in state.items()}, path, metadata={"format": "pt"})


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    if os.path.exists(dst):
        sys.exit(f"{dst} exists; choose a new folder")
    index = os.path.join(src, "pytorch_model.bin.index.json")
    tmp = dst + ".tmp"
    os.makedirs(tmp)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
        renamed = {s: f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, s in enumerate(shards)}
        for shard in shards:
            save(load(os.path.join(src, shard)), os.path.join(tmp, renamed[shard]))
            print("converted", shard, "->", renamed[shard])
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}, f, indent=2)
        skip = set(shards) | {"pytorch_model.bin.index.json"}
    else:
        single = os.path.join(src, "pytorch_model.bin")
        save(load(single), os.path.join(tmp, "model.safetensors"))
        print("converted pytorch_model.bin -> model.safetensors")
        skip = {"pytorch_model.bin"}
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name not in skip and os.path.isfile(path):
            shutil.copy(path, os.path.join(tmp, name))
    os.rename(tmp, dst)
    print("wrote", dst)


if __name__ == "__main__":
    main()
