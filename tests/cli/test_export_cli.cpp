// End-to-end tests of `vlmc export`: the real binary on the golden Hugging Face folders
// (tests/golden/hf_models). That transformers loads what it writes is checked by
// tests/golden/check_hf_export.py; here: it writes, reports, and refuses cleanly.
// `vlmc export --checkpoint` (a model of `vlmc train`) at the end: read back with
// load_pretrained against the run's own model (transformers: check_hf_export_checkpoint.py).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/io/tensor_io.h"
#include "modules/hf_checkpoint.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/check.h"
#include "tests/support/temp_dir.h"
#include "tests/support/toy_run.h"
#include "train/batches.h"
#include "train/checkpoint.h"
#include "train/config_schema.h"
#include "train/mosaic_models.h"

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

// ---- vlmc export --checkpoint: a model of `vlmc train` out (needs Debian's dataset-fashion-mnist) -------

namespace {

using vlmc::Tensor;
namespace train = vlmc::train;

// A checkpoint as the trainer writes it (model state + the run's config in
// state.json), of a toy run's freshly built models.
struct ToyCheckpoint {
  train::TrainConfig config;
  train::MosaicModels models;
  std::string dir;
};

ToyCheckpoint toy_checkpoint(const TempDir& tmp, const std::string& connector) {
  ToyCheckpoint out;
  out.config = vlmc::test::toy_run_config(tmp.path);
  out.config.connector = connector;
  train::ConfigSchema schema;
  train::register_train_config(schema, out.config);
  const train::Tokenizer tokenizer;
  out.models = train::build_models(out.config, tokenizer);
  out.models.llava->eval();
  train::Checkpoint ckpt;
  ckpt.model = out.models.state_dict();
  ckpt.state = {{"stage", "stage2"}, {"step", 4}, {"config", schema.to_json()}};
  train::save_checkpoint(tmp.file("checkpoints"), "3-stage2-step000004", ckpt);
  out.dir = tmp.file("checkpoints/3-stage2-step000004");
  return out;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }

}  // namespace

TEST_CASE("vlmc export --checkpoint writes a LLaVA folder that computes the run's logits",
          "[cli][export_checkpoint]") {
  for (const std::string connector : {"mlp2x_gelu", "mlp"}) {
    INFO("connector " << connector);
    TempDir tmp("export_ckpt");
    ToyCheckpoint toy = toy_checkpoint(tmp, connector);
    const std::string out = tmp.file("hf"), ref = tmp.file("reference.safetensors");
    const Result r = run_cli({"export", "--checkpoint", toy.dir, "--out", out, "--reference-out", ref}, tmp.path);
    INFO(r.err);
    REQUIRE(r.status == 0);

    const train::Tokenizer tokenizer;
    const int64_t V = tokenizer.vocab_size();
    vlmc::nn::PretrainedModel loaded = vlmc::nn::load_pretrained(out);
    REQUIRE(loaded.llava);
    CHECK(loaded.config.text.vocab_size == V + 1);
    CHECK(loaded.config.vision.num_channels == 3);
    CHECK(loaded.config.llava.image_token_index == V);
    CHECK(loaded.config.llava.vision_feature_layer == toy.config.vision_select_layer);

    // One evaluation mosaic and a question, as vlmc's own model and as the export read them.
    vlmc::Generator gen(7);
    const train::MosaicSet set = train::build_eval_mosaics(1, gen, toy.config.data_dir);
    const Tensor grey = train::encoder_pixels(set, {0});  // [1, 1, 56, 56]
    const Tensor rgb = vlmc::cat({grey, grey, grey}, 1);  // CLIPImageProcessor's three equal channels
    std::vector<int64_t> ids = tokenizer.encode("where is the bag? <image>", {.bos = true, .strict = true});
    const int64_t T = static_cast<int64_t>(ids.size());
    vlmc::NoGradGuard no_grad;
    const Tensor want = toy.models.llava->forward(Tensor::from_vector(ids, {1, T}), grey).logits;  // [1, L, V]
    for (int64_t& id : ids)
      if (id == train::kImageTokenId) id = V;
    const Tensor got = loaded.llava->forward(Tensor::from_vector(ids, {1, T}), rgb).logits;  // [1, L, V + 1]
    REQUIRE(got.shape() == vlmc::Shape{1, want.size(1), V + 1});
    CHECK(vlmc::test::rel_error(got.narrow(2, 0, V).contiguous(), want) <= 1e-5);
    CHECK(vlmc::test::max_abs_error(got.narrow(2, V, 1).contiguous(), vlmc::Tensor::zeros({1, want.size(1), 1})) == 0);

    // The reference sample holds vlmc's logits for its own prompt.
    const auto reference = vlmc::io::load_safetensors(ref);
    const auto meta = vlmc::io::load_safetensors_metadata(ref);
    const std::vector<int64_t> ref_ids = reference.at("input_ids").to_vector<int64_t>();
    REQUIRE(meta.count("prompt"));
    CHECK(ref_ids == tokenizer.encode(meta.at("prompt"), {.bos = true}));
    const Tensor ref_logits =
        toy.models.llava->forward(reference.at("input_ids").reshape({1, -1}), reference.at("pixel_values")).logits;
    CHECK(vlmc::test::rel_error(reference.at("logits"), ref_logits.select(0, 0).contiguous()) == 0);
    CHECK(reference.at("answer_ids").numel() >= 1);

    // tokenizer.json: a WordLevel model over the vocabulary + <image>, vlmc's splitting, <bos> added.
    const nlohmann::json tok = read_json(out + "/tokenizer.json");
    CHECK(tok["model"]["type"] == "WordLevel");
    CHECK(tok["model"]["unk_token"] == "<unk>");
    REQUIRE(tok["model"]["vocab"].size() == static_cast<size_t>(V + 1));
    for (int64_t i = 0; i < V; ++i) CHECK(tok["model"]["vocab"][tokenizer.token(i)] == i);
    CHECK(tok["model"]["vocab"]["<image>"] == V);
    REQUIRE(tok["added_tokens"].size() == 5);
    for (const auto& t : tok["added_tokens"]) CHECK(t["special"] == true);
    CHECK(tok["added_tokens"][4]["content"] == "<image>");
    CHECK(tok["pre_tokenizer"]["pretokenizers"][1]["pattern"]["Regex"] == "[:,?]");
    CHECK(tok["pre_tokenizer"]["pretokenizers"][1]["behavior"] == "Isolated");
    CHECK(tok["post_processor"]["single"][0]["SpecialToken"]["id"] == "<bos>");
    const nlohmann::json tok_config = read_json(out + "/tokenizer_config.json");
    CHECK(tok_config["tokenizer_class"] == "PreTrainedTokenizerFast");
    CHECK(tok_config["bos_token"] == "<bos>");
    CHECK(tok_config["model_max_length"] == toy.config.lm_max_position_embeddings);

    // preprocessor_config.json: the mosaic as it is, / 255, Fashion-MNIST's mean and std on 3 channels.
    const nlohmann::json pre = read_json(out + "/preprocessor_config.json");
    CHECK(pre["image_processor_type"] == "CLIPImageProcessor");
    CHECK(pre["do_resize"] == false);
    CHECK(pre["do_center_crop"] == false);
    CHECK(pre["rescale_factor"].get<double>() == Approx(1.0 / 255.0).epsilon(1e-15));
    CHECK(pre["image_mean"] == nlohmann::json({0.2860, 0.2860, 0.2860}));
    CHECK(pre["image_std"] == nlohmann::json({0.3530, 0.3530, 0.3530}));
    const nlohmann::json proc = read_json(out + "/processor_config.json");
    CHECK(proc["patch_size"] == toy.config.vision_patch_size);
    CHECK(proc["vision_feature_select_strategy"] == "default");
  }
}

TEST_CASE("vlmc export --format llava writes the connector as LLaVA's mm_projector file", "[cli][export_checkpoint]") {
  TempDir tmp("export_ckpt_llava");
  ToyCheckpoint toy = toy_checkpoint(tmp, "linear");
  const std::string out = tmp.file("projector");
  const Result r = run_cli({"export", "--checkpoint", toy.dir, "--format", "llava", "--out", out}, tmp.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto tensors = vlmc::io::load_safetensors(out + "/mm_projector.safetensors");
  REQUIRE(tensors.size() == 2);
  const Tensor weight = toy.models.llava->connector->state_dict().at("proj.weight");
  CHECK(vlmc::test::max_abs_error(tensors.at("model.mm_projector.weight"), weight) == 0);
  const nlohmann::json config = read_json(out + "/config.json");
  CHECK(config["mm_projector_type"] == "linear");
  CHECK(config["mm_hidden_size"] == toy.config.vision_hidden_size);
  CHECK(config["hidden_size"] == toy.config.lm_hidden_size);
}

TEST_CASE("vlmc export --checkpoint refuses what it cannot write, writing nothing", "[cli][export_checkpoint]") {
  TempDir tmp("export_ckpt_bad");
  SECTION("a connector transformers' LLaVA has not got") {
    ToyCheckpoint toy = toy_checkpoint(tmp, "downsample");
    const std::string out = tmp.file("hf");
    Result r = run_cli({"export", "--checkpoint", toy.dir, "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("2-layer MLP projector") && Catch::Contains("'downsample'") &&
                          Catch::Contains("--format llava"));
    CHECK_FALSE(fs::exists(out));
    r = run_cli({"export", "--checkpoint", toy.dir, "--format", "llava", "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("mlp{N}x_gelu") && Catch::Contains("'downsample'"));
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("an existing folder") {
    ToyCheckpoint toy = toy_checkpoint(tmp, "mlp2x_gelu");
    const std::string existing = tmp.file("existing");
    fs::create_directories(existing);
    for (const char* format : {"hf", "llava"}) {
      const Result r = run_cli({"export", "--checkpoint", toy.dir, "--format", format, "--out", existing}, tmp.path);
      CHECK(r.status == 1);
      CHECK_THAT(r.err, Catch::Contains("already exists"));
      CHECK(fs::is_empty(existing));
    }
  }
  SECTION("a corrupt checkpoint") {
    ToyCheckpoint toy = toy_checkpoint(tmp, "mlp2x_gelu");
    const std::string model = toy.dir + "/model.safetensors";
    {
      std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(fs::file_size(model) - 3));
      f.put('\x5a');  // a flipped weight byte: the CRC-32 state.json recorded no longer matches
    }
    const std::string out = tmp.file("hf");
    const Result r = run_cli({"export", "--checkpoint", toy.dir, "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("model.safetensors is corrupt"));
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("both or neither of --model and --checkpoint") {
    ToyCheckpoint toy = toy_checkpoint(tmp, "mlp2x_gelu");
    const std::string out = tmp.file("hf");
    Result r = run_cli({"export", "--checkpoint", toy.dir, "--model", kDir + "/llama", "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("exactly one of --model") && Catch::Contains("both were given"));
    r = run_cli({"export", "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("exactly one of --model"));
    r = run_cli({"export", "--model", kDir + "/llama", "--format", "llava", "--out", out}, tmp.path);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("--format and --reference-out are for --checkpoint"));
    CHECK_FALSE(fs::exists(out));
  }
}
