// End-to-end tests of `vlmc tokenize`: the real binary (VLMC_CLI_PATH) on the golden tokenizer
// folders of tests/golden/tokenizer, against the ids transformers' LlamaTokenizer gave
// (golden.json, written by tests/golden/make_golden_tokenizer.py).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

const fs::path kDir = fs::path(VLMC_GOLDEN_DIR) / "tokenizer";

// The golden case of `folder` and `text`.
nlohmann::json golden_case(const std::string& folder, const std::string& text) {
  std::ifstream in(kDir / "golden.json");
  REQUIRE(in);
  const nlohmann::json g = nlohmann::json::parse(in);
  for (const auto& c : g.at("cases"))
    if (c.at("kind") == "text" && c.at("folder") == folder && c.at("text") == text) return c;
  FAIL("no golden case for " << folder << " / " << text);
  return {};
}

std::string spaced(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "\n";
}

}  // namespace

TEST_CASE("vlmc tokenize prints LlamaTokenizer's ids", "[cli][tokenizer_sp]") {
  TempDir scratch("cli_tokenize");
  const std::string text = "USER: <image>\nWhat is shown in this image? ASSISTANT:";
  for (const std::string folder : {"legacy", "nonlegacy"}) {
    CAPTURE(folder);
    const auto c = golden_case(folder, text);
    const std::string model = (kDir / folder).string();

    Result r = run_cli({"tokenize", "--model", model, "--text", text}, scratch.path);
    REQUIRE(r.status == 0);
    CHECK(r.out == spaced(c.at("ids").get<std::vector<int64_t>>()));

    r = run_cli({"tokenize", "--model", model, "--text", text, "--no-special-tokens"}, scratch.path);
    REQUIRE(r.status == 0);
    CHECK(r.out == spaced(c.at("ids_no_special").get<std::vector<int64_t>>()));

    r = run_cli({"tokenize", "--model", model, "--text", text, "--json", "--image-token"}, scratch.path);
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("input_ids").get<std::vector<int64_t>>() == c.at("image_token_ids").get<std::vector<int64_t>>());
    CHECK(j.size() == 1);
  }
}

TEST_CASE("vlmc tokenize reports a folder without tokenizer.model", "[cli][tokenizer_sp]") {
  TempDir scratch("cli_tokenize_err");
  const Result r = run_cli({"tokenize", "--model", scratch.path.string(), "--text", "hi"}, scratch.path);
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::Contains((scratch.path / "tokenizer.model").string()) && Catch::Contains("not found"));
}
