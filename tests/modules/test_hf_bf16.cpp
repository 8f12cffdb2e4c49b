// Hugging Face models with their frozen parts in 16 bits (PretrainedOptions::
// weights, modules/hf_checkpoint.h): the golden BF16 LLaMA kept in BF16 gives
// transformers' logits; a LLaVA forced to bf16 computes what the f32 model
// with the same rounded weights computes (logits, greedy ids, the projector's
// gradient through the frozen bf16 LLM); the projector stays an f32 master.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "core/autograd.h"
#include "core/io/tensor_io.h"
#include "modules/generation.h"
#include "modules/hf_checkpoint.h"
#include "modules/kv_cache.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const std::string kDir = std::string(VLMC_GOLDEN_DIR) + "/hf_models";

Tensor want(const std::string& name) {
  static const auto e = io::load_safetensors(kDir + "/expected.safetensors");
  return e.at(name);
}

nn::PretrainedModel load(const std::string& name, nn::WeightsDType weights) {
  nn::PretrainedOptions options;
  options.weights = weights;
  return nn::load_pretrained(kDir + "/" + name, options);
}

// The f32 model's kept matrices rounded to bf16 and widened back in place: an
// f32 model holding exactly the bf16 model's values.
void round_like_bf16(const nn::Module& module) {
  NoGradGuard no_grad;
  for (const auto& [name, p] : module.named_parameters())
    if (nn::keeps_low_precision(name, p)) Tensor(p).copy_(p.to(DType::bf16));
}

}  // namespace

TEST_CASE("hf bf16: the golden BF16 LLaMA kept in BF16 gives transformers' logits", "[bf16_weights][hf_checkpoint]") {
  const auto loaded = load("llama_bf16", nn::WeightsDType::file);
  REQUIRE(loaded.llama);
  int64_t bf16 = 0;
  for (const auto& [name, p] : loaded.llama->named_parameters()) {
    INFO(name);
    CHECK(p.dtype() == (p.dim() >= 2 ? DType::bf16 : DType::f32));
    CHECK(!p.requires_grad());
    bf16 += p.dtype() == DType::bf16;
  }
  CHECK(bf16 > 0);
  CHECK(loaded.report.memory_by_dtype.count("bf16") == 1);
  CHECK(loaded.report.summary().find("in memory bf16") != std::string::npos);
  NoGradGuard no_grad;
  const Tensor logits = loaded.llama->forward_ids(want("llama.input_ids"), want("llama.attention_mask"));
  REQUIRE(logits.dtype() == DType::f32);
  CHECK(test::rel_error(logits, want("llama_bf16.logits")) < 1e-4);
  // The same values as the f32 load: only summation orders differ.
  const auto f32 = load("llama_bf16", nn::WeightsDType::f32);
  for (const auto& [name, p] : f32.llama->named_parameters()) CHECK(p.dtype() == DType::f32);
  const Tensor logits_f32 = f32.llama->forward_ids(want("llama.input_ids"), want("llama.attention_mask"));
  CHECK(test::rel_error(logits, logits_f32) < 1e-5);
  // The cache holds f32 activations.
  CHECK(nn::make_kv_cache(*loaded.llama, 1, 8).dtype() == DType::f32);
}

TEST_CASE("hf bf16: greedy decoding with BF16 weights equals the f32 load's", "[bf16_weights][generation]") {
  auto bf16 = load("llama_bf16", nn::WeightsDType::file);
  auto f32 = load("llama_bf16", nn::WeightsDType::f32);
  nn::GenerationConfig config;
  config.max_new_tokens = 10;
  config.keep_prompt_logits = true;
  const Tensor ids = want("llama.input_ids").narrow(0, 0, 1).contiguous();
  const auto a = nn::generate_from_ids(*bf16.llama, ids, config);
  const auto b = nn::generate_from_ids(*f32.llama, ids, config);
  CHECK(a.ids == b.ids);
  CHECK(a.ids.size() == 10);
  CHECK(test::rel_error(a.prompt_logits, b.prompt_logits) < 1e-5);
}

TEST_CASE("hf bf16: a LLaVA with bf16 frozen parts computes what the f32 model with the same values does",
          "[bf16_weights][llava]") {
  auto low = load("llava", nn::WeightsDType::bf16);
  auto ref = load("llava", nn::WeightsDType::f32);
  REQUIRE(low.llava);
  round_like_bf16(*ref.llama);
  round_like_bf16(*ref.vision);
  ref.llava->set_stage(1);
  CHECK(low.llava->stage() == 1);
  for (const auto& [name, p] : low.llava->named_parameters()) {
    INFO(name);
    const bool projector = name.rfind("connector.", 0) == 0;
    CHECK(p.requires_grad() == projector);
    CHECK(p.dtype() == (!projector && nn::keeps_low_precision(name, p) ? DType::bf16 : DType::f32));
  }

  // Logits: equal to the rounded f32 model's up to summation order, and
  // within bf16 rounding of transformers' f32 logits.
  const Tensor input_ids = want("llava.input_ids"), pixels = want("llava.pixel_values");
  {
    NoGradGuard no_grad;
    const Tensor logits = low.llava->forward(input_ids, pixels).logits;
    REQUIRE(logits.dtype() == DType::f32);
    CHECK(test::rel_error(logits, ref.llava->forward(input_ids, pixels).logits) < 1e-5);
    CHECK(test::rel_error(logits, want("llava.logits")) < 2e-2);
  }

  SECTION("stage 1: the projector's gradient through the frozen bf16 LLM") {
    const auto loss_of = [&](nn::LlavaModel& m) {
      const Tensor loss = m.forward(input_ids, pixels, input_ids).loss;
      loss.backward();
      return loss.item();
    };
    const double l_low = loss_of(*low.llava), l_ref = loss_of(*ref.llava);
    CHECK(std::abs(l_low - l_ref) <= 1e-5 * std::abs(l_ref));
    const auto ref_params = ref.llava->named_parameters();
    std::map<std::string, Tensor> ref_by_name(ref_params.begin(), ref_params.end());
    int64_t checked = 0;
    for (const auto& [name, p] : low.llava->named_parameters()) {
      INFO(name);
      if (name.rfind("connector.", 0) != 0) {
        CHECK(!p.grad().defined());
        continue;
      }
      REQUIRE(p.grad().defined());
      CHECK(test::rel_error(p.grad(), ref_by_name.at(name).grad()) < 1e-4);
      ++checked;
    }
    CHECK(checked == 4);
  }

  SECTION("greedy generation over the spliced prompt") {
    NoGradGuard no_grad;
    nn::GenerationConfig config;
    config.max_new_tokens = 8;
    const Tensor embeds_low = low.llava->prepare_inputs(input_ids, pixels).inputs_embeds;
    const Tensor embeds_ref = ref.llava->prepare_inputs(input_ids, pixels).inputs_embeds;
    REQUIRE(embeds_low.dtype() == DType::f32);
    CHECK(test::max_abs_error(embeds_low, embeds_ref) < 1e-5);
    const auto a = nn::generate(*low.llama, embeds_low, config);
    const auto b = nn::generate(*ref.llama, embeds_ref, config);
    CHECK(a.ids.size() == 8);
    CHECK(a.ids == b.ids);
  }

  SECTION("stage 2 on a bf16 LLM is refused at the first product, naming it") {
    low.llava->set_stage(2);
    REQUIRE_THROWS_WITH(low.llava->forward(input_ids, pixels),
                        Catch::Contains("requires grad") && Catch::Contains("f32 masters"));
  }
}

TEST_CASE("hf bf16: convert_frozen_weights, weights dtype names", "[bf16_weights]") {
  auto m = load("llama", nn::WeightsDType::f32);
  const Tensor before = m.llama->head_weight().detach().clone();
  nn::convert_frozen_weights(*m.llama, DType::bf16);
  CHECK(m.llama->head_weight().dtype() == DType::bf16);
  CHECK(test::max_abs_error(m.llama->head_weight().to(DType::f32), before.to(DType::bf16).to(DType::f32)) == 0.0);
  for (const auto& p : m.llama->parameters()) CHECK(!p.requires_grad());
  CHECK(nn::parse_weights_dtype("file") == nn::WeightsDType::file);
  CHECK(std::string(nn::weights_dtype_name(nn::WeightsDType::bf16)) == "bf16");
  REQUIRE_THROWS_WITH(nn::parse_weights_dtype("f8"), Catch::Contains("'f8'") && Catch::Contains("file, f32, bf16"));
}
