// `vlmc` re-executes itself once to bound OpenMP's spinning (train/main.cpp).
// With OMP_PROC_BIND / OMP_PLACES set, libgomp has bound the first process's
// thread to one place by then, and exec kept that mask: every thread of the
// re-executed process ran on that place's CPUs. This spawns the real binary
// with binding asked for and reads libgomp's own affinity report.
#include <catch2/catch.hpp>

#include <sched.h>

#include <set>
#include <sstream>
#include <string>

#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
using vlmc::test::TempDir;

TEST_CASE("vlmc under OMP_PROC_BIND=true OMP_PLACES=cores puts its two threads on two places", "[cli][threads]") {
  cpu_set_t own;
  CPU_ZERO(&own);
  REQUIRE(sched_getaffinity(0, sizeof(own), &own) == 0);
  if (CPU_COUNT(&own) < 2) {
    WARN("not checked: this process may run on " << CPU_COUNT(&own) << " CPU, two are needed");
    return;
  }
  TempDir scratch("vlmc_binding");
  // The test's environment (ctest sets OMP_WAIT_POLICY) would skip the re-exec.
  const std::string cmd =
      "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_PROC_BIND=true OMP_PLACES=cores OMP_DISPLAY_AFFINITY=true "
      "'OMP_AFFINITY_FORMAT=vlmc-affinity %n %A' " +
      quote(VLMC_CLI_PATH) + " --threads 2 connector bench --type linear --batch 1 --tokens 4 --repeats 1 >" +
      quote((scratch.path / "out.txt").string()) + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string out = read_text(scratch.path / "out.txt");
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
