#!/usr/bin/env python3
"""Gathers every JSON result scripts/gpu-check.sh measured (kernel benchmarks,
connectors, the LLaVA step) into one file, keyed by the file it came from.

    scripts/gpu_rows.py OUT.json LOG_DIR
"""
import glob
import json
import os
import sys


def main():
    out, logs = sys.argv[1], sys.argv[2]
    rows = {}
    for path in sorted(glob.glob(os.path.join(logs, "*.json")) + glob.glob(os.path.join(logs, "*.jsonl"))):
        if os.path.basename(path) == "suite.json":
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            rows[os.path.basename(path)] = (json.loads(text) if path.endswith(".json") else
                                            [json.loads(line) for line in text.splitlines() if line.startswith("{")])
        except ValueError as e:
            rows[os.path.basename(path)] = f"unreadable: {e}"
    if rows:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
