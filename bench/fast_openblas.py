"""PyTorch's strongest f32 products on this CPU, for the benchmarks that compare vlmc against it.

Debian's torch 1.13 multiplies f32 on OpenBLAS 0.3.21, which picks its kernels by CPU model. On a
model it does not know (the Intel Xeons of model 207 here, which have AVX-512) it falls back to its
generic Prescott (SSE3) kernels: 24 GFLOP/s on one thread for a 1024^3 matmul, against 131 with its
SkylakeX kernels on the same machine. A benchmark against that fallback measures OpenBLAS's CPU
table, not vlmc. Each comparison script calls use_fast_openblas() before it imports torch: when
OpenBLAS has fallen back to a generic kernel on a CPU with AVX-512 or AVX2, the script is run again
with OPENBLAS_CORETYPE naming the kernels that CPU can run (SkylakeX, Haswell), and says so. A user's
own OPENBLAS_CORETYPE is kept as it is.
"""

import os
import re
import subprocess
import sys

# OpenBLAS's names for its generic x86-64 kernels, the ones it falls back to.
GENERIC_CORES = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai", "Coppermine", "Northwood",
                 "Banias", "Atom"}
_MARK = "VLMC_BENCH_OPENBLAS_CHECKED"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detected_core():
    """The kernel set OpenBLAS picks in a fresh torch process (OPENBLAS_VERBOSE=2), or None if it says none."""
    env = dict(os.environ, OPENBLAS_VERBOSE="2")
    probe = subprocess.run([sys.executable, "-c", "import torch; torch.ones(2, 2) @ torch.ones(2, 2)"], env=env,
                           capture_output=True, text=True)
    match = re.search(r"Core: (\w+)", probe.stdout + probe.stderr)
    return match.group(1) if match else None


def use_fast_openblas():
    """Re-executes this script with OPENBLAS_CORETYPE set when OpenBLAS fell back to a generic kernel."""
    if "OPENBLAS_CORETYPE" in os.environ or os.environ.get(_MARK):
        return
    os.environ[_MARK] = "1"  # one probe per run, also for the children
    core = detected_core()
    flags = cpu_flags()
    choice = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
    if core not in GENERIC_CORES or choice is None:
        return
    print(f"fast_openblas: OpenBLAS picked its generic {core} kernels on this CPU; PyTorch runs with "
          f"OPENBLAS_CORETYPE={choice} (bench/fast_openblas.py)", file=sys.stderr, flush=True)
    os.environ["OPENBLAS_CORETYPE"] = choice
    os.execv(sys.executable, [sys.executable] + sys.argv)


def openblas_core_note():
    """A line for a benchmark's header: which OpenBLAS kernels PyTorch's f32 products ran."""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"OpenBLAS kernels {forced} (OPENBLAS_CORETYPE)" if forced else "OpenBLAS kernels as detected"
