#!/usr/bin/env python3
"""Merges the JSON files the benchmarks write (--json) into one markdown table.

    scripts/perf_table.py [--gpu NAME] [--commit SHA] bench_*.json
"""
import argparse
import datetime
import json


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", default="")
    parser.add_argument("--commit", default="")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    print(f"Measured {datetime.date.today().isoformat()}"
          + (f" on {args.gpu}" if args.gpu else "") + (f", commit {args.commit}" if args.commit else ""))
    print()
    print("| kernel | version | device | shape | valid | median ms | GFLOP/s | GB/s | of ceiling |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    ceilings = {}
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for r in doc["rows"]:
            if not r["valid"]:
                print(f"| {r['kernel']} | {r['version']} | {r['device']} | {r['shape']} | NO "
                      f"(rel. error {r['max_rel_error']:.2e}) | | | | |")
                continue
            measure = r["gflops"] if r["gflops"] > 0 else r["gbps"]
            frac = f"{100 * measure / r['ceiling']:.0f} %" if r["ceiling"] > 0 else ""
            if r["ceiling"] > 0:
                ceilings[(r["device"], r["ceiling_name"])] = r["ceiling"]
            print(f"| {r['kernel']} | {r['version']} | {r['device']} | {r['shape']} | yes | "
                  f"{r['median_ms']:.3f} | {r['gflops']:.1f} | {r['gbps']:.1f} | {frac} |")
    print()
    for (device, name), value in sorted(ceilings.items()):
        print(f"- ceiling on {device}: {name} = {value:.1f}")


if __name__ == "__main__":
    main()
