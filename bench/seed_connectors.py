#!/usr/bin/env python3
"""Times the seed's own PyTorch connector classes, for comparison with `vlmc demo`.

The classes are not copied here: the script reads the Python blocks out of the
seed chapter (../shared/seed/*.txt) and executes the ones that define the
connectors, so what runs is exactly the specification's code.

    /usr/bin/python3 bench/seed_connectors.py [--threads 2] [--batch 4] [--repeats 3] [--backward]

Prints, per connector, parameters, shapes and the median forward (or
forward+backward) time after one warm-up, like `vlmc demo`.
"""
import argparse
import glob
import os
import re
import statistics
import time

import torch


def load_seed_classes(seed_dir):
    text = "".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(seed_dir, "*.txt"))))
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        # Only blocks that define the connector classes; skip demos and training loops.
        if re.search(r"^class \w+\(nn\.Module\)", block, flags=re.M) and "LLaVAModel" not in block:
            block = block.split('if __name__ == "__main__":')[0]
            exec(compile(block, "seed", "exec"), namespace)
    return namespace


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-dir", default=os.path.join(here, "..", "..", "shared", "seed"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true", help="time forward + backward of sum(output)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    seed = load_seed_classes(args.seed_dir)
    x = torch.randn(args.batch, 576, 1024)
    rows = [("Linear Projection", seed["LinearProjection"](1024, 4096)),
            ("MLP Connector", seed["MLPConnector"](1024, 4096)),
            ("Downsampling Connector", seed["DownsamplingConnector"](1024, 4096, grid_size=24, target_size=12))]
    mode = "forward+backward" if args.backward else "forward"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {mode} time = median of {args.repeats} after one warm-up")
    for name, module in rows:
        def step():
            if args.backward:
                module.zero_grad(set_to_none=True)
                out = module(x)
                out.sum().backward()
                return out
            with torch.no_grad():
                return module(x)
        step()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = step()
            times.append((time.perf_counter() - start) * 1000)
        params = sum(p.numel() for p in module.parameters())
        print(f"\n{name}:\n  parameters:    {params:,}\n  input shape:   {list(x.shape)}\n"
              f"  output shape:  {list(out.shape)}\n  {mode} time:  {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    main()
