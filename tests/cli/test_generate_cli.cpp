// End-to-end tests of `vlmc generate` on tests/golden/hf_models/llava_chat: a tiny random LLaVA
// saved by transformers with a SentencePiece tokenizer and a CLIPImageProcessor. The prompt's ids,
// the pixel values of a JPEG, the prompt's logits and the 12-token greedy continuation must be
// transformers' (make_golden_hf_models.py, chat()).
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/check.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

const std::string kGolden = VLMC_GOLDEN_DIR;
const std::string kModel = kGolden + "/hf_models/llava_chat";
const std::string kImage = kGolden + "/images/photo420.jpg";
const std::string kPrompt = "USER: <image>\nWhat is in the picture? ASSISTANT:";

const std::map<std::string, vlmc::Tensor>& expected() {
  static const auto e = vlmc::io::load_safetensors(kGolden + "/hf_models/expected.safetensors");
  return e;
}

std::vector<int64_t> ids_of(const std::string& name) {
  const vlmc::Tensor t = expected().at(name).contiguous();
  const auto* p = static_cast<const int64_t*>(t.data_ptr());
  return std::vector<int64_t>(p, p + t.numel());
}

}  // namespace

TEST_CASE("vlmc generate answers as transformers does: ids, pixels, prompt logits, greedy tokens and text",
          "[cli][generation]") {
  TempDir tmp("generate_cli");
  const std::string logits = tmp.file("logits.safetensors");
  const Result r = run_cli({"generate", "--model", kModel, "--image", kImage, "--prompt", kPrompt,
                            "--max-new-tokens", "12", "--json", "--logits-out", logits},
                           tmp.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("input_ids").get<std::vector<int64_t>>() == ids_of("llava_chat.input_ids"));
  CHECK(j.at("output_ids").get<std::vector<int64_t>>() == ids_of("llava_chat.greedy_ids"));
  const auto meta = vlmc::io::load_safetensors_metadata(kGolden + "/hf_models/expected.safetensors");
  CHECK(j.at("text").get<std::string>() == meta.at("llava_chat.text"));
  CHECK(j.at("tokens_per_s").get<double>() > 0);
  const auto written = vlmc::io::load_safetensors(logits);
  CHECK(vlmc::test::rel_error(written.at("logits"), expected().at("llava_chat.prompt_logits")) < 1e-4);
  CHECK(vlmc::test::max_abs_error(written.at("pixel_values"), expected().at("llava_chat.pixel_values")) <= 0.02);
}

TEST_CASE("vlmc generate streams the text and takes the processor's expanded <image> form", "[cli][generation]") {
  TempDir tmp("generate_cli_stream");
  std::string expanded = kPrompt;
  std::string nine;
  for (int i = 0; i < 9; ++i) nine += "<image>";  // 3x3 patches of the tiny tower
  expanded.replace(expanded.find("<image>"), 7, nine);
  const Result r = run_cli({"generate", "--model", kModel, "--image", kImage, "--prompt", expanded,
                            "--max-new-tokens", "12", "--json"},
                           tmp.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.out).at("output_ids").get<std::vector<int64_t>>() == ids_of("llava_chat.greedy_ids"));
  const Result streamed =
      run_cli({"generate", "--model", kModel, "--image", kImage, "--prompt", kPrompt, "--max-new-tokens", "12"},
              tmp.path);
  REQUIRE(streamed.status == 0);
  const auto meta = vlmc::io::load_safetensors_metadata(kGolden + "/hf_models/expected.safetensors");
  CHECK(streamed.out == meta.at("llava_chat.text") + "\n");
  CHECK_THAT(streamed.err, Catch::Contains("tokens/s"));
}

TEST_CASE("vlmc generate --prefill-precision bf16 runs the prompt's products in bf16, near transformers' f32 logits",
          "[cli][generation]") {
  TempDir tmp("generate_cli_bf16");
  const std::string logits = tmp.file("logits.safetensors");
  const Result r = run_cli({"generate", "--model", kModel, "--image", kImage, "--prompt", kPrompt,
                            "--max-new-tokens", "12", "--json", "--logits-out", logits, "--prefill-precision", "bf16"},
                           tmp.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.out).at("output_ids").get<std::vector<int64_t>>().size() == 12);
  // Every product's operands rounded to bf16 (8 bits of mantissa), through the
  // tiny tower and the prompt's forward: near the f32 logits, and not equal to them.
  const auto written = vlmc::io::load_safetensors(logits);
  const double error = vlmc::test::rel_error(written.at("logits"), expected().at("llava_chat.prompt_logits"));
  CHECK(error < 5e-2);
  CHECK(error > 1e-5);
}

TEST_CASE("vlmc generate: bad input is one clear error and nothing is written", "[cli][generation]") {
  TempDir tmp("generate_cli_bad");
  const std::string logits = tmp.file("logits.safetensors");
  SECTION("more <image> tags than images") {
    const Result r = run_cli({"generate", "--model", kModel, "--image", kImage, "--prompt",
                              "<image> and <image>", "--logits-out", logits},
                             tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("2 <image> placeholders but 1 --image file was given"));
  }
  SECTION("an image that is not an image") {
    const std::string text = tmp.write("notes.jpg", "just text");
    const Result r = run_cli({"generate", "--model", kModel, "--image", text, "--prompt", kPrompt, "--logits-out",
                              logits},
                             tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("notes.jpg"));
  }
  SECTION("a precision it does not have") {
    const Result r =
        run_cli({"generate", "--model", kModel, "--prompt", "hi", "--prefill-precision", "f16"}, tmp.path);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Catch::Contains("--prefill-precision"));
  }
  SECTION("a model folder without weights") {
    const Result r = run_cli({"generate", "--model", tmp.path.string(), "--prompt", "hi"}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("config.json"));
  }
  CHECK_FALSE(fs::exists(logits));
}
