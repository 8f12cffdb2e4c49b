// End-to-end tests of `vlmc connector run` and `vlmc connector bench`: they
// spawn the real binary (VLMC_CLI_PATH) and compare what `run` writes with
// the PyTorch-made cases of tests/golden/connector_run (written by
// tests/golden/make_golden_connector_run.py from the seed's own classes).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "modules/connector_registry.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"
#include "tests/support/check.h"

using namespace vlmc;
using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

const fs::path kCases = fs::path(VLMC_GOLDEN_DIR) / "connector_run";

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(kCases))
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The flags of one case, as its expected file records them.
std::vector<std::string> case_args(const fs::path& dir, bool& with_grad) {
  const auto meta = io::load_safetensors_metadata((dir / "expected.safetensors").string());
  with_grad = meta.at("grad") == "1";
  std::vector<std::string> args = {"connector", "run"};
  for (const auto& a : nlohmann::json::parse(meta.at("args"))) args.push_back(a.get<std::string>());
  args.insert(args.end(), {"--weights", (dir / "weights.safetensors").string(), "--input",
                           (dir / "input.safetensors").string()});
  if (with_grad) args.insert(args.end(), {"--grad-output", (dir / "grad_output.safetensors").string()});
  return args;
}

std::string keys_of(const std::map<std::string, Tensor>& m) {
  std::string out;
  for (const auto& [k, v] : m) out += k + " ";
  return out;
}

}  // namespace

TEST_CASE("connector run matches the PyTorch-made cases", "[cli]") {
  const std::vector<std::string> names = case_names();
  REQUIRE(names.size() >= 2);
  TempDir scratch("cli_run");
  for (const std::string& name : names) {
    DYNAMIC_SECTION(name) {
      const fs::path dir = kCases / name;
      bool with_grad = false;
      std::vector<std::string> args = case_args(dir, with_grad);
      const fs::path out = scratch.path / (name + ".safetensors");
      args.insert(args.end(), {"--out", out.string()});
      const Result r = run_cli(args, scratch.path);
      INFO("stderr: " << r.err);
      REQUIRE(r.status == 0);

      const auto actual = io::load_safetensors(out.string());
      const auto expected = io::load_safetensors((dir / "expected.safetensors").string());
      // The same names: output, every gradient, every buffer, nothing else.
      CHECK(keys_of(actual) == keys_of(expected));
      for (const auto& [key, want] : expected) {
        INFO(name << ": " << key);
        const auto it = actual.find(key);
        if (it == actual.end()) continue;  // reported by the key comparison
        REQUIRE(it->second.shape() == want.shape());
        REQUIRE(it->second.dtype() == want.dtype());
        if (want.dtype() == DType::i64) {
          CHECK(it->second.to_vector<int64_t>() == want.to_vector<int64_t>());
        } else if (test::max_abs_error(want, Tensor::zeros(want.shape())) < 1e-6) {
          // Zero in exact arithmetic, rounding noise in both (a conv bias
          // before a training-mode BatchNorm: the batch mean cancels it), or
          // the zeros of a parameter off the graph: compare absolutely.
          CHECK(test::max_abs_error(it->second, want) < 1e-6);
        } else {
          CHECK_REL(it->second, want, 2e-5);
        }
      }
    }
  }
}

TEST_CASE("connector run reports missing files and tensors by name", "[cli]") {
  TempDir scratch("cli_errors");
  const fs::path dir = kCases / "mlp_train";
  bool with_grad = false;
  const std::vector<std::string> good = case_args(dir, with_grad);
  REQUIRE(with_grad);
  const fs::path out = scratch.path / "out.safetensors";

  // Replaces the value of `flag` in the good command line.
  const auto with = [&](const std::string& flag, const std::string& value) {
    std::vector<std::string> args = good;
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == flag) args[i + 1] = value;
    args.insert(args.end(), {"--out", out.string()});
    return args;
  };

  SECTION("a missing weights file") {
    const Result r = run_cli(with("--weights", (scratch.path / "nope.safetensors").string()), scratch.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("--weights") && Catch::Contains("nope.safetensors"));
  }
  SECTION("an input file without visual_features") {
    const Result r = run_cli(with("--input", (dir / "grad_output.safetensors").string()), scratch.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("--input") && Catch::Contains("visual_features"));
  }
  SECTION("a gradient file without grad_output") {
    const Result r = run_cli(with("--grad-output", (dir / "input.safetensors").string()), scratch.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("grad_output"));
  }
  SECTION("weights of another connector") {
    const Result r = run_cli(with("--weights", (kCases / "linear_train" / "weights.safetensors").string()),
                             scratch.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("mlp.0.weight") && Catch::Contains("proj.weight"));
  }
  SECTION("a gradient of the wrong shape") {
    const Result r =
        run_cli(with("--grad-output", (kCases / "linear_train" / "grad_output.safetensors").string()),
                scratch.path);
    // linear_train's gradient is [2, 7, 10] like mlp_train's output: same shape,
    // so it must run; a dynamic case's [2, 9, 10] must not.
    CHECK(r.status == 0);
    fs::remove(out);
    const Result bad =
        run_cli(with("--grad-output", (kCases / "dynamic_target" / "grad_output.safetensors").string()),
                scratch.path);
    CHECK(bad.status != 0);
    CHECK_THAT(bad.err, Catch::Contains("grad_output") && Catch::Contains("[2,9,10]"));
  }
  SECTION("an unknown type") {
    std::vector<std::string> args = with("--type", "mlp3");
    const Result r = run_cli(args, scratch.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("mlp3"));
  }
  // None of the failures above may leave an output file behind.
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("connector bench prints one JSON object per line", "[cli]") {
  TempDir scratch("cli_bench");
  for (const char* type : {"mlp", "c-abstractor", "dynamic"}) {
    DYNAMIC_SECTION(type) {
      const Result r = run_cli({"connector", "bench", "--type", type, "--batch", "2", "--tokens", "16",
                                "--dim-vision", "8", "--dim-llm", "6", "--grid-size", "4", "--target-size", "2",
                                "--max-tokens", "9", "--threads", "1", "--repeats", "3", "--backward", "--json"},
                               scratch.path);
      INFO("stderr: " << r.err << "\nstdout: " << r.out);
      REQUIRE(r.status == 0);
      std::istringstream lines(r.out);
      std::string line;
      int count = 0;
      while (std::getline(lines, line)) {
        const auto row = nlohmann::json::parse(line);
        CHECK(row.at("type") == type);
        CHECK(row.at("median_ms").get<double>() > 0);
        CHECK(row.at("gflops").get<double>() > 0);
        CHECK(row.at("threads") == 1);
        CHECK(row.at("batch") == 2);
        CHECK(row.at("tokens") == 16);
        CHECK(row.at("backward") == true);
        CHECK(row.at("device") == "cpu");
        // dynamic keeps min(16, max-tokens 9); the grid connectors pool 4x4 to 2x2.
        const std::vector<int64_t> shape = row.at("output_shape");
        const int64_t kept = std::string(type) == "mlp" ? 16 : std::string(type) == "dynamic" ? 9 : 4;
        CHECK(shape == std::vector<int64_t>{2, kept, 6});
        ++count;
      }
      CHECK(count == 1);
    }
  }
}

TEST_CASE("connector bench's backward takes the gradient of sum(output) or a fixed random one", "[cli]") {
  TempDir scratch("cli_bench_grad");
  const auto bench = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"connector", "bench", "--type", "mlp", "--batch", "2", "--tokens", "16",
                                     "--dim-vision", "8", "--dim-llm", "6", "--threads", "1", "--repeats", "2",
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(args, scratch.path);
  };
  for (const auto& [extra, grad] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--backward"}, "sum"}, {{"--backward", "--grad", "random"}, "random"}, {{}, "none"}}) {
    const Result r = bench(extra);
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    const auto row = nlohmann::json::parse(r.out);
    CHECK(row.at("grad") == grad);
    CHECK(row.at("median_ms").get<double>() > 0);
  }
  const Result bad = bench({"--backward", "--grad", "ones"});
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Catch::Contains("ones"));
}

TEST_CASE("connector --help lists every flag with its default", "[cli]") {
  TempDir scratch("cli_help");
  const Result run = run_cli({"connector", "run", "--help"}, scratch.path);
  CHECK(run.status == 0);
  for (const char* flag : {"--type", "--weights", "--input", "--out", "--grad-output", "--eval", "--device",
                           "--dim-vision", "--dim-llm", "--dim-hidden", "--grid-size", "--target-size",
                           "--num-conv-layers", "--max-tokens", "--min-tokens", "--max-visual-tokens",
                           "--target-tokens"})
    CHECK_THAT(run.out, Catch::Contains(flag));
  CHECK_THAT(run.out, Catch::Contains("1024") && Catch::Contains("4096") && Catch::Contains("576"));
  const Result bench = run_cli({"connector", "bench", "--help"}, scratch.path);
  CHECK(bench.status == 0);
  for (const char* flag : {"--batch", "--tokens", "--backward", "--grad", "--threads", "--json", "--repeats"})
    CHECK_THAT(bench.out, Catch::Contains(flag));
}

TEST_CASE("connector list prints the registry, and --type accepts exactly its names", "[cli]") {
  TempDir scratch("cli_list");
  const Result list = run_cli({"connector", "list"}, scratch.path);
  CHECK(list.status == 0);
  CHECK(list.out == nn::connector_table_markdown());
  const Result unknown = run_cli({"connector", "bench", "--type", "qformer"}, scratch.path);
  CHECK(unknown.status != 0);
  CHECK_THAT(unknown.err, Catch::Contains("qformer"));
}

TEST_CASE("connector run and bench refuse sizes that overflow, and never abort", "[cli]") {
  TempDir scratch("cli_sizes");
  // A 102-byte input whose empty batch holds 2^40 tokens of width 12: the
  // dynamic connector once aborted inside an OpenMP region (exit 134).
  const fs::path input = scratch.path / "huge_tokens.safetensors";
  {
    const std::string header =
        R"({"visual_features":{"dtype":"F32","shape":[0,1099511627776,12],"data_offsets":[0,0]}})";
    std::ofstream f(input, std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header;
  }
  const Result dynamic = run_cli({"connector", "run", "--type", "dynamic", "--dim-vision", "12", "--dim-llm", "10",
                                  "--weights", (kCases / "dynamic_target" / "weights.safetensors").string(), "--input",
                                  input.string(), "--out", (scratch.path / "out.safetensors").string()},
                                 scratch.path);
  CHECK(dynamic.status == 0);  // an empty batch is a valid input: an empty output
  // Element counts that do not fit in int64: an error naming the shape, not a
  // segfault or a run "at 3e18 GFLOP/s".
  const Result width = run_cli({"connector", "bench", "--type", "linear", "--dim-vision", "4611686018427387904",
                                "--dim-llm", "16", "--batch", "1", "--tokens", "4"},
                               scratch.path);
  CHECK(width.status == 1);
  CHECK_THAT(width.err, Catch::Contains("shape [16,4611686018427387904] has more elements than int64 can count"));
  const Result batch = run_cli({"connector", "bench", "--type", "linear", "--batch", "4611686018427387904",
                                "--tokens", "4", "--dim-vision", "16", "--dim-llm", "16"},
                               scratch.path);
  CHECK(batch.status == 1);
  CHECK_THAT(batch.err, Catch::Contains("[4611686018427387904,4,16] has more elements than int64 can count"));
}
