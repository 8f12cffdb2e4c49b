// Spawning the real `vlmc` binary (VLMC_CLI_PATH) from the end-to-end tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace vlmc::cli_test {

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (const char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Result {
  int status = -1;  // the exit code
  std::string out, err;
};

// Runs `vlmc <args>` and collects its exit code, stdout and stderr. `launcher`,
// when given, is a shell prefix the binary runs under (`env -u X Y=1`,
// `taskset -c 0`), written as it stands.
inline Result run_cli(const std::vector<std::string>& args, const std::filesystem::path& scratch,
                      const std::string& launcher = "") {
  std::string cmd = (launcher.empty() ? "" : launcher + " ") + quote(VLMC_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  const std::filesystem::path out = scratch / "stdout.txt", err = scratch / "stderr.txt";
  cmd += " >" + quote(out.string()) + " 2>" + quote(err.string());
  const int raw = std::system(cmd.c_str());
  Result r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

}  // namespace vlmc::cli_test
