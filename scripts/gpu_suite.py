#!/usr/bin/env python3
"""Runs the CUDA suite on a GPU machine, one test case per process, so that a
fault in one case (an illegal address poisons the whole CUDA context) cannot
fail the others, and each case has its own timeout.

Then each failed case is run again, once with CUDA_LAUNCH_BLOCKING=1 and
VLMC_CUDA_SYNC=1 (every launch waits and is checked, so the error names the
launch that caused it), and once under compute-sanitizer's memcheck when it is
installed. A case that exits 77 (no device visible, or a build without CUDA)
is a failure here, never a skip: this runner exists to run the GPU code.

    scripts/gpu_suite.py --exe build/tests/vlmc_cuda_tests --logs DIR --json suite.json

Exit status 0 when every case passed, 1 otherwise.
"""
import argparse
import concurrent.futures as futures
import json
import os
import re
import shutil
import subprocess
import sys
import time


def catch_spec(name):
    """A Catch2 (v2) test spec that matches exactly this name."""
    return re.sub(r"([,\[\]\\])", r"\\\1", name)


def log_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


def run_case(cmd, env, timeout, log_path):
    """Runs one process; returns (status, exit code, seconds)."""
    start = time.monotonic()
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return "timeout", None, time.monotonic() - start
    seconds = time.monotonic() - start
    if rc == 0:
        return "passed", rc, seconds
    if rc == 77:
        return "skipped (exit 77: no CUDA device, or a build without CUDA)", rc, seconds
    return "failed", rc, seconds


def tail(path, lines=12):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", required=True, help="the vlmc_cuda_tests program")
    ap.add_argument("--logs", required=True, help="folder for one log per case")
    ap.add_argument("--json", required=True, help="summary written here")
    ap.add_argument("--jobs", type=int, default=4, help="cases run at once on the one GPU")
    ap.add_argument("--timeout", type=float, default=90, help="seconds per case")
    ap.add_argument("--budget", type=float, default=240, help="seconds for the whole suite, reruns included")
    ap.add_argument("--max-reruns", type=int, default=6, help="failed cases rerun under the checks")
    args = ap.parse_args()
    deadline = time.monotonic() + args.budget
    os.makedirs(args.logs, exist_ok=True)

    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    # Catch2 v2 exits with the number of cases listed: the names are the check.
    listing = subprocess.run([args.exe, "--list-test-names-only"], capture_output=True, text=True)
    names = [line.strip() for line in listing.stdout.splitlines() if line.strip()]
    if not names:
        error = f"{args.exe} listed no test cases (exit {listing.returncode}): {listing.stderr.strip()}"
        print(f"gpu_suite: FAILED: {error}", file=sys.stderr)
        json.dump({"error": error, "cases": 0}, open(args.json, "w"), indent=1)
        return 1

    # One case first, alone: if the device or the build is not there, every case
    # would say so; stop at once with that message instead.
    probe = os.path.join(args.logs, "probe.log")
    status, rc, _ = run_case([args.exe, catch_spec(names[0]), "-w", "NoTests"], env, args.timeout, probe)
    if rc == 77:
        print(f"gpu_suite: FAILED: {status}\n{tail(probe)}", file=sys.stderr)
        json.dump({"error": status, "cases": len(names)}, open(args.json, "w"), indent=1)
        return 1

    results = {}

    def one(name):
        left = deadline - time.monotonic()
        if left < 5:
            return name, ("not run (suite budget spent)", None, 0.0)
        log = os.path.join(args.logs, log_name(name) + ".log")
        cmd = [args.exe, catch_spec(name), "-w", "NoTests", "--durations", "yes"]
        return name, run_case(cmd, env, min(args.timeout, left), log)

    with futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for name, result in pool.map(one, names):
            results[name] = {"status": result[0], "exit": result[1], "seconds": round(result[2], 2)}
            if result[0] != "passed":
                print(f"gpu_suite: {result[0]}: {name}", file=sys.stderr)

    failed = [n for n in names if results[n]["status"] != "passed"]
    sanitizer = shutil.which("compute-sanitizer") or next(
        (p for p in ["/usr/local/cuda/bin/compute-sanitizer"] if os.path.exists(p)), None)
    for name in failed[:args.max_reruns]:
        base = os.path.join(args.logs, log_name(name))
        spec = [catch_spec(name), "-w", "NoTests"]
        left = deadline - time.monotonic()
        if left < 10:
            results[name]["reruns"] = "not run (suite budget spent)"
            continue
        blocking_env = dict(env, CUDA_LAUNCH_BLOCKING="1", VLMC_CUDA_SYNC="1")
        status, rc, secs = run_case([args.exe] + spec, blocking_env, min(2 * args.timeout, left),
                                    base + ".blocking.log")
        results[name]["blocking_rerun"] = {"status": status, "exit": rc, "seconds": round(secs, 2)}
        left = deadline - time.monotonic()
        if sanitizer and left > 20:
            cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", "99", "--show-backtrace", "device",
                   args.exe] + spec
            status, rc, secs = run_case(cmd, blocking_env, min(6 * args.timeout, left), base + ".memcheck.log")
            results[name]["memcheck_rerun"] = {"status": status, "exit": rc, "seconds": round(secs, 2)}

    passed = sum(1 for n in names if results[n]["status"] == "passed")
    summary = {"cases": len(names), "passed": passed, "failed": failed, "results": results,
               "compute_sanitizer": sanitizer or "not found"}
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"gpu_suite: {passed} of {len(names)} CUDA test cases passed")
    for name in failed:
        r = results[name]
        print(f"  FAILED {name}: {r['status']} (exit {r['exit']}, {r['seconds']} s)"
              f"; blocking rerun: {r.get('blocking_rerun', {}).get('status', '-')}"
              f"; memcheck: {r.get('memcheck_rerun', {}).get('status', '-')}")
        print("    " + tail(os.path.join(args.logs, log_name(name) + ".log"), 6).replace("\n", "\n    "))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
