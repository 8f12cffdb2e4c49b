// The one thread-count policy for OpenMP and OpenBLAS: both use the same
// OpenMP pool (Debian's libopenblas0-openmp), sized once from --threads or
// VLMC_NUM_THREADS, default the CPUs the process may use (usable_cpus()), no
// more than its cgroup's CPU quota (core/cgroup.h).
// Never more threads than that, so the two never oversubscribe the machine.
#pragma once

#include <string>
#include <vector>

namespace vlmc {

int num_threads();
void set_num_threads(int n);  // n >= 1

// The CPUs this process may use: with OpenMP binding asked for (OMP_PROC_BIND,
// OMP_PLACES), every CPU of libgomp's places (it binds the calling thread to
// the first place as it loads, so the thread's own mask then says one place);
// else the thread's affinity mask (taskset, a container's or a scheduler's
// cpuset). The default thread count is their number.
std::vector<int> usable_cpus();

// How many CPUs' time this process may have: usable_cpus()' count, no more
// than the cgroup's CPU quota (core/cgroup.h), at least 1. The default
// thread count; more threads than this take turns on the CPUs.
int available_cpus();

// /proc/cpuinfo's "model name" (what `lscpu` prints), or "unknown CPU": results
// are bitwise reproducible only on one kind of CPU, so every report names it.
std::string cpu_model_name();

}  // namespace vlmc
