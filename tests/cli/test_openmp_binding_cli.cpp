// `vlmc` re-executes itself once to bound OpenMP's spinning (train/main.cpp).
// With OMP_PROC_BIND / OMP_PLACES set, libgomp has bound the first process's
// thread to one place by then, and exec kept that mask: every thread of the
// re-executed process ran on that place's CPUs. This spawns the real binary
// with binding asked for and reads libgomp's own affinity report; and the
// default thread count under a CPU mask (core/threads.h, usable_cpus()).
#include <catch2/catch.hpp>

#include <sched.h>

#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/threads.h"

#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
using vlmc::test::TempDir;

namespace {

// The CPUs of this process's affinity mask, in order.
std::vector<int> own_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  REQUIRE(sched_getaffinity(0, sizeof(mask), &mask) == 0);
  std::vector<int> cpus;
  for (int id = 0; id < CPU_SETSIZE; ++id)
    if (CPU_ISSET(id, &mask)) cpus.push_back(id);
  return cpus;
}

const std::vector<std::string> kSmallBench = {"connector", "bench", "--type", "linear", "--batch", "1",
                                              "--tokens", "4", "--repeats", "1"};

}  // namespace

TEST_CASE("vlmc under OMP_PROC_BIND=true OMP_PLACES=cores puts its two threads on two places", "[cli][threads]") {
  const std::vector<int> own = own_cpus();
  if (own.size() < 2) {
    WARN("not checked: this process may run on " << own.size() << " CPU, two are needed");
    return;
  }
  TempDir scratch("vlmc_binding");
  // The test's environment (ctest sets OMP_WAIT_POLICY) would skip the re-exec.
  std::vector<std::string> args = {"--threads", "2"};
  args.insert(args.end(), kSmallBench.begin(), kSmallBench.end());
  const Result r = run_cli(args, scratch.path,
                           "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_PROC_BIND=true OMP_PLACES=cores "
                           "OMP_DISPLAY_AFFINITY=true 'OMP_AFFINITY_FORMAT=vlmc-affinity %n %A'");
  REQUIRE(r.status == 0);
  const std::string out = r.out + r.err;
  INFO(out);
  std::set<std::string> threads, places;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string tag, thread, cpus;
    if (words >> tag >> thread >> cpus && tag == "vlmc-affinity") {
      threads.insert(thread);
      places.insert(cpus);
    }
  }
  CHECK(threads.size() == 2);
  CHECK(places.size() == 2);  // before the fix: "0" for both
}

// The default thread count is the CPUs the process may use, not every online
// one: under `taskset -c <one CPU>` two threads had shared that CPU. A count
// asked for above it is kept, with a note.
TEST_CASE("vlmc under taskset with one CPU defaults to one thread", "[cli][threads]") {
  const std::vector<int> own = own_cpus();
  REQUIRE(!own.empty());
  TempDir scratch("vlmc_taskset");
  std::vector<std::string> args = kSmallBench;
  args.push_back("--json");
  const Result r = run_cli(args, scratch.path, "env -u VLMC_NUM_THREADS taskset -c " + std::to_string(own.front()));
  REQUIRE(r.status == 0);
  const std::string out = r.out + r.err;
  INFO(out);
  CHECK(out.find("\"threads\": 1,") != std::string::npos);
  CHECK(r.err.find("vlmc: note:") == std::string::npos);

  // Asked for more threads than that, it runs them and says so once.
  std::vector<std::string> two = {"--threads", "2"};
  two.insert(two.end(), args.begin(), args.end());
  const Result asked = run_cli(two, scratch.path, "env -u VLMC_NUM_THREADS taskset -c " + std::to_string(own.front()));
  REQUIRE(asked.status == 0);
  INFO(asked.err);
  CHECK(asked.out.find("\"threads\": 2,") != std::string::npos);
  CHECK(asked.err.find("vlmc: note: 2 threads on the 1 CPU this process may use") != std::string::npos);
}

TEST_CASE("usable_cpus is the process's affinity mask when no OpenMP places are set", "[threads]") {
  if (std::getenv("OMP_PLACES") != nullptr || std::getenv("OMP_PROC_BIND") != nullptr) {
    WARN("not checked: OpenMP binding is set in this environment");
    return;
  }
  CHECK(vlmc::usable_cpus() == own_cpus());
}
