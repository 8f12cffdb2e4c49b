// Run artifacts: the progress bar's text and its rate limiting, metrics.jsonl
// (NaN as null, resume truncation, torn lines) and atomic checkpoint
// directories (bit-exact round trip, replacement, stale writer directories,
// incomplete checkpoints, pruning).
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/progress.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;
using vlmc::test::read_file_bytes;
using vlmc::test::write_file_bytes;
using json = nlohmann::json;

namespace {

std::string read_back(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

// Where bars that are only asked to render() draw their final line, so the
// test output stays clean.
std::FILE* sink() {
  static std::FILE* f = std::fopen("/dev/null", "w");
  return f;
}

size_t count_lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

Checkpoint sample_checkpoint(float seed) {
  Checkpoint c;
  // Values chosen to catch any lossy path: a denormal, -0, NaN payload, extremes.
  c.model["proj.weight"] = Tensor::from_vector(
      std::vector<float>{seed, -0.0f, 1e-45f, 3.4028235e38f, std::nanf("7"), -1.5f}, {2, 3});
  c.model["proj.bias"] = Tensor::from_vector(std::vector<float>{seed * 2, 0.25f}, {2});
  c.model["pos_ids"] = Tensor::from_vector(
      std::vector<int64_t>{INT64_MIN, -1, 0, INT64_MAX}, {4});
  c.optimizer["proj.weight.exp_avg"] = Tensor::from_vector(std::vector<float>{seed, 1, 2, 3, 4, 5}, {2, 3});
  c.state = {{"step", static_cast<int64_t>(seed)},
             {"stage", "stage1"},
             {"rng", {{"seed", 1234}, {"offset", 9007199254740993LL}}},
             {"config", {{"lr", 1e-3}, {"name", "run \"a\"\n"}}}};
  return c;
}

}  // namespace

// ------------------------------------------------------------------ progress --

TEST_CASE("progress render shows bar, counts, stats and ETA", "[progress]") {
  ProgressBar bar("stage1", 400, 0, sink(), false);
  const std::string s = bar.render(120, {2.34561, 9.87e-4, 12345.0}, 36.0);
  // 120/400 of 20 cells = 6 filled; 280 steps left at 120 steps / 36 s = 84 s.
  CHECK(s == "stage1 [######..............] 120/400 loss 2.3456 lr 9.87e-04 tok/s 12.3k ETA 1m24s");
  CHECK(s.size() <= ProgressBar::kMaxColumns);

  CHECK(bar.render(0, {}, 0.0) == "stage1 [....................] 0/400 loss nan ETA --");
  CHECK(bar.render(400, {0.5, NAN, 850.0}, 99.0) ==
        "stage1 [####################] 400/400 loss 0.5000 tok/s 850 ETA 0s");
  CHECK(bar.render(1, {INFINITY}, 1.0).find("loss inf ") != std::string::npos);
  CHECK(bar.render(1, {-INFINITY}, 1.0).find("loss -inf ") != std::string::npos);
  CHECK(bar.render(1, {NAN, 1e-3, 2.5e6}, 1.0).find("loss nan lr 1.00e-03 tok/s 2.5M ") != std::string::npos);
}

TEST_CASE("progress ETA counts only the steps done since a resume", "[progress]") {
  ProgressBar bar("stage2", 1000, 900, sink(), false);
  // 50 steps in 10 s since the resume at 900: 50 left take 10 s more. Counting
  // from 0 would claim 950 steps in 10 s and an ETA of 1 s.
  CHECK_THAT(bar.render(950, {1.0}, 10.0), Catch::EndsWith("950/1000 loss 1.0000 ETA 10s"));
  CHECK_THAT(bar.render(900, {1.0}, 10.0), Catch::EndsWith("ETA --"));
}

TEST_CASE("progress long labels and absurd values stay under 120 columns", "[progress]") {
  ProgressBar bar(std::string(200, 'x'), INT64_MAX / 2, 0, sink(), false);
  const std::string s = bar.render(INT64_MAX / 4, {-1e300, 1e-300, 1e30}, 1e-9);
  CHECK(s.size() <= ProgressBar::kMaxColumns);
  CHECK(s.rfind(std::string(ProgressBar::kMaxLabel - 3, 'x') + "... [", 0) == 0);
}

TEST_CASE("progress format_duration", "[progress]") {
  CHECK(ProgressBar::format_duration(0) == "0s");
  CHECK(ProgressBar::format_duration(42.4) == "42s");
  CHECK(ProgressBar::format_duration(59.6) == "1m00s");
  CHECK(ProgressBar::format_duration(185) == "3m05s");
  CHECK(ProgressBar::format_duration(3720) == "1h02m");
  CHECK(ProgressBar::format_duration(90000) == "25h00m");
  CHECK(ProgressBar::format_duration(-1) == "?");
  CHECK(ProgressBar::format_duration(NAN) == "?");
}

TEST_CASE("progress rejects bad arguments", "[progress]") {
  REQUIRE_THROWS_WITH(ProgressBar("s", 0), Catch::Contains("total_steps must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(ProgressBar("s", 10, 11), Catch::Contains("start_step 11 is outside [0, 10]"));
}

TEST_CASE("progress off a TTY prints only rate-limited lines and the final one", "[progress]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    ProgressBar bar("stage1", 50, 0, f, std::nullopt, 1e9);  // a tmpfile is not a TTY
    for (int64_t i = 1; i <= 50; ++i) bar.update(i, {1.0 / static_cast<double>(i), 1e-3, 100.0});
    bar.finish();
    bar.finish();  // idempotent
  }                // and the destructor adds nothing
  const std::string out = read_back(f);
  std::fclose(f);
  CHECK(count_lines(out) == 1);
  CHECK(out.find('\r') == std::string::npos);
  CHECK_THAT(out, Catch::StartsWith("stage1 [####################] 50/50 loss 0.0200 lr 1.00e-03 tok/s 100 took "));
}

TEST_CASE("progress interrupted by an exception says it stopped, not how long it took", "[progress]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  try {
    ProgressBar bar("stage2", 50, 0, f, std::nullopt, 1e9);
    bar.update(7, {0.5, 1e-3, 100.0});
    throw std::runtime_error("NaN loss");
  } catch (const std::runtime_error&) {
  }
  const std::string out = read_back(f);
  std::fclose(f);
  CHECK(count_lines(out) == 1);
  CHECK_THAT(out, Catch::StartsWith("stage2 [##") && Catch::Contains(" 7/50 loss 0.5000") &&
                      Catch::Contains("stopped after ") && !Catch::Contains("took"));
}

TEST_CASE("progress off a TTY with no rate limit prints every update", "[progress]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    ProgressBar bar("s", 3, 0, f, false, 0.0);
    for (int64_t i = 1; i <= 3; ++i) bar.update(i, {1.0});
  }  // the destructor prints the final line
  const std::string out = read_back(f);
  std::fclose(f);
  CHECK(count_lines(out) == 4);
  CHECK(out.find("1/3 loss") != std::string::npos);
  CHECK(out.find("3/3 loss 1.0000 took") != std::string::npos);
}

TEST_CASE("progress on a TTY redraws one line with carriage returns", "[progress]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    ProgressBar bar("s", 5, 0, f, true);
    for (int64_t i = 1; i <= 5; ++i) bar.update(i, {1.0});
  }
  const std::string out = read_back(f);
  std::fclose(f);
  CHECK(count_lines(out) == 1);  // only the final line ends with a newline
  CHECK(out.back() == '\n');
  CHECK(out.front() == '\r');
  CHECK(out.find("5/5 loss 1.0000 took") != std::string::npos);
}

// ------------------------------------------------------------------- metrics --

TEST_CASE("metrics log writes one parseable line per record with NaN as null", "[metrics]") {
  TempDir dir("run_artifacts");
  const std::string path = dir.file("runs/demo/metrics.jsonl");  // parents are created
  {
    MetricsLog log(path);
    log.write({{"step", 1}, {"loss", 2.5}, {"note", "two\nlines"}});
    log.write({{"step", 2}, {"loss", NAN}, {"grad", {{"norm", INFINITY}}}, {"lrs", {1e-3, -INFINITY}}});
    // Flushed per line: readable while the log is still open.
    CHECK(MetricsLog::read_all(path).size() == 2);
    REQUIRE_THROWS_WITH(log.write(json::array({1, 2})), Catch::Contains("must be a JSON object"));
  }
  const std::string text = read_file_bytes(path);
  CHECK(count_lines(text) == 2);
  const auto recs = MetricsLog::read_all(path);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0]["note"] == "two\nlines");
  CHECK(recs[1]["loss"].is_null());
  CHECK(recs[1]["grad"]["norm"].is_null());
  CHECK(recs[1]["lrs"][0] == 1e-3);
  CHECK(recs[1]["lrs"][1].is_null());
  {
    MetricsLog again(path);  // appends
    again.write({{"step", 3}});
  }
  CHECK(MetricsLog::read_all(path).size() == 3);
}

TEST_CASE("metrics truncate_for_resume keeps the chosen records and drops a torn last line", "[metrics]") {
  TempDir dir("run_artifacts");
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    for (int s = 1; s <= 6; ++s) log.write({{"step", s}, {"loss", 1.0 / s}});
  }
  // A crash in the middle of the seventh write.
  std::ofstream(path, std::ios::app | std::ios::binary) << "{\"step\": 7, \"lo";
  CHECK(MetricsLog::read_all(path).size() == 6);

  MetricsLog::truncate_for_resume(path, [](const json& r) { return r["step"].get<int>() <= 4; });
  const auto recs = MetricsLog::read_all(path);
  REQUIRE(recs.size() == 4);
  CHECK(recs.back()["step"] == 4);
  CHECK(read_file_bytes(path).find("lo\n") == std::string::npos);
  CHECK(read_file_bytes(path).back() == '\n');
  // No temporary file is left beside it.
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  // Resuming appends from there.
  { MetricsLog(path).write({{"step", 5}}); }
  CHECK(MetricsLog::read_all(path).size() == 5);

  // A missing file stays missing.
  MetricsLog::truncate_for_resume(dir.file("absent.jsonl"), [](const json&) { return true; });
  CHECK_FALSE(fs::exists(dir.file("absent.jsonl")));
}

TEST_CASE("metrics a torn middle line is an error naming the file and line", "[metrics]") {
  TempDir dir("run_artifacts");
  const std::string path = dir.file("metrics.jsonl");
  write_file_bytes(path, "{\"step\":1}\n{\"step\":2, \"lo\n{\"step\":3}\n");
  REQUIRE_THROWS_WITH(MetricsLog::read_all(path), Catch::Contains(path + ":2:"));
  const std::string before = read_file_bytes(path);
  REQUIRE_THROWS_WITH(MetricsLog::truncate_for_resume(path, [](const json&) { return true; }),
                      Catch::Contains(path + ":2:"));
  CHECK(read_file_bytes(path) == before);  // untouched on error

  REQUIRE_THROWS_WITH(MetricsLog::read_all(dir.file("nope.jsonl")), Catch::Contains("nope.jsonl"));
}

TEST_CASE("metrics reopening a log that ends in a torn line starts a fresh line", "[metrics]") {
  TempDir dir("run_artifacts");
  const std::string path = dir.file("metrics.jsonl");
  write_file_bytes(path, "{\"step\":1}\n{\"step\":2,");
  { MetricsLog(path).write({{"step", 3}}); }
  CHECK(read_file_bytes(path) == "{\"step\":1}\n{\"step\":2,\n{\"step\":3}\n");
  // The torn line is now in the middle: reading says so rather than guessing.
  REQUIRE_THROWS_WITH(MetricsLog::read_all(path), Catch::Contains(":2:"));
}

TEST_CASE("metrics log names the path it cannot open", "[metrics]") {
  TempDir dir("run_artifacts");
  write_file_bytes(dir.file("file"), "x");
  REQUIRE_THROWS_WITH(MetricsLog(dir.file("file/metrics.jsonl")), Catch::Contains(dir.file("file/metrics.jsonl")));
}

// ---------------------------------------------------------------- checkpoint --

TEST_CASE("checkpoint save and load round-trip tensors bit-exactly and the state", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const Checkpoint c = sample_checkpoint(400);
  save_checkpoint(dir.file("ckpt"), "stage1-step000400", c);
  const std::string path = dir.file("ckpt/stage1-step000400");
  REQUIRE(is_checkpoint(path));
  const Checkpoint back = load_checkpoint(path);
  REQUIRE(back.model.size() == c.model.size());
  for (const auto& [name, t] : c.model) {
    INFO(name);
    REQUIRE(back.model.count(name) == 1);
    CHECK(same_bytes(back.model.at(name), t));
  }
  REQUIRE(back.optimizer.size() == 1);
  CHECK(same_bytes(back.optimizer.at("proj.weight.exp_avg"), c.optimizer.at("proj.weight.exp_avg")));
  CHECK(back.state == c.state);
  CHECK(back.state["rng"]["offset"].get<int64_t>() == 9007199254740993LL);  // not rounded through a double
  // Nothing hidden is left behind.
  CHECK(std::distance(fs::directory_iterator(dir.file("ckpt")), fs::directory_iterator{}) == 1);
}

TEST_CASE("checkpoint with an empty optimizer map", "[checkpoint]") {
  TempDir dir("run_artifacts");
  Checkpoint c = sample_checkpoint(1);
  c.optimizer.clear();
  save_checkpoint(dir.path.string(), "a", c);
  CHECK(load_checkpoint(dir.file("a")).optimizer.empty());
}

TEST_CASE("checkpoint replacing an existing one", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  save_checkpoint(root, "latest", sample_checkpoint(1));
  save_checkpoint(root, "latest", sample_checkpoint(2));
  const Checkpoint back = load_checkpoint(root + "/latest");
  CHECK(back.state["step"] == 2);
  CHECK(same_bytes(back.model.at("proj.bias"), sample_checkpoint(2).model.at("proj.bias")));
  CHECK(list_checkpoints(root) == std::vector<std::string>{"latest"});
  CHECK(std::distance(fs::directory_iterator(root), fs::directory_iterator{}) == 1);
}

TEST_CASE("checkpoint a stale tmp dir is ignored by readers and cleaned by the next save", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  save_checkpoint(root, "stage1-step000100", sample_checkpoint(100));
  // A crashed writer (pid far above any pid_max) left a complete-looking tmp
  // dir and a partial one.
  const std::string stale = root + "/.stage1-step000200.tmp-99999999";
  save_checkpoint(root + "/scratch", "x", sample_checkpoint(200));
  fs::rename(root + "/scratch/x", stale);
  fs::remove_all(root + "/scratch");
  fs::create_directories(root + "/.stage1-step000300.tmp-99999998");
  CHECK(list_checkpoints(root) == std::vector<std::string>{"stage1-step000100"});

  save_checkpoint(root, "stage1-step000200", sample_checkpoint(200));
  CHECK_FALSE(fs::exists(stale));
  CHECK_FALSE(fs::exists(root + "/.stage1-step000300.tmp-99999998"));
  CHECK(list_checkpoints(root) == std::vector<std::string>{"stage1-step000100", "stage1-step000200"});
}

TEST_CASE("checkpoint an old dir left between the two renames is restored by the next save", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  save_checkpoint(root, "latest", sample_checkpoint(5));
  // The fallback path crashed after moving the old checkpoint aside.
  fs::rename(root + "/latest", root + "/.latest.old-99999999");
  CHECK(list_checkpoints(root).empty());
  save_checkpoint(root, "other", sample_checkpoint(6));
  CHECK(list_checkpoints(root) == std::vector<std::string>{"latest", "other"});
  CHECK(load_checkpoint(root + "/latest").state["step"] == 5);
}

TEST_CASE("checkpoint missing state.json is not listed and loading names the file", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  save_checkpoint(root, "stage1-step000100", sample_checkpoint(100));
  save_checkpoint(root, "stage1-step000200", sample_checkpoint(200));
  fs::remove(root + "/stage1-step000200/state.json");
  CHECK_FALSE(is_checkpoint(root + "/stage1-step000200"));
  CHECK(list_checkpoints(root) == std::vector<std::string>{"stage1-step000100"});
  REQUIRE_THROWS_WITH(load_checkpoint(root + "/stage1-step000200"),
                      Catch::Contains(root + "/stage1-step000200") && Catch::Contains("state.json is missing"));
  REQUIRE_THROWS_WITH(load_checkpoint(root + "/nothing"), Catch::Contains("does not exist"));

  write_file_bytes(root + "/stage1-step000100/state.json", "{\"step\": 1");
  REQUIRE_THROWS_WITH(load_checkpoint(root + "/stage1-step000100"),
                      Catch::Contains("state.json is corrupt"));
  save_checkpoint(root, "stage1-step000100", sample_checkpoint(100));
  write_file_bytes(root + "/stage1-step000100/model.safetensors", "garbage");
  REQUIRE_THROWS_WITH(load_checkpoint(root + "/stage1-step000100"),
                      Catch::Contains("stage1-step000100': model.safetensors is corrupt: its checksum is"));
}

TEST_CASE("checkpoint tensor files are checked against their CRC-32, and NaNs are found by name", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  save_checkpoint(root, "stage1-step000300", sample_checkpoint(300));
  const std::string path = root + "/stage1-step000300";
  const Checkpoint back = load_checkpoint(path);
  CHECK(!back.state.contains("checksums"));  // verified, then left out of the state handed back
  const json on_disk = json::parse(read_file_bytes(path + "/state.json"));
  CHECK(on_disk.at("checksums").at("model.safetensors").get<std::string>().rfind("crc32:", 0) == 0);
  // One flipped bit in the optimizer's data: an error naming the file.
  const std::string opt = path + "/optimizer.safetensors";
  std::string bytes = read_file_bytes(opt);
  bytes[bytes.size() - 3] ^= 0x10;
  write_file_bytes(opt, bytes);
  REQUIRE_THROWS_WITH(load_checkpoint(path), Catch::Contains("optimizer.safetensors is corrupt") &&
                                                 Catch::Contains("state.json recorded crc32:"));
  // A checkpoint from before checksums (no "checksums" in state.json) loads as it is.
  save_checkpoint(root, "stage1-step000400", sample_checkpoint(400));
  json state = json::parse(read_file_bytes(root + "/stage1-step000400/state.json"));
  state.erase("checksums");
  write_file_bytes(root + "/stage1-step000400/state.json", state.dump());
  const Checkpoint old = load_checkpoint(root + "/stage1-step000400");
  CHECK(old.model.size() == 3);
  // sample_checkpoint holds a NaN on purpose (the bytes round-trip); resuming
  // or evaluating refuses it by name.
  CHECK(nonfinite_in(old) == "model.safetensors tensor 'proj.weight'");
  Checkpoint finite = sample_checkpoint(1);
  finite.model["proj.weight"] = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(nonfinite_in(finite).empty());
  finite.optimizer["proj.weight.exp_avg"] = Tensor::from_vector(std::vector<float>{1, 2, INFINITY, 4, 5, 6}, {2, 3});
  CHECK(nonfinite_in(finite) == "optimizer.safetensors tensor 'proj.weight.exp_avg'");
}

TEST_CASE("checkpoint rejects names that are not plain directory names", "[checkpoint]") {
  TempDir dir("run_artifacts");
  for (const char* bad : {"", ".hidden", "a/b", ".."})
    REQUIRE_THROWS_WITH(save_checkpoint(dir.path.string(), bad, sample_checkpoint(1)),
                        Catch::Contains("invalid checkpoint name"));
  Checkpoint c = sample_checkpoint(1);
  c.model["undefined"] = Tensor();
  REQUIRE_THROWS_WITH(save_checkpoint(dir.path.string(), "u", c), Catch::Contains("'undefined' is undefined"));
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 0);  // no tmp left
}

TEST_CASE("checkpoint prune keeps the newest of a prefix", "[checkpoint]") {
  TempDir dir("run_artifacts");
  const std::string root = dir.file("ckpt");
  for (int s : {100, 200, 300, 400}) save_checkpoint(root, "stage1-step000" + std::to_string(s), sample_checkpoint(s));
  save_checkpoint(root, "stage2-step000100", sample_checkpoint(1));
  prune_checkpoints(root, "stage1-", 2);
  CHECK(list_checkpoints(root) ==
        std::vector<std::string>{"stage1-step000300", "stage1-step000400", "stage2-step000100"});
  prune_checkpoints(root, "stage1-", 5);  // fewer than keep_last: nothing happens
  CHECK(list_checkpoints(root).size() == 3);
  CHECK(std::distance(fs::directory_iterator(root), fs::directory_iterator{}) == 3);
  CHECK(list_checkpoints(dir.file("absent")).empty());
}
