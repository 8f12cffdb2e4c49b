#include "core/threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "core/cgroup.h"
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
  return available_cpus();
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

std::vector<int> usable_cpus() {
  std::vector<int> cpus;
  if (const int places = omp_get_num_places(); places > 0) {
    for (int p = 0; p < places; ++p) {
      std::vector<int> ids(static_cast<size_t>(std::max(omp_get_place_num_procs(p), 0)));
      omp_get_place_proc_ids(p, ids.data());
      cpus.insert(cpus.end(), ids.begin(), ids.end());
    }
  } else {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof(mask), &mask) == 0)
      for (int id = 0; id < CPU_SETSIZE; ++id)
        if (CPU_ISSET(id, &mask)) cpus.push_back(id);
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  cpus.erase(std::remove_if(cpus.begin(), cpus.end(), [](int id) { return id < 0 || id >= CPU_SETSIZE; }), cpus.end());
  return cpus;
}

int available_cpus() {
  // Not hardware_concurrency(): it counts every online CPU, so under
  // `taskset -c 0` two threads shared one CPU.
  const size_t usable = usable_cpus().size();
  const unsigned hw = std::thread::hardware_concurrency();
  int n = usable > 0 ? static_cast<int>(std::min<size_t>(usable, 4096)) : (hw == 0 ? 1 : static_cast<int>(hw));
  // A CPU quota (docker --cpus) leaves the mask whole; see core/cgroup.h.
  if (const std::optional<int> quota = cgroup_cpu_limit()) n = std::min(n, *quota);
  return std::max(n, 1);
}

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
