// The one thread-count policy for OpenMP and OpenBLAS: both use the same
// OpenMP pool (Debian's libopenblas0-openmp), sized once from --threads or
// VLMC_NUM_THREADS, default all cores. Never more threads than that, so the
// two never oversubscribe the machine.
#pragma once

#include <string>

namespace vlmc {

int num_threads();
void set_num_threads(int n);  // n >= 1

// /proc/cpuinfo's "model name" (what `lscpu` prints), or "unknown CPU": results
// are bitwise reproducible only on one kind of CPU, so every report names it.
std::string cpu_model_name();

}  // namespace vlmc
