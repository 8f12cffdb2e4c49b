// `vlmc` in a cgroup with a CPU quota of one CPU (what `docker run --cpus=1`
// sets) defaults to one thread though its affinity mask names more CPUs
// (core/cpu_quota.h). The test makes a real child cgroup under its own, which
// needs a writable cgroup hierarchy (root, no read-only mount); where it cannot,
// it says so and checks nothing. tests/core/test_cpu_quota.cpp covers the
// reading on built trees everywhere.
#include <catch2/catch.hpp>

#include <sched.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
using vlmc::test::TempDir;

namespace {

// This process's path in the v1 hierarchy whose controllers include cpu.
std::optional<std::string> own_v1_cpu_group() {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
    if (controllers.find(",cpu,") != std::string::npos) return line.substr(second + 1);
  }
  return std::nullopt;
}

// A child cgroup with a quota of one CPU a period, removed when it goes.
struct OneCpuGroup {
  std::filesystem::path dir;
  bool made = false;
  OneCpuGroup() {
    const std::optional<std::string> own = own_v1_cpu_group();
    if (!own) return;
    for (const char* mount : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
      const std::filesystem::path parent = std::string(mount) + *own;
      if (!std::filesystem::exists(parent / "cpu.cfs_quota_us")) continue;
      dir = parent / ("vlmc_quota_test_" + std::to_string(::getpid()));
      std::error_code ec;
      if (!std::filesystem::create_directory(dir, ec)) return;
      std::ofstream(dir / "cpu.cfs_period_us") << "100000\n";
      std::ofstream quota(dir / "cpu.cfs_quota_us");
      quota << "100000\n";
      quota.close();
      made = quota.good() && read_text(dir / "cpu.cfs_quota_us") == "100000\n";
      return;
    }
  }
  ~OneCpuGroup() {
    if (!dir.empty()) ::rmdir(dir.c_str());  // empty again once the spawned vlmc has exited
  }
};

}  // namespace

TEST_CASE("vlmc in a cgroup with a quota of one CPU defaults to one thread", "[cli][threads][cgroup]") {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  REQUIRE(sched_getaffinity(0, sizeof(mask), &mask) == 0);
  if (CPU_COUNT(&mask) < 2) {
    WARN("not checked: this process may run on one CPU, so the quota changes nothing");
    return;
  }
  OneCpuGroup group;
  if (!group.made) {
    WARN("not checked: no writable cgroup v1 cpu hierarchy here to make a quota in");
    return;
  }
  TempDir scratch("vlmc_cpu_quota");
  const std::vector<std::string> args = {"connector", "bench", "--type", "linear", "--batch", "1",
                                         "--tokens", "4", "--repeats", "1", "--json"};
  // The shell joins the group, then becomes vlmc.
  const std::string join = "env -u VLMC_NUM_THREADS sh -c " +
                           quote("echo $$ > " + quote((group.dir / "cgroup.procs").string()) + " && exec \"$@\"") +
                           " sh";
  const Result r = run_cli(args, scratch.path, join);
  REQUIRE(r.status == 0);
  const std::string out = r.out + r.err;
  INFO(out);
  CHECK(out.find("\"threads\": 1,") != std::string::npos);
}
