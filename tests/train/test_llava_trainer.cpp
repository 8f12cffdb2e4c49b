// data.format = "llava" end to end, on files made here: a CLIP folder and a
// LLaMA folder split out of the tiny LLaVA golden (tests/golden/hf_models/
// llava_chat, with its SentencePiece tokenizer and CLIP processor), PNG and
// JPEG images, and LLaVA-format JSON with a bad sample in it. Stage 1 learns
// (the loss goes down), writes its projector in both namings and counts the
// bad sample; a run cut back to a checkpoint and resumed repeats the
// uninterrupted losses and projector bit for bit; stage 2 starts from stage
// 1's projector and writes a model that load_pretrained reads back.
#include <catch2/catch.hpp>

#include <filesystem>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "data/image_encode.h"
#include "modules/hf_checkpoint.h"
#include "modules/generation.h"
#include "modules/hf_export.h"
#include "core/threads.h"
#include "core/autograd.h"
#include "data/sentencepiece_tokenizer.h"
#include "modules/projector_io.h"
#include "train/checkpoint.h"
#include "train/config_schema.h"
#include "train/llava_trainer.h"
#include "train/metrics_log.h"
#include "core/io/tensor_io.h"
#include "tests/support/llava_files.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

using test::split_models;
using test::write_data;

TrainConfig stage1_config(const fs::path& root) {
  TrainConfig c;
  c.name = "stage1";
  c.runs_dir = (root / "runs").string();
  c.seed = 3;
  c.data_format = "llava";
  c.data_json = (root / "captions.json").string();
  c.data_image_folder = (root / "images").string();
  c.data_template = "plain";
  c.data_workers = 2;
  c.data_prefetch = 2;
  c.data_model_max_length = 64;
  c.data_epochs = 2;
  c.model_vision_tower = (root / "clip").string();
  c.model_language_model = (root / "llama").string();
  c.model_stage = 1;
  c.stage1 = StageSettings{0, 2, 3e-2, 0.0, 0.0, 0.0, 1.0, 1};  // steps 0: two epochs of 12 good samples
  c.checkpoint_every = 4;
  c.keep_checkpoints = 3;
  c.log_every_s = 0;
  return c;
}

TrainOptions options_for(TrainConfig& c, bool resume = false) {
  ConfigSchema schema;
  register_train_config(schema, c);
  TrainOptions o;
  o.resume = resume;
  o.config_toml = schema.to_toml();
  o.config_json = schema.to_json();
  return o;
}

std::vector<double> losses(const fs::path& run) {
  std::vector<double> out;
  for (const auto& r : MetricsLog::read_all((run / "metrics.jsonl").string()))
    if (r.contains("loss") && r.at("loss").is_number()) out.push_back(r.at("loss").get<double>());
  return out;
}

std::map<std::string, Tensor> file_tensors(const fs::path& path) { return io::load_safetensors(path.string()); }

bool same_bits(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    if (!b.count(name)) return false;
    const Tensor& u = b.at(name);
    if (t.shape() != u.shape() || t.dtype() != u.dtype()) return false;
    const Tensor x = t.contiguous(), y = u.contiguous();
    if (std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())) != 0)
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("llava trainer: stage 1 and 2 on Hugging Face folders and LLaVA JSON, resumed bit for bit",
          "[trainer][llava]") {
  TempDir dir("llava_trainer");
  split_models(dir.path);
  write_data(dir.path);

  // ---- stage 1 ----
  TrainConfig c1 = stage1_config(dir.path);
  const TrainResult r1 = run_llava_training(c1, options_for(c1));
  const fs::path run1 = dir.path / "runs" / "stage1";
  CHECK(r1.stages.count("stage1") == 1);
  CHECK(r1.visual_tokens == 9);  // a 12-pixel image of 4-pixel patches, CLS dropped
  const std::vector<double> l1 = losses(run1);
  // 2 epochs x 13 samples / batch 2 ("missing" is found only when its image is read).
  REQUIRE(l1.size() == 13);
  const double first = (l1[0] + l1[1] + l1[2]) / 3, last = (l1[10] + l1[11] + l1[12]) / 3;
  CHECK(last < first);
  CHECK(fs::is_regular_file(run1 / "mm_projector.safetensors"));
  CHECK(fs::is_regular_file(run1 / "multi_modal_projector.safetensors"));
  CHECK(fs::is_regular_file(run1 / "loss.png"));
  CHECK(file_tensors(run1 / "mm_projector.safetensors").count("model.mm_projector.0.weight") == 1);
  CHECK(file_tensors(run1 / "multi_modal_projector.safetensors").count("multi_modal_projector.linear_2.bias") == 1);
  nlohmann::json results;
  std::ifstream(run1 / "results.json") >> results;
  CHECK(results["data"]["bad_in_file"] == 1);  // "untagged"
  // What the bits depend on: the kind of CPU and the thread count.
  CHECK(results["cpu_model"] == vlmc::cpu_model_name());
  CHECK(results["threads"] == vlmc::num_threads());
  // "missing", once per epoch; the 13th batch reaches into a third epoch's first samples.
  CHECK(results["data"]["skipped"] >= 2);
  CHECK(results["data"]["first_skipped"][0]["id"] == "missing");
  CHECK(results["data"]["samples_trained"] == 26);
  // Checkpoints hold the projector alone and the loader's place.
  const std::vector<std::string> saved = list_checkpoints((run1 / "checkpoints").string());
  REQUIRE(saved.size() == 3);  // steps 8, 12, 13 (4 pruned)
  const Checkpoint at8 = load_checkpoint((run1 / "checkpoints" / saved[0]).string());
  for (const auto& [name, t] : at8.model) CHECK(name.rfind("connector.", 0) == 0);
  CHECK(at8.state["data"]["loaders"][0]["step"] == 8);

  // ---- cut back to step 8 and resumed: the same losses and projector ----
  SECTION("resume") {
    fs::remove_all(run1 / "checkpoints" / saved[2]);
    fs::remove_all(run1 / "checkpoints" / saved[1]);
    const auto projector = file_tensors(run1 / "mm_projector.safetensors");
    TrainConfig again = stage1_config(dir.path);
    run_llava_training(again, options_for(again, /*resume=*/true));
    CHECK(losses(run1) == l1);
    CHECK(same_bits(file_tensors(run1 / "mm_projector.safetensors"), projector));
  }

  // ---- the same stage 1 with gradient checkpointing: the same losses and projector ----
  SECTION("gradient checkpointing") {
    const auto projector = file_tensors(run1 / "mm_projector.safetensors");
    TrainConfig again = stage1_config(dir.path);
    again.name = "stage1-checkpointed";
    again.model_gradient_checkpointing = true;
    run_llava_training(again, options_for(again));
    const fs::path run = dir.path / "runs" / again.name;
    CHECK(losses(run) == l1);
    CHECK(same_bits(file_tensors(run / "mm_projector.safetensors"), projector));
  }

  // ---- stage 2 from stage 1's projector ----
  SECTION("stage 2") {
    TrainConfig c2 = stage1_config(dir.path);
    c2.name = "stage2";
    c2.model_stage = 2;
    c2.data_json = (dir.path / "chats.jsonl").string();
    c2.data_template = "vicuna_v1";
    c2.data_epochs = 1;
    c2.data_model_max_length = 512;
    c2.model_projector = (run1 / "mm_projector.safetensors").string();
    c2.stage2 = StageSettings{3, 4, 1e-3, 0.0, 0.0, 0.0, 1.0, 1};
    c2.stage2_connector_lr = 0;
    const TrainResult r2 = run_llava_training(c2, options_for(c2));
    CHECK(r2.stages.count("stage2") == 1);
    const fs::path run2 = dir.path / "runs" / "stage2";
    const std::vector<double> l2 = losses(run2);
    REQUIRE(l2.size() == 3);
    for (const double loss : l2) CHECK(loss > 0.1);  // the answers are learned from, none cut away
    nlohmann::json results2;
    std::ifstream(run2 / "results.json") >> results2;
    CHECK(results2["data"]["truncated"] == 0);
    // The checkpoint holds the language model too.
    const Checkpoint last2 = load_checkpoint((run2 / "checkpoints" / list_checkpoints((run2 / "checkpoints").string()).back()).string());
    CHECK(last2.model.count("llm.model.embed_tokens.weight") == 1);
    // The whole model, loaded back (its tower from mm_vision_tower), holds what was trained.
    const nn::PretrainedModel back = nn::load_pretrained((run2 / "model").string());
    REQUIRE(back.llava);
    CHECK(back.config.kind == nn::HfKind::llava_original);
    const auto state = back.llava->state_dict();
    for (const auto& [name, t] : last2.model) {
      INFO(name);
      REQUIRE(state.count(name) == 1);
      CHECK(same_bits({{name, state.at(name)}}, {{name, t}}));
    }
    CHECK(fs::is_regular_file(run2 / "model" / "tokenizer.model"));
    // And as transformers' LlavaForConditionalGeneration: the tokenizer's own <image> (id 400).
    const nn::PretrainedModel hf = nn::load_pretrained((run2 / "model-hf").string());
    CHECK(hf.config.kind == nn::HfKind::llava);
    CHECK(hf.config.llava.image_token_index == 400);
    CHECK(same_bits(nn::export_projector(*hf.llava->connector, nn::ProjectorNaming::llava),
                    nn::export_projector(*back.llava->connector, nn::ProjectorNaming::llava)));
    // Both generate, and the same tokens: -200 at the image for the original layout, the
    // vocabulary's <image> for transformers'.
    Generator gen(9);
    const Tensor pixels = Tensor::randn({1, 3, 12, 12}, gen);
    auto continuation = [&](const nn::PretrainedModel& m, int64_t image_id) {
      NoGradGuard no_grad;
      m.llava->eval();
      const Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 5, image_id, 9, 17}, {1, 5});
      const SpliceResult in = m.llava->prepare_inputs(ids, pixels);
      nn::GenerationConfig g;
      g.max_new_tokens = 6;
      return nn::generate(*m.llama, in.inputs_embeds, g).ids;
    };
    const std::vector<int64_t> from_original = continuation(back, data::kImageTokenIndex);
    CHECK(from_original.size() == 6);
    CHECK(continuation(hf, 400) == from_original);
  }
}

TEST_CASE("llava trainer: bad settings and files are named before anything runs", "[trainer][llava]") {
  TempDir dir("llava_trainer_errors");
  split_models(dir.path);
  write_data(dir.path);
  TrainConfig c = stage1_config(dir.path);
  SECTION("the language model folder is a vision tower") {
    c.model_language_model = c.model_vision_tower;
    CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("model.language_model") &&
                                                               Catch::Contains("not a LlamaForCausalLM"));
  }
  SECTION("strict data names the first bad sample") {
    c.data_strict = true;
    CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("untagged"));
  }
  SECTION("more steps than the data has") {
    c.stage1.steps = 100;
    CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("data.epochs"));
  }
  SECTION("a step that does not fit in memory is refused, naming the batch key") {
    setenv("VLMC_MEMORY_LIMIT", "100KB", 1);
    CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("stage1.batch_size"));
    unsetenv("VLMC_MEMORY_LIMIT");
  }
  SECTION("no data.json") {
    c.data_json.clear();
    CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("data.json"));
  }
  CHECK_FALSE(fs::exists(dir.path / "runs" / "stage1" / "checkpoints"));
}

TEST_CASE("llava trainer: configs/llava-1.5-stage{1,2}.toml load and run a few steps on tiny models", "[trainer][llava]") {
  TempDir dir("llava_configs");
  split_models(dir.path);
  write_data(dir.path);
  const fs::path configs = fs::path(VLMC_GOLDEN_DIR).parent_path().parent_path() / "configs";
  for (const int stage : {1, 2}) {
    INFO("stage " << stage);
    TrainConfig c;
    ConfigSchema schema;
    register_train_config(schema, c);
    schema.load_toml_file((configs / ("llava-1.5-stage" + std::to_string(stage) + ".toml")).string());
    CHECK(c.data_format == "llava");
    CHECK(c.model_stage == stage);
    CHECK(c.model_gradient_checkpointing);
    CHECK(c.precision == "bf16");
    // LLaVA's global batches: 256 in stage 1, 128 in stage 2.
    CHECK(c.llava_stage().batch_size * c.llava_stage().gradient_accumulation_steps == (stage == 1 ? 256 : 128));
    // The paths users give, and sizes for the tiny models.
    c.device = "cpu";
    c.runs_dir = (dir.path / "runs").string();
    c.model_vision_tower = (dir.path / "clip").string();
    c.model_language_model = (dir.path / "llama").string();
    c.data_image_folder = (dir.path / "images").string();
    c.data_json = (dir.path / (stage == 1 ? "captions.json" : "chats.jsonl")).string();
    c.data_workers = 1;
    c.data_model_max_length = 512;
    StageSettings& s = stage == 1 ? c.stage1 : c.stage2;
    s.steps = 2;
    s.batch_size = 2;
    s.gradient_accumulation_steps = 1;
    if (stage == 2) c.model_projector = (dir.path / "runs" / "llava-1.5-stage1" / "mm_projector.safetensors").string();
    const TrainResult r = run_llava_training(c, options_for(c));
    CHECK(r.stages.size() == 1);
  }
  CHECK(fs::is_directory(dir.path / "runs" / "llava-1.5-stage2" / "model-hf"));
}

TEST_CASE("llava trainer: model.pretrained continues a whole LLaVA, transformers' or the original layout",
          "[trainer][llava]") {
  TempDir dir("llava_pretrained");
  split_models(dir.path);
  write_data(dir.path);
  const fs::path chat = fs::path(VLMC_GOLDEN_DIR) / "hf_models" / "llava_chat";
  const nn::PretrainedModel start = nn::load_pretrained(chat.string());
  const auto start_projector = nn::export_projector(*start.llava->connector, nn::ProjectorNaming::llava);
  TrainConfig c = stage1_config(dir.path);
  c.model_vision_tower.clear();
  c.model_language_model.clear();
  c.model_pretrained = chat.string();

  SECTION("stage 1 starts from the folder's projector") {
    // lr must be > 0; an AdamW step of 1e-30 is below every weight's last bit.
    c.stage1 = StageSettings{1, 2, 1e-30, 0.0, 0.0, 0.0, 1.0, 1};
    run_llava_training(c, options_for(c));
    CHECK(same_bits(file_tensors(dir.path / "runs" / "stage1" / "mm_projector.safetensors"), start_projector));
  }
  SECTION("stage 2 from a transformers LLaVA writes it back in its own layout") {
    c.name = "stage2";
    c.model_stage = 2;
    c.stage2 = StageSettings{3, 2, 1e-3, 0.0, 0.0, 0.0, 1.0, 1};
    const TrainResult r = run_llava_training(c, options_for(c));
    CHECK(r.stages.count("stage2") == 1);
    const fs::path run = dir.path / "runs" / "stage2";
    const std::vector<double> l = losses(run);
    REQUIRE(l.size() == 3);
    for (const double loss : l) CHECK(std::isfinite(loss));
    CHECK_FALSE(fs::exists(run / "model"));  // the original layout would need a tower folder
    const nn::PretrainedModel back = nn::load_pretrained((run / "model-hf").string());
    REQUIRE(back.llava);
    CHECK(back.config.kind == nn::HfKind::llava);
    CHECK(back.layout == start.layout);
    CHECK(back.config.llava.image_token_index == start.config.llava.image_token_index);
    CHECK(fs::is_regular_file(run / "model-hf" / "tokenizer.model"));
    CHECK(fs::is_regular_file(run / "model-hf" / "preprocessor_config.json"));
    // What was trained is what was written: the last checkpoint's tensors, bit for bit.
    const Checkpoint last = load_checkpoint(
        (run / "checkpoints" / list_checkpoints((run / "checkpoints").string()).back()).string());
    const auto state = back.llava->state_dict();
    for (const auto& [name, t] : last.model) {
      INFO(name);
      REQUIRE(state.count(name) == 1);
      CHECK(same_bits({{name, state.at(name)}}, {{name, t}}));
    }
    CHECK_FALSE(same_bits(nn::export_projector(*back.llava->connector, nn::ProjectorNaming::llava), start_projector));
  }
  SECTION("stage 2 from an original-layout LLaVA writes model/ and model-hf/") {
    nn::PretrainedModel original = start;  // the same weights, LLaVA's own layout, its tower in clip/
    original.config.kind = nn::HfKind::llava_original;
    original.config.llava.image_token_index = data::kImageTokenIndex;
    original.config.llava.vision_tower = (dir.path / "clip").string();
    original.config.llava.mm_hidden_size = start.config.vision.hidden_size;
    original.config.text.max_position_embeddings = 512;
    nn::save_pretrained(original, (dir.path / "original").string());
    c.model_pretrained = (dir.path / "original").string();
    c.name = "stage2";
    c.model_stage = 2;
    c.stage2 = StageSettings{2, 2, 1e-3, 0.0, 0.0, 0.0, 1.0, 1};
    run_llava_training(c, options_for(c));
    const fs::path run = dir.path / "runs" / "stage2";
    const nn::PretrainedModel back = nn::load_pretrained((run / "model").string());
    CHECK(back.config.kind == nn::HfKind::llava_original);
    const nn::PretrainedModel hf = nn::load_pretrained((run / "model-hf").string());
    CHECK(hf.config.kind == nn::HfKind::llava);
    CHECK(same_bits(nn::export_projector(*hf.llava->connector, nn::ProjectorNaming::llava),
                    nn::export_projector(*back.llava->connector, nn::ProjectorNaming::llava)));
  }
  SECTION("keys that contradict it are named") {
    SECTION("a second language model") {
      c.model_language_model = (dir.path / "llama").string();
      CHECK_THROWS_WITH(run_llava_training(c, options_for(c)),
                        Catch::Contains("model.language_model") && Catch::Contains("model.pretrained"));
    }
    SECTION("another connector") {
      c.connector = "linear";
      CHECK_THROWS_WITH(run_llava_training(c, options_for(c)),
                        Catch::Contains("mlp2x_gelu") && Catch::Contains("connector = \"mlp2x_gelu\""));
    }
    SECTION("a folder that is no LLaVA") {
      c.model_pretrained = (dir.path / "llama").string();
      CHECK_THROWS_WITH(run_llava_training(c, options_for(c)), Catch::Contains("not a LLaVA"));
    }
    CHECK_FALSE(fs::exists(dir.path / "runs" / "stage1" / "checkpoints"));
  }
}
