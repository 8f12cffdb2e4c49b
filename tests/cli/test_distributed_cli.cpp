// Data-parallel training end to end: the real `vlmc train` under Open MPI's
// mpirun with two processes on this machine's CPU (tag [mpi]).
//  - the loss sequence equals, within 1e-6 relative, that of one process with
//    the same global batch (every stage, every step);
//  - with run.zero_stage 1 (the optimizer state sharded) the losses, weights
//    and optimizer state are those of the unsharded job bit for bit, and
//    checkpoints resume across the two;
//  - a process killed mid-run ends the job with an error that names its rank;
//  - a process that hangs (stopped with SIGSTOP) makes the others stop after
//    run.collective_timeout_s with a message, instead of waiting forever.
// Built only when CMake found MPI (VLMC_MPIEXEC is mpirun's path).
#if defined(VLMC_MPIEXEC)
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/cli/cli_runner.h"
#include "tests/support/llava_files.h"
#include "tests/support/temp_dir.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

using namespace vlmc;
using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

// The toy run (tests/support/toy_run.h) as flags; global batch 4 = 2 per process.
std::vector<std::string> toy_flags(const fs::path& root, const std::string& name, int64_t steps) {
  std::vector<std::string> a = {"--threads", "1", "train",
                                "--run.name", name,
                                "--run.runs_dir", (root / "runs").string(),
                                "--run.cache_dir", (root / ("cache-" + name)).string(),  // each run its own stage 0
                                "--run.log_every_s", "1e9",
                                "--run.checkpoint_every", "2",
                                "--data.train_mosaics", "64",
                                "--data.questions_per_image", "2",
                                "--vision.hidden_size", "16",
                                "--vision.intermediate_size", "32",
                                "--vision.num_attention_heads", "2",
                                "--vision.num_hidden_layers", "1",
                                "--language.hidden_size", "16",
                                "--language.intermediate_size", "32",
                                "--language.num_attention_heads", "2",
                                "--language.num_key_value_heads", "1",
                                "--language.num_hidden_layers", "1",
                                "--eval.mosaics", "8",
                                "--eval.questions_per_image", "2"};
  for (const char* stage : {"stage0.vision", "stage0.language", "stage1", "stage2"}) {
    for (const std::string& f : {std::string("--") + stage + ".steps", std::to_string(steps)}) a.push_back(f);
    a.push_back(std::string("--") + stage + ".batch_size");
    a.push_back("4");
  }
  return a;
}

// mpirun's own flags: root is allowed (CI runs as root), two slots on any machine.
std::vector<std::string> mpirun_prefix(int processes) {
  return {VLMC_MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(processes)};
}

std::vector<std::pair<std::string, double>> losses(const fs::path& metrics) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& r : train::MetricsLog::read_all(metrics.string()))
    if (r.contains("loss") && r.at("loss").is_number()) out.emplace_back(r.at("stage"), r.at("loss").get<double>());
  return out;
}

// A child process running argv with stdout/stderr in files.
struct Child {
  pid_t pid = -1;
  Child(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
    pid = fork();
    if (pid == 0) {
      setpgid(0, 0);  // its own group, so that the test can end it and everything it started
#if defined(__SANITIZE_ADDRESS__)
      // Under make asan: Open MPI's own allocations outlive MPI_Finalize and
      // are not vlmc's leaks (tests/lsan-mpi.supp says how they are matched).
      setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
      setenv("ASAN_OPTIONS", "detect_leaks=1:fast_unwind_on_malloc=0", 1);
      setenv("LSAN_OPTIONS", "suppressions=" VLMC_LSAN_MPI_SUPPRESSIONS, 1);
#endif
      const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, 1);
      dup2(e, 2);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  // The exit status, or -1 when it is still running after `limit` (then it is killed).
  int wait_for(std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(-pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    return -1;
  }
};

// The pid of the vlmc process that is MPI rank `rank` of the run named `name`
// (found through /proc: its command line holds the run name, its environment
// the rank Open MPI gave it), or -1.
pid_t find_rank(int rank, const std::string& name) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_text(entry.path() / "cmdline");
    if (cmdline.find(name) == std::string::npos || cmdline.find("mpirun") != std::string::npos) continue;
    const std::string environ = read_text(entry.path() / "environ");
    for (size_t at = 0; at < environ.size();) {
      const size_t end = environ.find('\0', at);
      if (environ.compare(at, (end == std::string::npos ? environ.size() : end) - at, want) == 0)
        return static_cast<pid_t>(std::stol(pid));
      if (end == std::string::npos) break;
      at = end + 1;
    }
  }
  return -1;
}

// Waits until the run's metrics hold `records` step records (the job is under way).
bool wait_for_records(const fs::path& metrics, size_t records, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(metrics) && losses(metrics).size() >= records) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

TEST_CASE("mpi: two processes give the one-process loss sequence within 1e-6", "[mpi]") {
  TempDir scratch("mpi");
  const Result one = run_cli(toy_flags(scratch.path, "one", 4), scratch.path);
  INFO(one.err);
  REQUIRE(one.status == 0);

  std::vector<std::string> argv = mpirun_prefix(2);
  argv.push_back(VLMC_CLI_PATH);
  for (const std::string& a : toy_flags(scratch.path, "two", 4)) argv.push_back(a);
  Child job(argv, scratch.path / "mpi.out", scratch.path / "mpi.err");
  const int status = job.wait_for(std::chrono::seconds(300));
  INFO(read_text(scratch.path / "mpi.err"));
  REQUIRE(status == 0);

  const auto a = losses(scratch.path / "runs" / "one" / "metrics.jsonl");
  const auto b = losses(scratch.path / "runs" / "two" / "metrics.jsonl");
  REQUIRE(a.size() == 16);  // 4 steps x 4 stages
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first << " record " << i << ": one process " << a[i].second << ", two " << b[i].second);
    CHECK(b[i].first == a[i].first);
    CHECK(std::abs(b[i].second - a[i].second) <= 1e-6 * std::abs(a[i].second));
  }
  // Process 0 alone wrote the outputs, and the report was printed once.
  const std::string out = read_text(scratch.path / "mpi.out");
  REQUIRE(out.find("evaluation on") != std::string::npos);
  CHECK(out.find("evaluation on") == out.rfind("evaluation on"));
  CHECK(fs::is_regular_file(scratch.path / "runs" / "two" / "results.json"));
  std::ifstream results(scratch.path / "runs" / "two" / "results.json");
  CHECK(nlohmann::json::parse(results).at("processes") == 2);

  // A crash after stage 1's second step: --resume with two processes again
  // repeats the uninterrupted sequence exactly.
  const fs::path checkpoints = scratch.path / "runs" / "two" / "checkpoints";
  for (const auto& entry : fs::directory_iterator(checkpoints))
    if (entry.path().filename().string() > "2-stage1-step000002") fs::remove_all(entry.path());
  std::vector<std::string> resume_argv = argv;
  resume_argv.push_back("--resume");
  Child resumed(resume_argv, scratch.path / "resume.out", scratch.path / "resume.err");
  const int resumed_status = resumed.wait_for(std::chrono::seconds(300));
  INFO(read_text(scratch.path / "resume.err"));
  REQUIRE(resumed_status == 0);
  CHECK(losses(scratch.path / "runs" / "two" / "metrics.jsonl") == b);

  // --resume with another process count is refused, naming both counts.
  const Result other = run_cli([&] {
    std::vector<std::string> args = toy_flags(scratch.path, "two", 6);
    args.push_back("--resume");
    return args;
  }(), scratch.path);
  CHECK(other.status != 0);
  CHECK_THAT(other.err, Catch::Contains("job of 2 processes") && Catch::Contains("this job has 1"));
}

namespace {

// Runs `vlmc train` under mpirun with two processes and the toy flags plus
// `extra`; returns its exit status (-1: still running after 300 s).
int run_two(const fs::path& root, const std::string& name, const std::vector<std::string>& extra,
            const std::string& log) {
  std::vector<std::string> argv = mpirun_prefix(2);
  argv.push_back(VLMC_CLI_PATH);
  for (const std::string& a : toy_flags(root, name, 4)) argv.push_back(a);
  for (const std::string& a : extra) argv.push_back(a);
  Child job(argv, root / (log + ".out"), root / (log + ".err"));
  return job.wait_for(std::chrono::seconds(300));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

// Every tensor of `a` and `b` (same names) has the same bits.
void check_same_tensors(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b,
                        const std::string& where) {
  INFO(where);
  CHECK(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    const auto it = b.find(name);
    REQUIRE(it != b.end());
    CHECK(same_bits(t, it->second));
  }
}

// Leaves only the checkpoints up to stage 1's second step: the job "crashed" there.
void crash_after_stage1_step2(const fs::path& checkpoints) {
  for (const auto& entry : fs::directory_iterator(checkpoints))
    if (entry.path().filename().string() > "2-stage1-step000002") fs::remove_all(entry.path());
}

}  // namespace

TEST_CASE("mpi: ZeRO-1 gives the unsharded job's losses bit for bit", "[mpi]") {
  TempDir scratch("mpi");
  const std::vector<std::string> zero1 = {"--run.zero_stage", "1"};
  {
    const int whole = run_two(scratch.path, "whole", {}, "whole");
    INFO(read_text(scratch.path / "whole.err"));
    REQUIRE(whole == 0);
  }
  {
    const int sharded = run_two(scratch.path, "sharded", zero1, "sharded");
    INFO(read_text(scratch.path / "sharded.err"));
    REQUIRE(sharded == 0);
  }
  const fs::path whole_dir = scratch.path / "runs" / "whole";
  const fs::path sharded_dir = scratch.path / "runs" / "sharded";
  const auto a = losses(whole_dir / "metrics.jsonl");
  const auto b = losses(sharded_dir / "metrics.jsonl");
  REQUIRE(a.size() == 16);  // 4 steps x 4 stages
  CHECK(b == a);            // exactly: the same arithmetic per parameter

  // Every checkpoint left (each stage's last two) holds the same weights and
  // the same optimizer state, in the unsharded AdamW's format.
  const std::vector<std::string> names = train::list_checkpoints((whole_dir / "checkpoints").string());
  REQUIRE(names.size() == 8);
  CHECK(train::list_checkpoints((sharded_dir / "checkpoints").string()) == names);
  for (const std::string& name : names) {
    const train::Checkpoint x = train::load_checkpoint((whole_dir / "checkpoints" / name).string());
    const train::Checkpoint y = train::load_checkpoint((sharded_dir / "checkpoints" / name).string());
    REQUIRE_FALSE(x.optimizer.empty());
    check_same_tensors(x.optimizer, y.optimizer, name + " optimizer");
    check_same_tensors(x.model, y.model, name + " model");
  }

  // After a crash following stage 1's second step, --resume with ZeRO-1
  // repeats the uninterrupted sequence exactly: the ZeRO-1 job's own
  // checkpoint, and the unsharded job's (checkpoints are interchangeable).
  auto resume_with_zero1 = [&](const std::string& name, const fs::path& dir) {
    crash_after_stage1_step2(dir / "checkpoints");
    std::vector<std::string> resume = zero1;
    resume.push_back("--resume");
    const int status = run_two(scratch.path, name, resume, name + "-resume");
    INFO(read_text(scratch.path / (name + "-resume.err")));
    REQUIRE(status == 0);
    return losses(dir / "metrics.jsonl");
  };
  CHECK(resume_with_zero1("sharded", sharded_dir) == b);
  CHECK(resume_with_zero1("whole", whole_dir) == a);
}

TEST_CASE("mpi: a killed process ends the job with an error naming its rank", "[mpi]") {
  TempDir scratch("mpi");
  std::vector<std::string> argv = mpirun_prefix(2);
  argv.push_back(VLMC_CLI_PATH);
  for (const std::string& a : toy_flags(scratch.path, "killed", 400)) argv.push_back(a);
  Child job(argv, scratch.path / "mpi.out", scratch.path / "mpi.err");
  REQUIRE(wait_for_records(scratch.path / "runs" / "killed" / "metrics.jsonl", 3, std::chrono::seconds(120)));
  const pid_t victim = find_rank(1, "killed");
  REQUIRE(victim > 0);
  kill(victim, SIGKILL);
  const int status = job.wait_for(std::chrono::seconds(60));
  const std::string err = read_text(scratch.path / "mpi.err");
  INFO(err);
  CHECK(status != -1);  // ended by itself, not by the test's deadline
  CHECK(status != 0);
  CHECK_THAT(err, Catch::Contains("rank 1"));
}

TEST_CASE("mpi: a hanging process makes the others stop after the collective timeout", "[mpi]") {
  TempDir scratch("mpi");
  std::vector<std::string> argv = mpirun_prefix(2);
  argv.push_back(VLMC_CLI_PATH);
  for (const std::string& a : toy_flags(scratch.path, "hung", 400)) argv.push_back(a);
  argv.push_back("--run.collective_timeout_s");
  argv.push_back("3");
  Child job(argv, scratch.path / "mpi.out", scratch.path / "mpi.err");
  REQUIRE(wait_for_records(scratch.path / "runs" / "hung" / "metrics.jsonl", 3, std::chrono::seconds(120)));
  const pid_t victim = find_rank(1, "hung");
  REQUIRE(victim > 0);
  const auto stopped_at = std::chrono::steady_clock::now();
  kill(victim, SIGSTOP);  // alive but silent: only a timeout can end the job
  const int status = job.wait_for(std::chrono::seconds(60));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  const std::string err = read_text(scratch.path / "mpi.err");
  INFO(err);
  CHECK(status != -1);
  CHECK(status != 0);
  CHECK_THAT(err, Catch::Contains("did not complete within 3 s"));
  CHECK(waited < 30);
}
TEST_CASE("mpi: a LLaVA run on two processes gives the one-process losses, and resumes at the exact sample",
          "[mpi][llava]") {
  TempDir scratch("mpi_llava");
  test::split_models(scratch.path);
  test::write_data(scratch.path);
  // Stage 2 on the chats (no bad sample: a skipped one is replaced within its
  // process's share, so with one the two jobs' batches would differ).
  auto flags = [&](const std::string& name) {
    return std::vector<std::string>{"--threads", "1", "train",
                                    "--run.name", name,
                                    "--run.runs_dir", (scratch.path / "runs").string(),
                                    "--run.log_every_s", "1e9",
                                    "--run.checkpoint_every", "2",
                                    "--run.keep_checkpoints", "3",
                                    "--data.format", "llava",
                                    "--data.json", (scratch.path / "chats.jsonl").string(),
                                    "--data.image_folder", (scratch.path / "images").string(),
                                    "--data.template", "vicuna_v1",
                                    "--data.workers", "1",
                                    "--data.model_max_length", "512",
                                    "--model.vision_tower", (scratch.path / "clip").string(),
                                    "--model.language_model", (scratch.path / "llama").string(),
                                    "--model.stage", "2",
                                    "--data.epochs", "2",
                                    "--stage2.steps", "5",
                                    "--stage2.batch_size", "4",
                                    "--stage2.lr", "1e-3"};
  };
  const Result one = run_cli(flags("one"), scratch.path);
  INFO(one.err);
  REQUIRE(one.status == 0);
  std::vector<std::string> argv = mpirun_prefix(2);
  argv.push_back(VLMC_CLI_PATH);
  for (const std::string& a : flags("two")) argv.push_back(a);
  Child job(argv, scratch.path / "mpi.out", scratch.path / "mpi.err");
  const int status = job.wait_for(std::chrono::seconds(300));
  INFO(read_text(scratch.path / "mpi.err"));
  REQUIRE(status == 0);
  const auto a = losses(scratch.path / "runs" / "one" / "metrics.jsonl");
  const auto b = losses(scratch.path / "runs" / "two" / "metrics.jsonl");
  REQUIRE(a.size() == 5);
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << i + 1 << ": one process " << a[i].second << ", two " << b[i].second);
    CHECK(std::abs(b[i].second - a[i].second) <= 1e-6 * std::abs(a[i].second));
  }
  // Each checkpoint holds both processes' places in the data.
  const fs::path checkpoints = scratch.path / "runs" / "two" / "checkpoints";
  const train::Checkpoint at4 = train::load_checkpoint((checkpoints / "3-stage2-step000004").string());
  REQUIRE(at4.state["data"]["loaders"].size() == 2);
  CHECK(at4.state["data"]["loaders"][1]["step"] == 4);
  // Cut back to step 2 and resumed by two processes: the same losses.
  for (const auto& entry : fs::directory_iterator(checkpoints))
    if (entry.path().filename().string() > "3-stage2-step000002") fs::remove_all(entry.path());
  std::vector<std::string> resume_argv = argv;
  resume_argv.push_back("--resume");
  Child resumed(resume_argv, scratch.path / "resume.out", scratch.path / "resume.err");
  const int resumed_status = resumed.wait_for(std::chrono::seconds(300));
  INFO(read_text(scratch.path / "resume.err"));
  REQUIRE(resumed_status == 0);
  CHECK(losses(scratch.path / "runs" / "two" / "metrics.jsonl") == b);
}
#endif  // VLMC_MPIEXEC
