// Hugging Face checkpoints in (modules/hf_checkpoint.h): tiny random models
// written by transformers 4.45.2 (tests/golden/make_golden_hf_models.py) load
// into vlmc's modules and give transformers' logits; every layout of the same
// LLaVA loads to the same weights; a broken folder is one clear error.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "core/autograd.h"
#include "core/io/safetensors_folder.h"
#include "core/io/tensor_io.h"
#include "modules/hf_checkpoint.h"
#include "modules/generation.h"
#include "modules/hf_export.h"
#include "tests/support/check.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(VLMC_GOLDEN_DIR) + "/hf_models";
// Logits of the same f32 model in two engines: summation orders differ.
constexpr double kLogitsTolerance = 1e-4;

const std::map<std::string, Tensor>& expected() {
  static const auto e = io::load_safetensors(kDir + "/expected.safetensors");
  return e;
}
Tensor want(const std::string& name) { return expected().at(name); }

// A copy of a golden model folder that a test may break.
std::string copy_model(const test::TempDir& tmp, const std::string& name) {
  const fs::path dst = tmp.path / name;
  fs::copy(kDir + "/" + name, dst, fs::copy_options::recursive);
  return dst.string();
}

// Rewrites DIR/config.json through `edit`, which gets the file's text.
template <typename Edit>
void edit_config(const std::string& dir, Edit edit) {
  std::ifstream in(dir + "/config.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  in.close();
  edit(text);
  std::ofstream(dir + "/config.json") << text;
}

void require_same_state(const nn::Module& a, const nn::Module& b) {
  const auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (const auto& [name, t] : sa) {
    INFO(name);
    REQUIRE(sb.count(name) == 1);
    CHECK(test::max_abs_error(t, sb.at(name)) == 0.0);
  }
}

}  // namespace

TEST_CASE("hf checkpoint: LlamaForCausalLM with grouped KV heads gives transformers' logits", "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/llama");
  REQUIRE(loaded.llama);
  CHECK(loaded.config.text.num_key_value_heads == 2);
  CHECK(loaded.config.text.rope_theta == 500000.0);
  NoGradGuard no_grad;
  const Tensor logits = loaded.llama->forward_ids(want("llama.input_ids"), want("llama.attention_mask"));
  CHECK(test::rel_error(logits, want("llama.logits")) < kLogitsTolerance);
  CHECK(loaded.report.tensors == 2 * 9 + 3);
  CHECK(loaded.report.bytes_by_dtype.at("F32") > 0);
}

TEST_CASE("hf checkpoint: a tied LLaMA has no lm_head and reads the embedding table", "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/llama_tied");
  REQUIRE(loaded.llama);
  CHECK(loaded.llama->lm_head == nullptr);
  NoGradGuard no_grad;
  const Tensor logits = loaded.llama->forward_ids(want("llama.input_ids"), want("llama.attention_mask"));
  CHECK(test::rel_error(logits, want("llama_tied.logits")) < kLogitsTolerance);
}

TEST_CASE("hf checkpoint: BF16 weights are widened to f32 exactly", "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/llama_bf16");
  CHECK(loaded.report.bytes_by_dtype.count("BF16") == 1);
  CHECK(loaded.report.bytes_by_dtype.count("F32") == 0);
  NoGradGuard no_grad;
  const Tensor logits = loaded.llama->forward_ids(want("llama.input_ids"), want("llama.attention_mask"));
  CHECK(test::rel_error(logits, want("llama_bf16.logits")) < kLogitsTolerance);
}

TEST_CASE("hf checkpoint: CLIPVisionModel gives every hidden state and the pooled output", "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/clip_vision");
  REQUIRE(loaded.vision);
  NoGradGuard no_grad;
  const auto out = loaded.vision->forward(want("clip.pixel_values"));
  REQUIRE(out.hidden_states.size() == 4);
  for (size_t i = 0; i < out.hidden_states.size(); ++i) {
    INFO("hidden state " << i);
    CHECK(test::rel_error(out.hidden_states[i], want("clip.hidden_states." + std::to_string(i))) < kLogitsTolerance);
  }
  CHECK(test::rel_error(out.pooler_output, want("clip.pooler_output")) < kLogitsTolerance);
}

TEST_CASE("hf checkpoint: a CLIPModel loads its vision half and reports the text half as ignored",
          "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/clip_full");
  REQUIRE(loaded.vision);
  CHECK(loaded.report.ignored.count("CLIPModel's text half and projections") == 1);
  CHECK(loaded.report.summary().find("ignored") != std::string::npos);
}

TEST_CASE("hf checkpoint: LlavaForConditionalGeneration gives transformers' logits after the splice",
          "[hf_checkpoint]") {
  const auto loaded = nn::load_pretrained(kDir + "/llava");
  REQUIRE(loaded.llava);
  CHECK(loaded.config.llava.image_token_index == 71);
  CHECK(loaded.report.kind == "LlavaForConditionalGeneration (transformers <= 4.51 keys)");
  NoGradGuard no_grad;
  const auto out = loaded.llava->forward(want("llava.input_ids"), want("llava.pixel_values"));
  REQUIRE(out.logits.shape() == Shape{1, 17, 72});
  CHECK(test::rel_error(out.logits, want("llava.logits")) < kLogitsTolerance);
}

TEST_CASE("hf checkpoint: sharded, newer-layout and original-layout LLaVA load to the same model",
          "[hf_checkpoint]") {
  const auto single = nn::load_pretrained(kDir + "/llava");
  SECTION("sharded") {
    const auto sharded = nn::load_pretrained(kDir + "/llava_sharded");
    CHECK(sharded.report.files.size() == 3);
    require_same_state(*single.llava, *sharded.llava);
  }
  SECTION("newer transformers keys") {
    const auto newer = nn::load_pretrained(kDir + "/llava_new_layout");
    CHECK(newer.report.kind == "LlavaForConditionalGeneration (newer transformers keys)");
    require_same_state(*single.llava, *newer.llava);
  }
  SECTION("original LLaVA with --vision-tower") {
    nn::PretrainedOptions options;
    options.vision_tower = kDir + "/clip_full";
    const auto original = nn::load_pretrained(kDir + "/llava_original", options);
    CHECK(original.config.llava.image_token_index == -200);
    CHECK(original.config.llava.image_aspect_ratio == "pad");
    require_same_state(*single.llava, *original.llava);
    // The same logits with LLaVA's -200 placeholder instead of HF's in-vocabulary id.
    Tensor ids = want("llava.input_ids").clone();
    static_cast<int64_t*>(ids.data_ptr())[3] = -200;
    NoGradGuard no_grad;
    const auto out = original.llava->forward(ids, want("llava.pixel_values"));
    CHECK(test::rel_error(out.logits, want("llava.logits")) < kLogitsTolerance);
  }
}

TEST_CASE("hf checkpoint: the original layout without --vision-tower says where the tower is",
          "[hf_checkpoint]") {
  REQUIRE_THROWS_WITH(nn::load_pretrained(kDir + "/llava_original"),
                      Catch::Contains("--vision-tower") && Catch::Contains("mm_vision_tower = \"clip_full\""));
  nn::PretrainedOptions options;
  options.vision_tower = kDir + "/llama";
  REQUIRE_THROWS_WITH(nn::load_pretrained(kDir + "/llava_original", options),
                      Catch::Contains("CLIPModel or CLIPVisionModel") && Catch::Contains("LlamaForCausalLM"));
}

TEST_CASE("hf checkpoint: broken folders are one clear error", "[hf_checkpoint]") {
  test::TempDir tmp("hf");
  SECTION("an index naming a missing shard") {
    const std::string dir = copy_model(tmp, "llava_sharded");
    fs::remove(dir + "/model-00002-of-00003.safetensors");
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("model.safetensors.index.json") &&
                                                      Catch::Contains("model-00002-of-00003.safetensors"));
  }
  SECTION("a truncated shard") {
    const std::string dir = copy_model(tmp, "llava_sharded");
    const std::string shard = dir + "/model-00003-of-00003.safetensors";
    fs::resize_file(shard, fs::file_size(shard) - 100);
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("model-00003-of-00003.safetensors"));
  }
  SECTION("a shard path leaving the folder") {
    const std::string dir = copy_model(tmp, "llava_sharded");
    std::ofstream(dir + "/model.safetensors.index.json")
        << R"({"metadata": {}, "weight_map": {"lm_head.weight": "../secret.safetensors"}})";
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("not a file name in the model's folder"));
  }
  SECTION("an unsupported architecture") {
    const std::string dir = copy_model(tmp, "llama");
    std::ofstream(dir + "/config.json") << R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral"})";
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("config.json") &&
                                                      Catch::Contains("MistralForCausalLM") &&
                                                      Catch::Contains("LlavaForConditionalGeneration"));
  }
  SECTION("a config key vlmc would silently get wrong") {
    const std::string dir = copy_model(tmp, "llama");
    edit_config(dir, [](std::string& text) {
      text.replace(text.rfind('}'), 1, R"(, "rope_scaling": {"type": "linear", "factor": 2.0}})");
    });
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("rope_scaling"));
  }
  SECTION("zero attention heads beside a head_dim (found by fuzz_hf_config: an integer division by zero)") {
    const std::string dir = copy_model(tmp, "llama");
    edit_config(dir, [](std::string& text) {
      const size_t at = text.find("\"num_attention_heads\": ");
      REQUIRE(at != std::string::npos);
      text.replace(at, text.find(',', at) - at, "\"num_attention_heads\": 0");
      text.replace(text.rfind('}'), 1, R"(, "head_dim": 8})");
    });
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("num_attention_heads 0"));
  }
  SECTION("integers no int64 holds (found by fuzz_hf_config: a float-to-integer cast out of range)") {
    // 6.49e20 written as a whole number: nlohmann reads it as a double.
    for (const char* value : {"649223372036854775808", "6.5e20", "9223372036854775808", "-1e300"}) {
      INFO(value);
      const test::TempDir scratch("hf_int");
      const std::string dir = copy_model(scratch, "llama");
      edit_config(dir, [&](std::string& text) {
        const size_t at = text.find("\"max_position_embeddings\": ");
        REQUIRE(at != std::string::npos);
        text.replace(at, text.find(',', at) - at, std::string("\"max_position_embeddings\": ") + value);
      });
      REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("config.json") &&
                                                        Catch::Contains("max_position_embeddings") &&
                                                        Catch::Contains("not an integer vlmc can hold"));
    }
  }
  SECTION("a config whose sizes do not fit the weights: every mismatch listed, keys and shapes named") {
    const std::string dir = copy_model(tmp, "llama");
    edit_config(dir, [](std::string& text) {
      const size_t at = text.find("\"intermediate_size\": 32");
      REQUIRE(at != std::string::npos);
      text.replace(at, 23, "\"intermediate_size\": 40");
    });
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("nothing was loaded") &&
                                                      Catch::Contains("model.layers.0.mlp.up_proj.weight") &&
                                                      Catch::Contains("[32,16]") && Catch::Contains("[40,16]") &&
                                                      Catch::Contains("6 problems"));
  }
  SECTION("a missing and an unexpected tensor") {
    const std::string dir = copy_model(tmp, "llama");
    auto tensors = io::load_safetensors(dir + "/model.safetensors");
    tensors["model.extra.weight"] = tensors.at("model.norm.weight");
    tensors.erase("model.norm.weight");
    io::save_safetensors(dir + "/model.safetensors", tensors);
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("missing tensor 'model.norm.weight'") &&
                                                      Catch::Contains("unexpected tensor 'model.extra.weight'"));
  }
  SECTION("PyTorch pickles only") {
    const std::string dir = copy_model(tmp, "llama");
    fs::remove(dir + "/model.safetensors");
    std::ofstream(dir + "/pytorch_model.bin") << "not read";
    REQUIRE_THROWS_WITH(nn::load_pretrained(dir), Catch::Contains("pickle") && Catch::Contains("scripts/bin_to_safetensors.py"));
  }
  SECTION("not a folder") {
    REQUIRE_THROWS_WITH(nn::load_pretrained(kDir + "/nonexistent"), Catch::Contains("config.json"));
  }
}

TEST_CASE("safetensors folder: tensors are read one at a time, in their dtype or converted", "[hf_checkpoint]") {
  const io::SafetensorsFolder folder(kDir + "/llama_bf16");
  const Tensor raw = folder.read("model.norm.weight");
  CHECK(raw.dtype() == DType::bf16);
  Tensor f32 = Tensor::empty(raw.shape(), DType::f32);
  folder.read_into("model.norm.weight", f32);
  CHECK(test::max_abs_error(f32, raw.to(DType::f32)) == 0.0);
  Tensor wrong = Tensor::empty({3}, DType::f32);
  REQUIRE_THROWS_WITH(folder.read_into("model.norm.weight", wrong),
                      Catch::Contains("model.norm.weight") && Catch::Contains("[16]") && Catch::Contains("[3]"));
  REQUIRE_THROWS_WITH(folder.read("no.such.tensor"), Catch::Contains("no.such.tensor"));
}

TEST_CASE("hf export: every kind written and read back is bit-identical", "[hf_checkpoint]") {
  test::TempDir tmp("hf_export");
  nn::PretrainedOptions with_tower;
  with_tower.vision_tower = kDir + "/clip_full";
  struct Case {
    std::string name;
    nn::HfKeyLayout layout;
  };
  for (const Case& c : {Case{"llama", nn::HfKeyLayout::llava_legacy}, Case{"llama_tied", nn::HfKeyLayout::llava_legacy},
                        Case{"clip_full", nn::HfKeyLayout::llava_legacy}, Case{"llava", nn::HfKeyLayout::llava_legacy},
                        Case{"llava_sharded", nn::HfKeyLayout::llava_newer},
                        Case{"llava_original", nn::HfKeyLayout::llava_legacy}}) {
    INFO(c.name);
    const auto before = nn::load_pretrained(kDir + "/" + c.name, with_tower);
    const std::string out = tmp.file(c.name);
    nn::ExportOptions options;
    options.llava_layout = c.layout;
    nn::save_pretrained(before, out, options);
    CHECK_FALSE(fs::exists(out + ".tmp." + std::to_string(::getpid())));
    const auto after = nn::load_pretrained(out, with_tower);
    CHECK(after.config.kind == (before.config.kind == nn::HfKind::clip ? nn::HfKind::clip_vision : before.config.kind));
    if (before.llava) {
      require_same_state(*before.llava, *after.llava);
      CHECK(after.config.llava.image_token_index == before.config.llava.image_token_index);
      CHECK(after.config.llava.vision_feature_layer == before.config.llava.vision_feature_layer);
    } else if (before.llama) {
      require_same_state(*before.llama, *after.llama);
      CHECK(after.config.ids.eos == before.config.ids.eos);
    } else {
      require_same_state(*before.vision, *after.vision);
    }
    if (c.name == "llava_sharded") CHECK(after.layout == nn::HfKeyLayout::llava_newer);
  }
}

TEST_CASE("hf export: never replaces a folder, and leaves nothing behind on failure", "[hf_checkpoint]") {
  test::TempDir tmp("hf_export_fail");
  const auto llava = nn::load_pretrained(kDir + "/llava");
  const std::string existing = tmp.file("existing");
  fs::create_directories(existing);
  REQUIRE_THROWS_WITH(nn::save_pretrained(llava, existing), Catch::Contains("already exists"));
  CHECK(fs::is_empty(existing));
  // An original-layout model cannot become transformers' LLaVA without an <image> id.
  nn::PretrainedOptions with_tower;
  with_tower.vision_tower = kDir + "/clip_full";
  auto original = nn::load_pretrained(kDir + "/llava_original", with_tower);
  original.config.kind = nn::HfKind::llava;
  const std::string out = tmp.file("converted");
  REQUIRE_THROWS_WITH(nn::save_pretrained(original, out), Catch::Contains("image_token_index -200"));
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(out + ".tmp." + std::to_string(::getpid())));
}

TEST_CASE("hf checkpoint: LLaVA's greedy continuation with the KV cache is transformers' generate",
          "[hf_checkpoint][generation]") {
  const auto loaded = nn::load_pretrained(kDir + "/llava");
  NoGradGuard no_grad;
  const SpliceResult in = loaded.llava->prepare_inputs(want("llava.input_ids"), want("llava.pixel_values"));
  nn::GenerationConfig config;
  config.max_new_tokens = 12;  // no EOS: the golden run had none either
  const nn::GenerationResult out = nn::generate(*loaded.llama, in.inputs_embeds, config);
  const Tensor ids = want("llava.greedy_ids");
  REQUIRE(static_cast<int64_t>(out.ids.size()) == ids.numel());
  for (int64_t i = 0; i < ids.numel(); ++i) {
    INFO("token " << i);
    CHECK(out.ids[i] == static_cast<const int64_t*>(ids.data_ptr())[i]);
  }
}
