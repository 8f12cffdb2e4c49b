#!/usr/bin/env python3
"""Runs one command on several thread counts under the region profiler
(bench/region_profile.cpp) and prints, region by region, the time at each
count and how far it scaled: which kernels hold back a second thread.

    python3 bench/region_profile.py [--threads 1,2] [--lib build-cpu-only/bench/libvlmc_region_profile.so] \\
        [--top 30] -- build-cpu-only/vlmc --threads {threads} train --config configs/fashion-mosaic.toml ...

"{threads}" in the command is replaced by each thread count. The command runs
as it is otherwise (its output is discarded; a failing run stops the script
with its exit status and the end of its output). Names come from addr2line
(binutils) on the module that holds each region's function.

Rows: each OpenMP region's outlined function (a kernel's loop, oneDNN's
regions, vlmc's row panels of small products), the total seconds and calls at
each thread count and the first count's time over each other's. Three totals
come first: all regions; the oneDNN products the main thread ran outside any
region (on one thread all of them; on more, those too large for row panels,
which oneDNN threads itself); and the short gaps (< 2 ms) between two of those:
the serial host work between kernels, which no second thread shares. Profile
a stage alone (cut the others to one step) to see its own kernels, and give
each run its own output folder ("--run.name x{threads}").

--steps N1,N2 gives figures per step: "{steps}" in the command is replaced by
N1, then N2, at each thread count, and every row is the difference of the two
runs over N2 - N1, in ms (calls per step beside them), so start-up, data
loading and evaluation cancel. Each of the runs must start alike: give each
its own output and cache folders ("--run.name x{threads}-{steps}
--run.cache_dir /tmp/c{threads}-{steps}": a stage-0 cache left by an earlier
run would skip the steps being measured). docs/perf.md, "eleventh session",
shows such a table.
"""
import argparse
import os
import subprocess
import sys
import tempfile


def run(command, threads, lib, steps=None):
    fd, path = tempfile.mkstemp(prefix="region_profile_", suffix=".txt")
    os.close(fd)
    env = dict(os.environ, LD_PRELOAD=lib, VLMC_REGION_PROFILE=path)
    argv = [a.replace("{threads}", str(threads)).replace("{steps}", str(steps)) for a in command]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:])
        sys.exit(f"region_profile: {' '.join(argv)} exited with {done.returncode}")
    totals, regions = {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("regions", "products"):
                totals[parts[0]] = (int(parts[1]), float(parts[2]))
            elif parts[0] == "short_gaps":
                totals["short_gaps"] = (0, float(parts[1]))
            else:
                regions[(parts[2], parts[3])] = (float(parts[0]), int(parts[1]))
    os.unlink(path)
    if "regions" not in totals:
        sys.exit(f"region_profile: {lib} wrote no totals (was it preloaded? is the program built with GCC's OpenMP?)")
    return totals, regions


def per_step(longer, shorter, steps):
    """(totals, regions) of the longer run minus the shorter one, over `steps`, in ms and calls per step."""
    totals = {}
    for key, (calls, secs) in longer[0].items():
        calls0, secs0 = shorter[0].get(key, (0, 0.0))
        totals[key] = ((calls - calls0) / steps, 1e3 * (secs - secs0) / steps)
    regions = {}
    for key in set(longer[1]) | set(shorter[1]):
        secs, calls = longer[1].get(key, (0.0, 0))
        secs0, calls0 = shorter[1].get(key, (0.0, 0))
        regions[key] = (1e3 * (secs - secs0) / steps, (calls - calls0) / steps)
    return totals, regions


def names(keys):
    """(module, offset) -> function name, by addr2line per module."""
    out = {}
    by_module = {}
    for module, offset in keys:
        by_module.setdefault(module, []).append(offset)
    for module, offsets in by_module.items():
        found = None
        if module != "?" and os.path.exists(module):
            done = subprocess.run(["addr2line", "-f", "-C", "-e", module] + offsets, capture_output=True, text=True)
            if done.returncode == 0:
                found = done.stdout.split("\n")[0::2]
        for i, offset in enumerate(offsets):
            name = found[i] if found and i < len(found) and found[i] != "??" else f"{os.path.basename(module)}+{offset}"
            out[(module, offset)] = name
    return out


def short(name, width=110):
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--lib", default="build-cpu-only/bench/libvlmc_region_profile.so")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--steps", help="N1,N2: per-step figures from two runs (see above)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run (put it after --)")
    if not os.path.exists(args.lib):
        parser.error(f"{args.lib} not found: build the target vlmc_region_profile")
    counts = [int(t) for t in args.threads.split(",")]
    lib = os.path.abspath(args.lib)
    if args.steps:
        try:
            short_steps, long_steps = (int(n) for n in args.steps.split(","))
        except ValueError:
            parser.error(f"--steps {args.steps}: expected two step counts, N1,N2")
        if not 0 <= short_steps < long_steps:
            parser.error(f"--steps {args.steps}: expected 0 <= N1 < N2")
        if not any("{steps}" in a for a in command):
            parser.error("--steps needs \"{steps}\" in the command, where the step count goes")
        runs = [per_step(run(command, t, lib, long_steps), run(command, t, lib, short_steps), long_steps - short_steps)
                for t in counts]
        unit, fmt = "ms/step", "{:.3f} ({:.1f})"
    else:
        runs = [run(command, t, lib) for t in counts]
        unit, fmt = "s", "{:.3f} ({})"

    header = " | ".join(f"{t} thr {unit}" for t in counts)
    print(f"| | {header} | " + " | ".join(f"{counts[0]} over {t}" for t in counts[1:]) + " |")
    print("|---" * (2 * len(counts)) + "|")
    for key, label in (("regions", "all regions"), ("products", "oneDNN products outside regions"),
                       ("short_gaps", "short gaps between them (serial)")):
        secs = [r[0][key][1] for r in runs]
        ratios = [f"{secs[0] / s:.2f}x" if s > 0 else "-" for s in secs[1:]]
        print(f"| {label} | " + " | ".join(f"{s:.3f}" for s in secs) + " | " + " | ".join(ratios) + " |")
    last = runs[-1][1]
    keys = sorted(last, key=lambda k: -last[k][0])[: args.top]
    named = names(keys)
    for key in keys:
        secs = [r[1].get(key, (0.0, 0))[0] for r in runs]
        calls = [r[1].get(key, (0.0, 0))[1] for r in runs]
        ratios = [f"{secs[0] / s:.2f}x" if s > 0 and secs[0] > 0 else "-" for s in secs[1:]]
        cells = " | ".join(fmt.format(s, c) for s, c in zip(secs, calls))
        print(f"| {short(named[key])} | {cells} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
