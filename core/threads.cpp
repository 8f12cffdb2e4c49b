#include "core/threads.h"

#include <omp.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "core/error.h"

extern "C" void openblas_set_num_threads(int);  // from OpenBLAS; declared here to avoid cblas.h

namespace vlmc {
namespace {

int initial_threads() {
  if (const char* env = std::getenv("VLMC_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    VLMC_CHECK(end != env && *end == '\0' && n >= 1 && n <= 4096,
               "VLMC_NUM_THREADS: expected a positive integer, got '", env, "'");
    return static_cast<int>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

int& current() {
  static int n = [] {
    const int t = initial_threads();
    omp_set_num_threads(t);
    openblas_set_num_threads(t);
    return t;
  }();
  return n;
}

// Applies the policy at start-up, before the first parallel region.
const int g_initialized = current();

}  // namespace

int num_threads() { return current(); }

void set_num_threads(int n) {
  VLMC_CHECK(n >= 1, "set_num_threads: expected n >= 1, got ", n);
  current() = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

std::string cpu_model_name() {
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      const size_t at = line.find_first_not_of(" \t", line.find(':') + 1);
      return at == std::string::npos ? "unknown CPU" : line.substr(at);
    }
  return "unknown CPU";
}

}  // namespace vlmc
