// `vlmc` in a real cgroup with a quota of one CPU (what `docker run --cpus=1`
// sets) defaults to one thread though its affinity mask names more CPUs
// (core/cgroup.h). tests/core/test_cgroup.cpp covers the reading on built
// trees everywhere; tests/cli/test_plan_cli.cpp the memory limit.
#include <catch2/catch.hpp>

#include <sched.h>

#include <string>

#include "tests/cli/child_cgroup.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
using vlmc::test::TempDir;

TEST_CASE("vlmc in a cgroup with a quota of one CPU defaults to one thread", "[cli][threads][cgroup]") {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  REQUIRE(sched_getaffinity(0, sizeof(mask), &mask) == 0);
  if (CPU_COUNT(&mask) < 2) {
    WARN("not checked: this process may run on one CPU, so the quota changes nothing");
    return;
  }
  ChildCgroup group("cpu", {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"},
                    {{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "100000"}});
  if (!group.made) {
    WARN("not checked: no writable cgroup v1 cpu hierarchy here to make a quota in");
    return;
  }
  TempDir scratch("vlmc_cpu_quota");
  const Result r = run_cli({"connector", "bench", "--type", "linear", "--batch", "1", "--tokens", "4", "--repeats",
                            "1", "--json"},
                           scratch.path, group.launcher("-u VLMC_NUM_THREADS"));
  REQUIRE(r.status == 0);
  const std::string out = r.out + r.err;
  INFO(out);
  CHECK(out.find("\"threads\": 1,") != std::string::npos);
}
