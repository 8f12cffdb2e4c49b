// Every connector against its PyTorch reference: the seed's own classes
// (tests/golden/connectors.safetensors, written by make_golden_connectors.py)
// and the post-LLaVA ones (post_llava_connectors.safetensors, written by
// make_golden_post_llava.py):
// the seed's state_dict is loaded with load_state_dict, then the output, the
// input gradient, every parameter gradient of sum(out * proj) and, in
// training mode, the BatchNorm buffers after the forward must match to a
// relative error (in norm) of 1e-5; num_batches_tracked exactly.
#include <catch2/catch.hpp>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "modules/connectors.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;
using test::section;
using json = nlohmann::json;

namespace {

constexpr double kTolerance = 1e-5;

nn::ConnectorConfig config_of(const json& args) {
  nn::ConnectorConfig c;
  c.type = args.at("type").get<std::string>();
  c.dim_vision = args.at("dim_vision").get<int64_t>();
  c.dim_llm = args.at("dim_llm").get<int64_t>();
  if (args.contains("dim_hidden")) c.dim_hidden = args["dim_hidden"].get<int64_t>();
  if (args.contains("grid_size")) c.grid_size = args["grid_size"].get<int64_t>();
  if (args.contains("target_size")) c.target_size = args["target_size"].get<int64_t>();
  if (args.contains("num_conv_layers")) c.num_conv_layers = args["num_conv_layers"].get<int64_t>();
  if (args.contains("max_tokens")) c.max_tokens = args["max_tokens"].get<int64_t>();
  if (args.contains("min_tokens")) c.min_tokens = args["min_tokens"].get<int64_t>();
  if (args.contains("max_visual_tokens")) c.max_visual_tokens = args["max_visual_tokens"].get<int64_t>();
  if (args.contains("merge_size")) c.merge_size = args["merge_size"].get<int64_t>();
  if (args.contains("num_latents")) c.num_latents = args["num_latents"].get<int64_t>();
  if (args.contains("resampler_depth")) c.resampler_depth = args["resampler_depth"].get<int64_t>();
  if (args.contains("resampler_heads")) c.resampler_heads = args["resampler_heads"].get<int64_t>();
  if (args.contains("resampler_head_dim")) c.resampler_head_dim = args["resampler_head_dim"].get<int64_t>();
  if (args.contains("resampler_kv_heads")) c.resampler_kv_heads = args["resampler_kv_heads"].get<int64_t>();
  if (args.contains("reg_depth")) c.reg_depth = args["reg_depth"].get<int64_t>();
  return c;
}

void check_case(const std::string& name, const json& args, const std::map<std::string, Tensor>& all) {
  INFO("case " << name << " " << args.dump());
  auto connector = nn::make_connector(config_of(args));
  connector->load_state_dict(section(all, name + ".state."));
  connector->train(args.at("training").get<bool>());
  std::optional<int64_t> target;
  if (!args.at("target_tokens").is_null()) target = args["target_tokens"].get<int64_t>();

  Tensor x = all.at(name + ".in.visual_features").clone().set_requires_grad(true);
  const Tensor out = connector->forward(x, target);
  CHECK_REL(out, all.at(name + ".out"), kTolerance);
  sum(out * all.at(name + ".proj")).backward();

  CHECK_REL(x.grad(), all.at(name + ".grad.visual_features"), kTolerance);
  const auto grads = section(all, name + ".grad.");
  int checked = 0;
  for (const auto& [pname, p] : connector->named_parameters()) {
    INFO("parameter " << pname);
    const Tensor& expected = grads.at(pname);
    const Tensor actual = p.grad().defined() ? p.grad() : Tensor::zeros(p.shape());
    if (max(abs(expected)).item() == 0.0) {
      CHECK(max(abs(actual)).item() == 0.0);  // no gradient in the seed either
    } else if (max(abs(expected)).item() < 1e-6) {
      // A conv bias before training-mode BatchNorm: the batch mean cancels it,
      // so its true gradient is zero and both sides hold only rounding noise.
      CHECK(max(abs(actual)).item() < 1e-6);
    } else {
      CHECK_REL(actual, expected, kTolerance);
    }
    ++checked;
  }
  CHECK(checked + 1 == static_cast<int>(grads.size()));  // + visual_features

  const auto after = section(all, name + ".after.");
  const auto buffers = connector->named_buffers();
  if (args.at("training").get<bool>()) CHECK(after.size() == buffers.size());
  for (const auto& [bname, b] : buffers) {
    INFO("buffer " << bname);
    // Training moves the running statistics; eval leaves them as loaded.
    const auto it = after.find(bname);
    const Tensor& expected = it != after.end() ? it->second : all.at(name + ".state." + bname);
    if (b.dtype() == DType::i64) {
      CHECK(b.item() == expected.item());
    } else {
      CHECK_REL(b, expected, kTolerance);
    }
  }
}

}  // namespace

TEST_CASE("connectors match their PyTorch references in train and eval mode", "[modules][golden]") {
  std::map<std::string, int> per_type;
  // The seed's six (make_golden_connectors.py), then those after LLaVA
  // (make_golden_post_llava.py: transformers' classes and restated papers' code).
  for (const char* family : {"connectors", "post_llava_connectors"}) {
    const test::GoldenFile golden = test::load_golden(family);
    for (const auto& [name, args] : golden.cases) {
      SECTION(std::string(family) + "/" + name) { check_case(name, args, golden.tensors); }
      ++per_type[args.at("type").get<std::string>()];
    }
  }
  // Every registered connector type is covered, in both modes.
  for (const std::string& type : nn::connector_types()) {
    INFO("type " << type);
    CHECK(per_type[type] >= 2);
  }
}
