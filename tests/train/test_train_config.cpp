// The trainer's settings (train/train_config.h): every field is a schema key
// that to_toml() writes and load_toml_string reads back exactly; the defaults
// validate; each bad value is refused with a message naming its dotted key;
// and the repository's configs/fashion-mosaic.toml loads and validates.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <toml++/toml.h>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "modules/connector_registry.h"
#include "train/config_schema.h"
#include "train/train_config.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;

namespace {

// The repository root: VLMC_SOURCE_DIR when the build defines it, else the
// parent of the golden-file folder (tests/golden) that the test support
// library is given.
fs::path source_dir() {
#ifdef VLMC_SOURCE_DIR
  return fs::path(VLMC_SOURCE_DIR);
#else
  return fs::path(VLMC_GOLDEN_DIR).parent_path().parent_path();
#endif
}

bool same_stage(const StageSettings& a, const StageSettings& b) {
  return a.steps == b.steps && a.batch_size == b.batch_size && a.lr == b.lr && a.weight_decay == b.weight_decay &&
         a.warmup_ratio == b.warmup_ratio && a.min_lr_ratio == b.min_lr_ratio &&
         a.max_grad_norm == b.max_grad_norm;
}

// Field by field, written out so a field the schema forgets shows as a
// round-trip difference.
bool same(const TrainConfig& a, const TrainConfig& b) {
  return a.name == b.name && a.runs_dir == b.runs_dir && a.cache_dir == b.cache_dir && a.seed == b.seed &&
         a.device == b.device && a.checkpoint_every == b.checkpoint_every &&
         a.keep_checkpoints == b.keep_checkpoints && a.log_every_s == b.log_every_s && a.zero_stage == b.zero_stage &&
         a.precision == b.precision && a.collective_timeout_s == b.collective_timeout_s &&
         a.data_dir == b.data_dir &&
         a.train_mosaics == b.train_mosaics && a.questions_per_image == b.questions_per_image &&
         a.vision_hidden_size == b.vision_hidden_size && a.vision_intermediate_size == b.vision_intermediate_size &&
         a.vision_num_attention_heads == b.vision_num_attention_heads &&
         a.vision_num_hidden_layers == b.vision_num_hidden_layers && a.vision_patch_size == b.vision_patch_size &&
         a.vision_hidden_act == b.vision_hidden_act && a.vision_select_layer == b.vision_select_layer &&
         a.lm_hidden_size == b.lm_hidden_size && a.lm_intermediate_size == b.lm_intermediate_size &&
         a.lm_num_hidden_layers == b.lm_num_hidden_layers && a.lm_num_attention_heads == b.lm_num_attention_heads &&
         a.lm_num_key_value_heads == b.lm_num_key_value_heads &&
         a.lm_max_position_embeddings == b.lm_max_position_embeddings && a.lm_rope_theta == b.lm_rope_theta &&
         a.train_seed == b.train_seed && a.eval_seed == b.eval_seed &&
         a.connector == b.connector && a.connector_target_size == b.connector_target_size &&
         a.connector_num_conv_layers == b.connector_num_conv_layers &&
         a.connector_max_tokens == b.connector_max_tokens && a.connector_min_tokens == b.connector_min_tokens &&
         a.connector_merge_size == b.connector_merge_size && a.connector_num_latents == b.connector_num_latents &&
         a.connector_resampler_depth == b.connector_resampler_depth &&
         a.connector_resampler_heads == b.connector_resampler_heads &&
         a.connector_resampler_head_dim == b.connector_resampler_head_dim &&
         a.connector_resampler_kv_heads == b.connector_resampler_kv_heads &&
         same_stage(a.stage0_vision, b.stage0_vision) && same_stage(a.stage0_language, b.stage0_language) &&
         same_stage(a.stage1, b.stage1) && same_stage(a.stage2, b.stage2) && a.eval_mosaics == b.eval_mosaics &&
         a.eval_questions_per_image == b.eval_questions_per_image && a.eval_batch_size == b.eval_batch_size;
}

// Every field off its default, with doubles that need all 17 digits.
TrainConfig changed_everywhere() {
  TrainConfig c;
  c.name = "round-trip";
  c.runs_dir = "/tmp/some runs";
  c.cache_dir = "cache \"quoted\"";
  c.seed = 1234567890123;
  c.device = "cpu:0";
  c.checkpoint_every = 7;
  c.keep_checkpoints = 5;
  c.log_every_s = 0.1 + 0.2;
  c.zero_stage = 1;
  c.precision = "bf16";
  c.collective_timeout_s = 123.25;
  c.data_dir = "data\\dir";
  c.train_mosaics = 17;
  c.questions_per_image = 3;
  c.vision_hidden_size = 96;
  c.vision_intermediate_size = 200;
  c.vision_num_attention_heads = 3;
  c.vision_num_hidden_layers = 4;
  c.vision_patch_size = 7;
  c.vision_hidden_act = "quick_gelu";
  c.vision_select_layer = -2;
  c.lm_hidden_size = 64;
  c.lm_intermediate_size = 176;
  c.lm_num_hidden_layers = 3;
  c.lm_num_attention_heads = 8;
  c.lm_num_key_value_heads = 2;
  c.lm_max_position_embeddings = 300;
  c.lm_rope_theta = 500000.5;
  c.train_seed = 17;
  c.eval_seed = 23;
  c.connector = "c-abstractor";
  c.connector_target_size = 3;
  c.connector_num_conv_layers = 2;
  c.connector_max_tokens = 9;
  c.connector_min_tokens = 1;
  c.connector_merge_size = 3;
  c.connector_num_latents = 5;
  c.connector_resampler_depth = 6;
  c.connector_resampler_heads = 8;
  c.connector_resampler_head_dim = 7;
  c.connector_resampler_kv_heads = 2;
  c.stage0_vision = {11, 12, 1.0 / 3.0, 0.125, 0.2, 0.05, 2.5};
  c.stage0_language = {21, 22, 2e-4 / 3.0, 1e-300, 0.3, 0.1, 0.75};
  c.stage1 = {31, 33, 7e-5, 0.01, 0.0, 1.0, 0.0};
  c.stage2 = {41, 44, 0.1 + 0.7, 0.0, 0.99, 0.5, 123.456};
  c.eval_mosaics = 13;
  c.eval_questions_per_image = 2;
  c.eval_batch_size = 9;
  return c;
}

}  // namespace

TEST_CASE("train config: every schema key is in to_toml", "[train-config]") {
  TrainConfig c;
  ConfigSchema schema;
  register_train_config(schema, c);
  const std::vector<std::string> keys = schema.keys();
  // 13 run + 5 data + 11 data (llava) + 8 model + 7 vision + 8 language + 11 connector
  // + 4 stages x 8 + stage0.language.extra_questions_per_image + stage2.connector_lr + 4 eval.
  CHECK(keys.size() == 107);
  const toml::table doc = toml::parse(std::string_view(schema.to_toml()), std::string_view("to_toml"));
  for (const std::string& key : keys) {
    INFO("key " << key);
    CHECK(doc.at_path(key).node() != nullptr);
  }
  for (const char* key : {"run.name", "run.device", "data.dir", "vision.patch_size", "vision.select_layer",
                          "language.rope_theta", "connector.type", "stage0.vision.lr", "stage0.language.steps",
                          "stage1.warmup_ratio", "stage2.max_grad_norm", "eval.batch_size"}) {
    INFO("key " << key);
    CHECK(std::find(keys.begin(), keys.end(), key) != keys.end());
  }
  // Defaults go out as written in the struct.
  CHECK(doc.at_path("stage1.lr").value<double>() == TrainConfig{}.stage1.lr);
  CHECK(doc.at_path("run.name").value<std::string>() == std::string("fashion-mosaic"));
}

TEST_CASE("train config: the defaults validate", "[train-config]") {
  CHECK_NOTHROW(TrainConfig{}.validate());
  // Edge values that are still allowed.
  TrainConfig c;
  c.vision_select_layer = -(c.vision_num_hidden_layers + 1);  // the embeddings' output
  CHECK_NOTHROW(c.validate());
  c.vision_select_layer = c.vision_num_hidden_layers;  // the last layer, counted from 0
  CHECK_NOTHROW(c.validate());
  for (int64_t patch : {2, 4, 7, 14, 28}) {
    c.vision_patch_size = patch;
    INFO("patch_size " << patch);
    CHECK_NOTHROW(c.validate());
  }
  c.stage1.warmup_ratio = 0.0;
  c.stage1.min_lr_ratio = 1.0;
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("train config: each bad value is refused, naming its key", "[train-config]") {
  struct Bad {
    const char* key;
    std::function<void(TrainConfig&)> set;
  };
  const std::vector<Bad> cases = {
      {"stage1.steps", [](TrainConfig& c) { c.stage1.steps = 0; }},
      {"stage1.lr", [](TrainConfig& c) { c.stage1.lr = -1e-3; }},
      {"stage1.warmup_ratio", [](TrainConfig& c) { c.stage1.warmup_ratio = 1.0; }},
      {"stage2.batch_size", [](TrainConfig& c) { c.stage2.batch_size = 0; }},
      {"stage2.min_lr_ratio", [](TrainConfig& c) { c.stage2.min_lr_ratio = 1.5; }},
      {"stage0.vision.weight_decay", [](TrainConfig& c) { c.stage0_vision.weight_decay = -0.1; }},
      {"stage0.language.max_grad_norm", [](TrainConfig& c) { c.stage0_language.max_grad_norm = -1; }},
      {"stage0.language.steps", [](TrainConfig& c) { c.stage0_language.steps = -5; }},
      {"vision.patch_size", [](TrainConfig& c) { c.vision_patch_size = 5; }},    // does not split 56
      {"vision.patch_size", [](TrainConfig& c) { c.vision_patch_size = 8; }},    // a 7x7 grid: odd
      {"vision.patch_size", [](TrainConfig& c) { c.vision_patch_size = 56; }},   // a 1x1 grid
      {"vision.patch_size", [](TrainConfig& c) { c.vision_patch_size = 0; }},
      {"vision.select_layer", [](TrainConfig& c) { c.vision_select_layer = 3; }},  // 2 layers: 3 states
      {"vision.select_layer", [](TrainConfig& c) { c.vision_select_layer = -4; }},
      {"run.name", [](TrainConfig& c) { c.name = "a/b"; }},
      {"run.name", [](TrainConfig& c) { c.name = ""; }},
      {"run.name", [](TrainConfig& c) { c.name = ".."; }},
      {"run.device", [](TrainConfig& c) { c.device = "gpu"; }},
      {"run.device", [](TrainConfig& c) { c.device = "cuda:99"; }},  // more devices than any machine here
      {"run.precision", [](TrainConfig& c) { c.precision = "fp16"; }},
      {"run.checkpoint_every", [](TrainConfig& c) { c.checkpoint_every = 0; }},
      {"run.keep_checkpoints", [](TrainConfig& c) { c.keep_checkpoints = 0; }},
      {"run.collective_timeout_s", [](TrainConfig& c) { c.collective_timeout_s = 0; }},
      {"run.zero_stage", [](TrainConfig& c) { c.zero_stage = 2; }},
      {"data.train_mosaics", [](TrainConfig& c) { c.train_mosaics = 0; }},
      {"data.questions_per_image", [](TrainConfig& c) { c.questions_per_image = 0; }},
      {"eval.mosaics", [](TrainConfig& c) { c.eval_mosaics = 0; }},
      {"eval.questions_per_image", [](TrainConfig& c) { c.eval_questions_per_image = 0; }},
      {"eval.batch_size", [](TrainConfig& c) { c.eval_batch_size = -1; }},
      {"eval.validation_mosaics", [](TrainConfig& c) { c.eval_validation_mosaics = 0; }},
      {"eval.every", [](TrainConfig& c) { c.eval_every = -1; }},
      {"data.validation_items", [](TrainConfig& c) { c.validation_items = 0; }},
      {"data.validation_items", [](TrainConfig& c) { c.validation_items = 60000; }},
      {"stage2.caption_mix", [](TrainConfig& c) { c.stage2_caption_mix = -0.5; }},
      {"run.train_seed", [](TrainConfig& c) { c.train_seed = -2; }},
  };
  for (const Bad& bad : cases) {
    TrainConfig c;
    bad.set(c);
    INFO("expected an error naming " << bad.key);
    REQUIRE_THROWS_WITH(c.validate(), Catch::Contains(bad.key));
  }
}

TEST_CASE("train config: run.device cuda is checked against this build and machine", "[train-config]") {
  TrainConfig c;
  c.device = "cuda";
  if (cuda::is_available()) {
    CHECK_NOTHROW(c.validate());
  } else {
    // Never a silent CPU run: the reason names the key and what is missing.
    REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("run.device = 'cuda'") &&
                                          (Catch::Contains("built without CUDA") ||
                                           Catch::Contains("no CUDA device is visible")));
  }
}

TEST_CASE("train config: architecture errors name the dotted key", "[train-config]") {
  // Not CLIPVisionConfig's or LlamaConfig's own field names: the flag to fix.
  TrainConfig v;
  v.vision_num_attention_heads = 5;  // 128 is not divisible by 5
  REQUIRE_THROWS_WITH(v.validate(), Catch::Contains("vision.num_attention_heads"));
  TrainConfig l;
  l.lm_num_key_value_heads = 3;  // 4 heads are not a multiple of 3
  REQUIRE_THROWS_WITH(l.validate(), Catch::Contains("language.num_key_value_heads"));
}

TEST_CASE("train config: an unknown connector type fails validation", "[train-config]") {
  // Checked before the run directory and the stage-0 cache are touched.
  TrainConfig c;
  c.connector = "mlp_gelu2x";
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("connector.type"));
}

TEST_CASE("train config: TOML text sets the struct", "[train-config]") {
  TrainConfig c;
  ConfigSchema schema;
  register_train_config(schema, c);
  schema.load_toml_string(R"(
[stage1]
lr = 2.5e-4
[connector]
type = "linear"
[stage0.vision]
steps = 12
)",
                          "test.toml");
  CHECK(c.stage1.lr == 2.5e-4);
  CHECK(c.connector == "linear");
  CHECK(c.stage0_vision.steps == 12);
  // Untouched keys keep their defaults.
  CHECK(c.stage2.lr == TrainConfig{}.stage2.lr);
  CHECK(c.stage1.steps == TrainConfig{}.stage1.steps);
  CHECK_NOTHROW(c.validate());

  // A bad value loaded from TOML is refused by validate, naming the key.
  TrainConfig d;
  ConfigSchema s2;
  register_train_config(s2, d);
  s2.load_toml_string("stage1.steps = 0\n", "bad.toml");
  REQUIRE_THROWS_WITH(d.validate(), Catch::Contains("stage1.steps"));
  // An unknown key never reaches the struct.
  REQUIRE_THROWS_WITH(s2.load_toml_string("[stage1]\nlearning_rate = 1.0\n", "typo.toml"),
                      Catch::Contains("stage1.learning_rate"));
  CHECK(d.stage1.lr == TrainConfig{}.stage1.lr);
}

TEST_CASE("train config: to_toml round-trips every field", "[train-config]") {
  TrainConfig a = changed_everywhere();
  ConfigSchema sa;
  register_train_config(sa, a);
  const std::string text = sa.to_toml();

  TrainConfig b;
  REQUIRE_FALSE(same(a, b));
  ConfigSchema sb;
  register_train_config(sb, b);
  sb.load_toml_string(text, "round-trip.toml");
  INFO(text);
  CHECK(same(a, b));
  CHECK(sb.to_toml() == text);
  CHECK(sb.to_json() == sa.to_json());
}

TEST_CASE("train config: configs/fashion-mosaic.toml loads and validates", "[train-config]") {
  const fs::path path = source_dir() / "configs" / "fashion-mosaic.toml";
  INFO("config file " << path.string());
  REQUIRE(fs::exists(path));
  TrainConfig c;
  ConfigSchema schema;
  register_train_config(schema, c);
  REQUIRE_NOTHROW(schema.load_toml_file(path.string()));
  REQUIRE_NOTHROW(c.validate());
}

TEST_CASE("train config: configs/fashion-mosaic-4x4.toml loads, and every registered connector reads its 4x4 patch grid", "[train-config]") {
  TrainConfig c;
  ConfigSchema schema;
  register_train_config(schema, c);
  REQUIRE_NOTHROW(schema.load_toml_file((source_dir() / "configs" / "fashion-mosaic-4x4.toml").string()));
  REQUIRE_NOTHROW(c.validate());
  CHECK(c.mosaic_grid == 4);
  CHECK(c.vision_config().image_size == 112);
  const int64_t grid = c.patch_grid();
  REQUIRE(grid == 4);
  // The connectors are built for the encoder's grid, not the 2x2 job's 56 pixels.
  CHECK(c.connector_config().grid_size == grid);
  for (const nn::ConnectorKind& kind : nn::connector_registry()) {
    INFO("connector " << kind.name);
    TrainConfig one = c;
    one.connector = kind.name;
    nn::ConnectorConfig cc = one.connector_config();
    Generator gen(1);
    const auto connector = kind.make(cc, gen);
    NoGradGuard no_grad;
    connector->eval();
    const Tensor out = connector->forward(Tensor::zeros({2, grid * grid, c.vision_hidden_size}));
    CHECK(out.size(0) == 2);
    CHECK(out.size(2) == c.lm_hidden_size);
  }
}

TEST_CASE("train config: configs/fashion-mosaic.toml is the defaults (vlmc train = make train)", "[train-config]") {
  // The file documents the recipe key by key; the struct's defaults are the
  // same recipe, so `vlmc train` with no file trains what `make train` does.
  TrainConfig from_file, defaults;
  ConfigSchema file_schema, default_schema;
  register_train_config(file_schema, from_file);
  register_train_config(default_schema, defaults);
  file_schema.load_toml_file((source_dir() / "configs" / "fashion-mosaic.toml").string());
  CHECK(file_schema.to_json() == default_schema.to_json());
}
