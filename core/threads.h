// The one thread-count policy for OpenMP and OpenBLAS: both use the same
// OpenMP pool (Debian's libopenblas0-openmp), sized once from --threads or
// VLMC_NUM_THREADS, default all cores. Never more threads than that, so the
// two never oversubscribe the machine.
#pragma once

namespace vlmc {

int num_threads();
void set_num_threads(int n);  // n >= 1

}  // namespace vlmc
