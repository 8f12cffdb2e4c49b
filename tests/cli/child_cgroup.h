// A child cgroup of the test process's own, in the v1 hierarchy, for the
// end-to-end tests of core/cgroup.h's limits (tests/cli/test_cgroup_cli.cpp,
// tests/cli/test_plan_cli.cpp). Making one needs root and a writable cgroup
// mount; `made` says whether it worked, and a test that cannot have one says
// so and checks nothing.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/cli/cli_runner.h"

namespace vlmc::cli_test {

// This process's path in the v1 hierarchy whose controllers include `controller`.
inline std::optional<std::string> own_v1_group(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
    if (controllers.find("," + controller + ",") != std::string::npos) return line.substr(second + 1);
  }
  return std::nullopt;
}

// A child cgroup of this process's v1 `controller` group with `files` written
// into it, removed when it goes (empty again once the spawned vlmc has exited).
struct ChildCgroup {
  std::filesystem::path dir;
  bool made = false;
  ChildCgroup(const std::string& controller, const std::vector<std::string>& mounts,
              const std::vector<std::pair<std::string, std::string>>& files) {
    const std::optional<std::string> own = own_v1_group(controller);
    if (!own) return;
    for (const std::string& mount : mounts) {
      const std::filesystem::path parent = mount + *own;
      if (!std::filesystem::exists(parent / files.front().first)) continue;
      dir = parent / ("vlmc_cgroup_test_" + std::to_string(::getpid()));
      std::error_code ec;
      if (!std::filesystem::create_directory(dir, ec)) {
        dir.clear();
        return;
      }
      made = true;
      for (const auto& [name, value] : files) {
        std::ofstream(dir / name) << value << "\n";
        made = made && read_text(dir / name) == value + "\n";
      }
      return;
    }
  }
  ~ChildCgroup() {
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
  // A shell prefix that joins the group, then becomes vlmc.
  std::string launcher(const std::string& env = "") const {
    return "env " + env + " sh -c " +
           quote("echo $$ > " + quote((dir / "cgroup.procs").string()) + " && exec \"$@\"") + " sh";
  }
};

}  // namespace vlmc::cli_test
