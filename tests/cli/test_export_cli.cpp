// End-to-end tests of `vlmc export`: the real binary on the golden Hugging Face folders
// (tests/golden/hf_models). That transformers loads what it writes is checked by
// tests/golden/check_hf_export.py; here: it writes, reports, and refuses cleanly.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {
const std::string kDir = std::string(VLMC_GOLDEN_DIR) + "/hf_models";
}

TEST_CASE("vlmc export writes a Hugging Face folder and says what it loaded", "[cli][hf_checkpoint]") {
  TempDir tmp("export_cli");
  const std::string out = tmp.file("llava-out");
  const Result r = run_cli({"export", "--model", kDir + "/llava_sharded", "--out", out}, tmp.path);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("LlavaForConditionalGeneration (transformers <= 4.51 keys)") &&
                        Catch::Contains("from 3 files"));
  CHECK(fs::is_regular_file(out + "/config.json"));
  CHECK(fs::is_regular_file(out + "/model.safetensors"));
  CHECK_THAT(read_text(out + "/config.json"), Catch::Contains("\"image_seq_length\": 9"));
}

TEST_CASE("vlmc export refuses an existing folder and a broken model, writing nothing", "[cli][hf_checkpoint]") {
  TempDir tmp("export_cli_bad");
  const std::string existing = tmp.file("existing");
  fs::create_directories(existing);
  Result r = run_cli({"export", "--model", kDir + "/llama", "--out", existing}, tmp.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("already exists"));
  CHECK(fs::is_empty(existing));
  const std::string out = tmp.file("out");
  r = run_cli({"export", "--model", kDir + "/llava_original", "--out", out}, tmp.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("--vision-tower"));
  CHECK_FALSE(fs::exists(out));
}
