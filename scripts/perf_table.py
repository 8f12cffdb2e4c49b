#!/usr/bin/env python3
"""Merges what scripts/gpu-check.sh measured into one markdown table.

    scripts/perf_table.py [--gpu NAME] [--commit SHA] [--suite suite.json]
        [--connectors-vlmc F.jsonl --connectors-torch F.jsonl]
        [--llava-vlmc F.json --llava-torch F.json] [--train-results results.json]
        [--failed "part: why" ...] [bench_*.json ...]

One section per part: the CUDA suite, the connectors (vlmc against the seed's
PyTorch classes), the LLaVA stage-1 step (vlmc against PyTorch eager), the
training run's throughput and the kernel benchmarks (the bench_*.json files
written with --json). The ratio column is vlmc / PyTorch in throughput (above
1: vlmc is faster). Where the issue sets a target the row says pass or FAIL:
  connectors    every forward + backward faster than the seed's classes (ratio > 1)
  LLaVA step    at least PyTorch eager's tokens/s (ratio >= 1)
A part whose result is missing (it failed, timed out or did not run) is a FAIL
row. Exit status 1 when any row failed, else 0.
"""
import argparse
import datetime
import json
import os

CONNECTORS = ["linear", "mlp", "downsample", "c-abstractor", "dynamic", "ocr"]


def read_json(path):
    """The document at path, or None when it is missing or unreadable."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_jsonl(path):
    """Rows of a JSON-lines file by connector type; lines that are not JSON are skipped."""
    rows = {}
    if not path or not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "type" in row:
                rows[row["type"]] = row
    return rows


class Table:
    """Prints the sections and remembers whether any row failed."""

    def __init__(self):
        self.failed = False

    def section(self, title, header, align):
        print(f"\n### {title}\n")
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join(align) + " |")

    def row(self, cells, ok=True):
        self.failed |= not ok
        print("| " + " | ".join(str(c) for c in cells) + " |")


def verdict(ok):
    return "pass" if ok else "FAIL"


def suite_section(t, path):
    """The CUDA suite as scripts/gpu_suite.py summarised it: every case must pass."""
    t.section("CUDA test suite (one process per case)", ["suite", "result", "target"], ["---", "---", "---"])
    doc = read_json(path)
    if doc is None or "passed" not in doc:
        why = (doc or {}).get("error", "no result")
        t.row(["vlmc_cuda_tests", why, "FAIL"], ok=False)
        return
    ok = doc["passed"] == doc["cases"] and doc["cases"] > 0
    t.row(["vlmc_cuda_tests", f"{doc['passed']} of {doc['cases']} cases passed", verdict(ok)], ok=ok)
    for name in doc.get("failed", []):
        r = doc["results"][name]
        reruns = "; ".join(f"{k.replace('_rerun', '')}: {v['status']}" for k, v in r.items()
                           if k.endswith("_rerun"))
        t.row([f"`{name}`", f"{r['status']} (exit {r['exit']})" + (f"; {reruns}" if reruns else ""), "FAIL"],
              ok=False)


def connector_section(t, vlmc_path, torch_path):
    vlmc, torch = read_jsonl(vlmc_path), read_jsonl(torch_path)
    any_row = next(iter(vlmc.values() or torch.values()), {})
    shape = (f"B={any_row.get('batch', '?')} N={any_row.get('tokens', '?')} "
             f"{any_row.get('dim_vision', '?')}->{any_row.get('dim_llm', '?')}, "
             f"{any_row.get('precision', '?')}, forward+backward")
    t.section(f"Connectors, vlmc vs the seed's PyTorch classes ({shape})",
              ["connector", "vlmc ms", "PyTorch ms", "vlmc GFLOP/s", "vlmc/PyTorch", "target: > 1"],
              ["---", "---:", "---:", "---:", "---:", "---"])
    for kind in CONNECTORS:
        v, p = vlmc.get(kind), torch.get(kind)
        if v is None or p is None:
            missing = " and ".join(name for name, r in (("vlmc", v), ("PyTorch", p)) if r is None)
            t.row([kind, f"{v['median_ms']:.3f}" if v else "", f"{p['median_ms']:.3f}" if p else "", "", "",
                   f"FAIL (no {missing} result)"], ok=False)
            continue
        ratio = p["median_ms"] / v["median_ms"]
        t.row([kind, f"{v['median_ms']:.3f}", f"{p['median_ms']:.3f}", f"{v['gflops']:.0f}", f"{ratio:.2f}",
               verdict(ratio > 1)], ok=ratio > 1)


def mib(value):
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def llava_section(t, vlmc_path, torch_path):
    v, p = read_json(vlmc_path), read_json(torch_path)
    any_doc = v or p or {}
    t.section(f"LLaVA stage-1 step ({any_doc.get('parameters', '?')} parameters, batch {any_doc.get('batch', '?')}, "
              f"seq {any_doc.get('seq', '?')}, {any_doc.get('precision', '?')})",
              ["impl", "tokens/s", "ms/step", "peak MiB", "first loss", "vlmc/PyTorch", "target: >= 1"],
              ["---", "---:", "---:", "---:", "---:", "---:", "---"])
    for name, doc in (("vlmc", v), ("PyTorch eager", p)):
        if doc is None:
            t.row([name, "", "", "", "", "", "FAIL (no result)"], ok=False)
        else:
            t.row([name, f"{doc['tokens_per_s']:.0f}", f"{doc['median_ms']:.1f}", mib(doc.get("peak_memory_bytes")),
                   f"{doc['first_loss']:.4f}", "", ""])
    if v is not None and p is not None:
        ratio = v["tokens_per_s"] / p["tokens_per_s"]
        memory = ""
        if v.get("peak_memory_bytes") and p.get("peak_memory_bytes"):
            memory = f"memory {v['peak_memory_bytes'] / p['peak_memory_bytes']:.2f}x PyTorch's"
        t.row(["ratio", "", "", memory, "", f"{ratio:.2f}", verdict(ratio >= 1)], ok=ratio >= 1)


def train_section(t, path):
    doc = read_json(path)
    t.section("Training run (vlmc train, 50 steps per stage)", ["stage", "tokens/s", "seconds", "final loss",
                                                                 "peak MiB", "result"],
              ["---", "---:", "---:", "---:", "---:", "---"])
    stages = (doc or {}).get("stages", {})
    for stage in ("stage1", "stage2"):
        s = stages.get(stage)
        if s is None:
            t.row([stage, "", "", "", "", "FAIL (no result)"], ok=False)
        else:
            t.row([stage, f"{s['tokens_per_s']:.0f}", f"{s['seconds']:.1f}", f"{s['final_loss']:.4f}",
                   mib(s.get("peak_device_bytes") or None), "ran"])
    if doc is not None and "answer_accuracy" in doc:
        print(f"\nEvaluation on {doc.get('mosaics', '?')} mosaics: answer accuracy {100 * doc['answer_accuracy']:.1f} %"
              f" (after 50 steps per stage: a smoke test, not the trained result)")


def kernel_section(t, files):
    t.section("Kernel benchmarks", ["kernel", "version", "device", "shape", "valid", "median ms", "GFLOP/s", "GB/s",
                                    "of ceiling"],
              ["---", "---", "---", "---", "---", "---:", "---:", "---:", "---:"])
    ceilings = {}
    for path in files:
        doc = read_json(path)
        if doc is None or "rows" not in doc:
            t.row([os.path.basename(path), "", "", "", "FAIL (unreadable)", "", "", "", ""], ok=False)
            continue
        for r in doc["rows"]:
            if not r["valid"]:
                t.row([r["kernel"], r["version"], r["device"], r["shape"],
                       f"NO (rel. error {r['max_rel_error']:.2e})", "", "", "", ""], ok=False)
                continue
            measure = r["gflops"] if r["gflops"] > 0 else r["gbps"]
            frac = f"{100 * measure / r['ceiling']:.0f} %" if r["ceiling"] > 0 else ""
            if r["ceiling"] > 0:
                ceilings[(r["device"], r["ceiling_name"])] = r["ceiling"]
            t.row([r["kernel"], r["version"], r["device"], r["shape"], "yes", f"{r['median_ms']:.3f}",
                   f"{r['gflops']:.1f}", f"{r['gbps']:.1f}", frac])
    if ceilings:
        print()
    for (device, name), value in sorted(ceilings.items()):
        print(f"- ceiling on {device}: {name} = {value:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", default="")
    parser.add_argument("--commit", default="")
    parser.add_argument("--suite", help="the summary scripts/gpu_suite.py wrote")
    parser.add_argument("--connectors-vlmc", help="JSON lines of `vlmc connector bench --json`")
    parser.add_argument("--connectors-torch", help="JSON lines of bench/seed_connectors.py --json")
    parser.add_argument("--llava-vlmc", help="bench_llava_step --json")
    parser.add_argument("--llava-torch", help="bench/llava_step.py --json")
    parser.add_argument("--train-results", help="runs/<name>/results.json of the training run")
    parser.add_argument("--failed", action="append", default=[], help="a part that failed, and why (repeatable)")
    parser.add_argument("files", nargs="*", help="bench_*.json (kernel benchmarks)")
    args = parser.parse_args()

    print(f"Measured {datetime.date.today().isoformat()}"
          + (f" on {args.gpu}" if args.gpu else "") + (f", commit {args.commit}" if args.commit else ""))
    t = Table()
    # Each section is shown when the check ran that part (its flag is given);
    # kernel files alone give the kernel table, as before the other parts existed.
    if args.suite is not None:
        suite_section(t, args.suite)
    if args.connectors_vlmc is not None or args.connectors_torch is not None:
        connector_section(t, args.connectors_vlmc, args.connectors_torch)
    if args.llava_vlmc is not None or args.llava_torch is not None:
        llava_section(t, args.llava_vlmc, args.llava_torch)
    if args.train_results is not None:
        train_section(t, args.train_results)
    if args.files:
        kernel_section(t, args.files)
    if args.failed:
        t.failed = True
        print("\n### Failed parts\n")
        for reason in args.failed:
            print(f"- {reason}")
    print(f"\nOverall: {'FAIL' if t.failed else 'pass'}")
    return 1 if t.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
