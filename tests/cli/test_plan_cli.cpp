// End-to-end tests of `vlmc plan` and of the refusal it backs in `vlmc
// train`: a batch that cannot fit stops the run at once, naming the stage and
// the key, where it used to train stage 0 and then die allocating (killed by
// the kernel's OOM killer, or here, under an address-space limit, with
// std::bad_alloc). Needs Debian's dataset-fashion-mnist for the train runs.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/cli/child_cgroup.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

// The toy config of test_train_cli.cpp: every stage 3 steps of 1-layer,
// 16-wide models.
const char* kToyConfig = R"(
[run]
name = "toy"
log_every_s = 1e9
[data]
train_mosaics = 32
questions_per_image = 2
[vision]
hidden_size = 16
intermediate_size = 32
num_attention_heads = 2
num_hidden_layers = 1
[language]
hidden_size = 16
intermediate_size = 32
num_attention_heads = 2
num_key_value_heads = 1
num_hidden_layers = 1
[stage0.vision]
steps = 3
batch_size = 4
[stage0.language]
steps = 3
batch_size = 4
[stage1]
steps = 3
batch_size = 4
[stage2]
steps = 3
batch_size = 4
[eval]
mosaics = 8
questions_per_image = 2
)";

// `vlmc <args>` under an 8 GB address-space limit, so that a run the plan
// fails to stop dies of bad_alloc instead of taking the machine's memory.
// AddressSanitizer reserves terabytes of shadow address space at start and
// cannot run under such a limit; there its own allocator refuses a size that
// large instead (and aborts, so the status check still fails).
#if defined(__SANITIZE_ADDRESS__)
constexpr const char* kAddressLimit = "";
#else
constexpr const char* kAddressLimit = "ulimit -v 8000000; ";
#endif
Result run_limited(const std::vector<std::string>& args, const fs::path& scratch, const std::string& env = "") {
  std::string cmd = kAddressLimit + env + " exec " + quote(VLMC_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote((scratch / "stdout.txt").string()) + " 2>" + quote((scratch / "stderr.txt").string());
  const int raw = std::system(("sh -c " + quote(cmd)).c_str());
  Result r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_text(scratch / "stdout.txt");
  r.err = read_text(scratch / "stderr.txt");
  return r;
}

}  // namespace

TEST_CASE("cli: vlmc train refuses a batch that cannot fit before it allocates, naming the key", "[cli][plan]") {
  TempDir scratch("cli_plan_refuse");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const std::vector<std::string> args = {"--threads", "1", "train", "--config", (scratch.path / "toy.toml").string(),
                                         "--run.runs_dir", (scratch.path / "runs").string(), "--run.cache_dir",
                                         (scratch.path / "cache").string(), "--stage1.batch_size", "2147483648"};
  const Result r = run_limited(args, scratch.path);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::StartsWith("vlmc: error: stage1.batch_size 2147483648: stage1 needs an estimated ") &&
                        Catch::Contains(" TB per process (") && (Catch::Contains("available (MemAvailable") ||
                         Catch::Contains("available (the cgroup's limit")) &&
                        Catch::Contains("lower stage1.batch_size"));
  // Refused before stage 0 ran: nothing was trained or cached.
  CHECK_FALSE(fs::exists(scratch.path / "cache"));
  CHECK_FALSE(r.err.find("stage0-vision") != std::string::npos);

  // A limit of the user's own (VLMC_MEMORY_LIMIT) refuses a modest batch too
  // (stage 2's 4096 x 26 positions: about 440 MB), naming where it came from.
  const std::vector<std::string> modest = {"train", "--config", (scratch.path / "toy.toml").string(),
                                           "--run.runs_dir", (scratch.path / "runs").string(), "--run.cache_dir",
                                           (scratch.path / "cache").string(), "--stage2.batch_size", "4096"};
  const Result limited = run_limited(modest, scratch.path, "VLMC_MEMORY_LIMIT=200MB");
  CHECK(limited.status == 1);
  CHECK_THAT(limited.err, Catch::Contains("stage2.batch_size 4096: stage2 needs an estimated") &&
                              Catch::Contains("than the 200.0 MB available (VLMC_MEMORY_LIMIT)"));
  CHECK_FALSE(fs::exists(scratch.path / "cache"));
}

// A container's memory limit (`docker run -m`) leaves /proc/meminfo showing
// the host's memory: the check read MemAvailable, passed, and the cgroup's OOM
// killer ended the run without a word (core/cgroup.h).
TEST_CASE("cli: vlmc train in a cgroup with a memory limit below its estimate stops, naming the limit",
          "[cli][plan][cgroup]") {
  ChildCgroup group("memory", {"/sys/fs/cgroup/memory"}, {{"memory.limit_in_bytes", "209715200"}});
  if (!group.made) {
    WARN("not checked: no writable cgroup v1 memory hierarchy here to make a limit in");
    return;
  }
  TempDir scratch("cli_plan_cgroup");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  // 200 MiB; stage 2 at 4096 x 26 positions needs about 440 MB, as above.
  const Result r = run_cli({"train", "--config", (scratch.path / "toy.toml").string(), "--run.runs_dir",
                            (scratch.path / "runs").string(), "--run.cache_dir", (scratch.path / "cache").string(),
                            "--stage2.batch_size", "4096"},
                           scratch.path, group.launcher("-u VLMC_MEMORY_LIMIT"));
  INFO(r.err);
  CHECK(r.status == 1);  // an error, not the OOM killer's signal
  CHECK_THAT(r.err, Catch::Contains("stage2.batch_size 4096: stage2 needs an estimated") &&
                        Catch::Contains("available (the cgroup's limit less its usage (" + group.dir.string() +
                                        "/memory.limit_in_bytes))"));
  CHECK_FALSE(fs::exists(scratch.path / "cache"));
}

TEST_CASE("cli: vlmc plan --config prints every stage's terms and whether it fits", "[cli][plan]") {
  TempDir scratch("cli_plan_config");
  std::ofstream(scratch.path / "toy.toml") << kToyConfig;
  const Result r = run_cli({"plan", "--config", (scratch.path / "toy.toml").string(), "--stage2.batch_size", "8",
                            "--memory", "1GB"},
                           scratch.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("an estimate") && Catch::Contains("stage0.vision: stage0.vision.batch_size 4") &&
                        Catch::Contains("stage1: stage1.batch_size 4 -> 4 per process") &&
                        Catch::Contains("stage2: stage2.batch_size 8 -> 8 per process") &&
                        Catch::Contains("AdamW m and v") && Catch::Contains("fits in 1.0 GB (--memory)"));
  // A batch that cannot fit is reported, not refused: plan only estimates.
  const Result big = run_cli({"plan", "--config", (scratch.path / "toy.toml").string(), "--stage1.batch_size",
                              "2147483648", "--memory", "100GB"},
                             scratch.path);
  CHECK(big.status == 0);
  CHECK_THAT(big.out, Catch::Contains("DOES NOT FIT in 100.0 GB"));
  // The LLaVA flags do not apply to a vlmc train config.
  const Result mixed = run_cli({"plan", "--config", (scratch.path / "toy.toml").string(), "--batch", "8"},
                               scratch.path);
  CHECK(mixed.status == 1);
  CHECK_THAT(mixed.err, Catch::Contains("--batch describes a LLaVA of real size"));
  // Config errors name the key, as vlmc train's do.
  const Result bad = run_cli({"plan", "--stage1.batch_size", "0"}, scratch.path);
  CHECK(bad.status == 1);
  CHECK_THAT(bad.err, Catch::Contains("stage1.batch_size must be >= 1"));
}

TEST_CASE("cli: vlmc plan --preset: LLaVA-1.5-7B stage 2 on one 141 GB GPU, and with ZeRO-1 over 8", "[cli][plan]") {
  TempDir scratch("cli_plan_preset");
  const std::vector<std::string> base = {"plan", "--preset", "llava-1.5-7b", "--stage", "2", "--batch", "16",
                                         "--seq", "2048", "--memory", "141GB"};
  const Result one = run_cli(base, scratch.path);
  INFO(one.err);
  REQUIRE(one.status == 0);
  // 6.76e9 trained parameters: 27.0 GB of f32 weights and gradients, 54.1 GB of AdamW state.
  CHECK_THAT(one.out, Catch::Contains("27.0 GB") && Catch::Contains("54.1 GB") && Catch::Contains("DOES NOT FIT"));
  std::vector<std::string> sharded = {"plan", "--preset", "llava-1.5-7b", "--stage", "2", "--batch", "1", "--seq",
                                      "2048", "--memory", "141GB", "--zero-stage", "1", "--processes", "8",
                                      "--gradient-checkpointing"};
  const Result zero = run_cli(sharded, scratch.path);
  INFO(zero.err);
  REQUIRE(zero.status == 0);
  CHECK_THAT(zero.out, Catch::Contains("/ 8 (ZeRO-1)") && Catch::Contains("6.8 GB") && Catch::Contains("fits in"));
  const Result both = run_cli({"plan", "--preset", "llava-1.5-7b", "--config", "x.toml"}, scratch.path);
  CHECK(both.status != 0);
  const Result unknown = run_cli({"plan", "--preset", "llava-9"}, scratch.path);
  CHECK(unknown.status != 0);
  CHECK_THAT(unknown.err, Catch::Contains("llava-1.5-7b"));
}
