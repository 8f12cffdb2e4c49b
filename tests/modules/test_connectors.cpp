// The seed's connectors: parameter counts, state_dict names, shapes, errors.
#include <catch2/catch.hpp>

#include "modules/connectors.h"
#include "modules/connectors_post_llava.h"
#include "modules/connector.h"
#include "modules/connector_registry.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {
std::vector<std::string> names(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.named_parameters()) out.push_back(name);
  return out;
}
}  // namespace

TEST_CASE("connector parameter counts match the seed at its defaults", "[modules]") {
  CHECK(nn::LinearProjection().num_parameters() == 4198400);
  CHECK(nn::MLPConnector().num_parameters() == 20979712);
  CHECK(nn::DownsamplingConnector().num_parameters() == 20979712);
  CHECK(nn::MLPConnector(1024, 4096, 2048).num_parameters() == 1024 * 2048 + 2048 + 2048 * 4096 + 4096);
  CHECK(nn::CAbstractor().num_parameters() == 39860224);  // BatchNorm weight+bias in, buffers not
  CHECK(nn::DynamicResolutionConnector().num_parameters() == 20980737);
  CHECK(nn::OCRProjectionConnector().num_parameters() == 22030336);
}

TEST_CASE("make_connector builds every type with the seed's defaults", "[modules]") {
  // The seed's six, then those after LLaVA at LLaVA-1.5's 1024 -> 4096 on 576 patches.
  // Honeybee's there (hidden 1024, 3 blocks a stage, 12x12 queries): 37398016, as
  // sum(p.numel()) of make_golden_post_llava.py's HoneybeeCAbstractor(1024, 4096,
  // 24, 12, 1024, 3) around timm 0.9.16's RegStage printed.
  const std::vector<int64_t> counts = {4198400,  20979712, 20979712, 39860224, 20980737,
                                       22030336, 33564672, 33570816, 21020672, 37398016};
  REQUIRE(nn::connector_types().size() == counts.size() + 2);  // + perceiver, qwen-resampler
  for (size_t i = 0; i < counts.size(); ++i) {
    nn::ConnectorConfig config;
    config.type = nn::connector_types()[i];
    INFO(config.type);
    CHECK(nn::make_connector(config)->num_parameters() == counts[i]);
  }
  // The perceiver at Idefics2-8B's sizes is 740M parameters, too many to build
  // in a unit test: its closed form is checked against the count of
  // transformers' Idefics2Connector at Idefics2Config()'s defaults (vision width
  // 768): sum(p.numel() for p in Idefics2Connector(Idefics2Config()).parameters())
  // printed 732209152 with transformers 4.45.2.
  nn::ConnectorConfig idefics2;
  idefics2.type = "perceiver";
  idefics2.dim_vision = 768;
  CHECK(nn::connector_types()[counts.size()] == "perceiver");
  CHECK(nn::connector_kind("perceiver").parameters(idefics2) == 732209152);
  // Qwen-VL's resampler likewise, against the golden script's reference
  // (make_golden_post_llava.py's QwenVLProjector, pos_embed a buffer) at
  // Qwen-VL's own sizes (ViT width 1664, 4096, 256 queries) and at the
  // defaults: 91791360 and 88383488 parameters.
  CHECK(nn::connector_types().back() == "qwen-resampler");
  nn::ConnectorConfig qwen;
  qwen.type = "qwen-resampler";
  CHECK(nn::connector_kind("qwen-resampler").parameters(qwen) == 88383488);
  qwen.dim_vision = 1664;
  qwen.num_latents = 256;
  CHECK(nn::connector_kind("qwen-resampler").parameters(qwen) == 91791360);

  nn::ConnectorConfig bad;
  bad.type = "qformer";
  REQUIRE_THROWS_WITH(nn::make_connector(bad),
                      Catch::Contains("unknown connector type \"qformer\" (known: linear, mlp, downsample, "
                                      "c-abstractor, dynamic, ocr, patch-merger, pixel-shuffle, ldp-v2, honeybee, perceiver, qwen-resampler)"));
  bad.type = "linear";
  bad.dim_hidden = 8;
  REQUIRE_THROWS_WITH(nn::make_connector(bad), Catch::Contains("dim_hidden applies only to types mlp, honeybee, perceiver, not linear"));
}

TEST_CASE("connector parameters carry PyTorch's state_dict names", "[modules]") {
  CHECK(names(nn::LinearProjection(8, 16)) == std::vector<std::string>{"proj.weight", "proj.bias"});
  CHECK(names(nn::MLPConnector(8, 16)) ==
        std::vector<std::string>{"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"});
  CHECK(names(nn::DownsamplingConnector(8, 16, 4, 2)) ==
        std::vector<std::string>{"connector.mlp.0.weight", "connector.mlp.0.bias",
                                 "connector.mlp.2.weight", "connector.mlp.2.bias"});
  nn::MLPConnector m(8, 16);
  CHECK(m.named_parameters()[0].second.shape() == Shape{16, 8});  // [out, in]
  CHECK(names(nn::DynamicResolutionConnector(8, 16)) ==
        std::vector<std::string>{"connector.mlp.0.weight", "connector.mlp.0.bias", "connector.mlp.2.weight",
                                 "connector.mlp.2.bias", "token_selector.0.weight", "token_selector.0.bias"});
  CHECK(names(nn::OCRProjectionConnector(8, 16, 10)) ==
        std::vector<std::string>{"pos_embed", "connector.0.weight", "connector.0.bias", "connector.1.weight",
                                 "connector.1.bias", "connector.3.weight", "connector.3.bias"});
  CHECK(names(nn::CAbstractor(8, 16, 4, 2, 1)) ==
        std::vector<std::string>{"conv_layers.0.weight", "conv_layers.0.bias", "conv_layers.1.weight",
                                 "conv_layers.1.bias", "proj.0.weight", "proj.0.bias", "proj.2.weight",
                                 "proj.2.bias"});
}

TEST_CASE("connectors map [B, N, Dv] to [B, N', Dllm]", "[modules]") {
  Generator gen(3);
  const Tensor x = Tensor::randn({2, 36, 8}, gen);
  CHECK(nn::LinearProjection(8, 16, gen).forward(x).shape() == Shape{2, 36, 16});
  CHECK(nn::MLPConnector(8, 16, std::nullopt, gen).forward(x).shape() == Shape{2, 36, 16});
  CHECK(nn::DownsamplingConnector(8, 16, 6, 4, gen).forward(x).shape() == Shape{2, 16, 16});
  CHECK(nn::CAbstractor(8, 16, 6, 2, 2, gen).forward(x).shape() == Shape{2, 4, 16});
  CHECK(nn::OCRProjectionConnector(8, 16, 20, gen).forward(x).shape() == Shape{2, 36, 16});
  nn::DynamicResolutionConnector dyn(8, 16, 10, 4, false, gen);
  CHECK(dyn.forward(x).shape() == Shape{2, 10, 16});     // min(N, max_tokens)
  CHECK(dyn.forward(x, 5).shape() == Shape{2, 5, 16});
  CHECK(dyn.forward(x, 40).shape() == Shape{2, 36, 16});  // pass-through
}

TEST_CASE("the C-Abstractor follows the seed's stride rule", "[modules]") {
  // grid 24 -> 12: 24 // 2 >= 12 gives stride 2, 24 // 4 < 12 gives 1.
  nn::CAbstractor cabs(4, 4, 24, 12, 3);
  CHECK(cabs.conv_layers->convs[0]->stride == 2);
  CHECK(cabs.conv_layers->convs[1]->stride == 1);
  CHECK(cabs.conv_layers->convs[2]->stride == 1);
  CHECK(cabs.conv_layers->convs[0]->padding == 1);
  nn::CAbstractor deep(4, 4, 9, 2, 3);  // 9 // 2 = 4, 9 // 4 = 2, 9 // 8 = 1
  CHECK(deep.conv_layers->convs[1]->stride == 2);
  CHECK(deep.conv_layers->convs[2]->stride == 1);
}

TEST_CASE("the dynamic connector keeps the best tokens in order", "[modules]") {
  Generator gen(6);
  nn::DynamicResolutionConnector dyn(4, 3, 16, 2, false, gen);
  const Tensor x = Tensor::randn({2, 7, 4}, gen);
  const Tensor scores = dyn.token_selector->forward(x).squeeze(-1);
  const Tensor kept = gather_rows(x, topk_indices(scores, 3));
  CHECK_REL(dyn.forward(x, 3), dyn.connector->forward(kept), 0.0);
  REQUIRE_THROWS_WITH(dyn.forward(x, 0), Catch::Contains("target_tokens must be positive, got 0"));
}

TEST_CASE("score weighting lets the dynamic scorer learn", "[modules]") {
  Generator gen(7);
  nn::DynamicResolutionConnector seed_like(4, 3, 16, 2, false, gen), weighted(4, 3, 16, 2, true, gen);
  weighted.load_state_dict(seed_like.state_dict());
  const Tensor x = Tensor::randn({2, 7, 4}, gen);
  sum(seed_like.forward(x, 3)).backward();
  sum(weighted.forward(x, 3)).backward();
  const Tensor& w0 = static_cast<nn::Linear&>((*seed_like.token_selector)[0]).weight;
  const Tensor& w1 = static_cast<nn::Linear&>((*weighted.token_selector)[0]).weight;
  CHECK_FALSE(w0.grad().defined());  // the seed: top-k indices carry no gradient
  REQUIRE(w1.grad().defined());
  CHECK(max(abs(w1.grad())).item() > 0.0);
  // The kept tokens are those of the seed, scaled by their scores.
  const Tensor scores = weighted.token_selector->forward(x).squeeze(-1);
  const Tensor idx = topk_indices(scores, 3);
  const Tensor scaled = gather_rows(x, idx) * gather_rows(scores.unsqueeze(-1), idx);
  CHECK_REL(weighted.forward(x, 3), weighted.connector->forward(scaled), 1e-6);
}

TEST_CASE("OCR positions interpolate as F.interpolate linear", "[modules]") {
  // 2 -> 4, align_corners=False: sources -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped to the last).
  CHECK_REL(nn::linear_interpolation_matrix(2, 4),
            Tensor::from_vector(std::vector<float>{1, 0, 0.75f, 0.25f, 0.25f, 0.75f, 0, 1}, {4, 2}), 1e-7);
  // Same size: the identity.
  CHECK_REL(nn::linear_interpolation_matrix(3, 3),
            Tensor::from_vector(std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3}), 0.0);
  // Interpolated positions receive gradients.
  Generator gen(8);
  nn::OCRProjectionConnector ocr(4, 3, 5, gen);
  sum(ocr.forward(Tensor::randn({1, 8, 4}, gen))).backward();
  REQUIRE(ocr.pos_embed.grad().defined());
  CHECK(ocr.pos_embed.grad().shape() == Shape{1, 5, 4});
}

TEST_CASE("the downsampler equals pooling followed by the MLP", "[modules]") {
  Generator gen(4);
  nn::DownsamplingConnector down(4, 6, 5, 3, gen);
  const Tensor x = Tensor::randn({2, 25, 4}, gen);
  const Tensor pooled = adaptive_avg_pool2d(x.reshape({2, 5, 5, 4}), 3, 3).reshape({2, 9, 4});
  CHECK_REL(down.forward(x), down.connector->forward(pooled), 1e-6);
}

TEST_CASE("connectors reject features of the wrong shape by name", "[modules]") {
  nn::DownsamplingConnector down(8, 16, 4, 2);
  REQUIRE_THROWS_WITH(down.forward(Tensor::zeros({1, 15, 8})),
                      Catch::Contains("DownsamplingConnector: visual_features [1,15,8] hold 15 tokens but "
                                      "grid_size 4 needs 16"));
  REQUIRE_THROWS_WITH(nn::MLPConnector(8, 16).forward(Tensor::zeros({1, 4, 7})),
                      Catch::Contains("MLPConnector: visual_features [1,4,7] have width 7 but dim_vision is 8"));
  REQUIRE_THROWS_WITH(nn::LinearProjection(8, 16).forward(Tensor::zeros({4, 8})),
                      Catch::Contains("must be [batch, tokens, dim_vision]"));
  REQUIRE_THROWS_WITH(nn::CAbstractor(8, 16, 4, 2).forward(Tensor::zeros({2, 15, 8})),
                      Catch::Contains("CAbstractor: visual_features [2,15,8] hold 15 tokens but grid_size 4 "
                                      "needs 16"));
  REQUIRE_THROWS_WITH(nn::OCRProjectionConnector(8, 16, 4).forward(Tensor::zeros({1, 3, 9})),
                      Catch::Contains("OCRProjectionConnector: visual_features [1,3,9] have width 9 but "
                                      "dim_vision is 8"));
  REQUIRE_THROWS_WITH(nn::DynamicResolutionConnector(8, 16).forward(Tensor::zeros({1, 3, 9})),
                      Catch::Contains("DynamicResolutionConnector: visual_features [1,3,9] have width 9"));
  REQUIRE_THROWS_WITH(nn::MLPConnector(8, 16).forward(Tensor::zeros({1, 3, 8}), 2),
                      Catch::Contains("MLPConnector: forward takes no target_tokens (got 2)"));
}

TEST_CASE("modules freeze, count and switch modes", "[modules]") {
  nn::MLPConnector m(4, 4);
  for (const Tensor& p : m.parameters()) CHECK(p.requires_grad());
  m.set_requires_grad(false);
  for (const Tensor& p : m.parameters()) CHECK_FALSE(p.requires_grad());
  CHECK(m.is_training());
  m.eval();
  CHECK_FALSE(m.is_training());
  CHECK_FALSE((*m.mlp)[0].is_training());
}

TEST_CASE("connectors after LLaVA: space_to_depth's order and the errors that name the input", "[modules]") {
  // [1, 2, 4, 1] holding 0..7 row-major: windows (0, 1, 4, 5) and (2, 3, 6, 7).
  const Tensor grid = Tensor::arange(8, DType::f32).reshape({1, 2, 4, 1});
  CHECK(nn::space_to_depth(grid, 2).to_vector<float>() == std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7});
  CHECK_THROWS_WITH(nn::space_to_depth(grid, 3), Catch::Contains("grid 2x4 of x [1,2,4,1] is not a multiple of the factor 3"));

  // A 1x1 depthwise kernel is a per-channel scale plus bias.
  const Tensor x = Tensor::randn({2, 3, 3, 4});
  const Tensor w = Tensor::randn({4, 1, 1, 1}), b = Tensor::randn({4});
  CHECK_REL(nn::depthwise_conv2d(x, w, b), x * w.reshape({4}) + b, 1e-6);
  CHECK_THROWS_WITH(nn::depthwise_conv2d(x, Tensor::randn({4, 1, 2, 2}), b),
                    Catch::Contains("weight [4,1,2,2] must be [C, 1, k, k] with C = 4 and k odd"));

  nn::ConnectorConfig c;
  c.type = "patch-merger";
  c.dim_vision = 4;
  c.dim_llm = 6;
  c.grid_size = 5;
  CHECK_THROWS_WITH(nn::make_connector(c), Catch::Contains("PatchMerger: grid_size 5 must be a positive multiple of merge_size 2"));
  c.type = "perceiver";
  c.resampler_heads = 6;
  c.resampler_kv_heads = 4;
  CHECK_THROWS_WITH(nn::make_connector(c),
                    Catch::Contains("resampler_heads 6 must be a multiple of resampler_kv_heads 4"));
  c.type = "ldp-v2";
  c.grid_size = 4;
  c.target_size = 2;
  CHECK_THROWS_WITH(nn::make_connector(c)->forward(Tensor::randn({1, 15, 4})),
                    Catch::Contains("LDPv2Connector: visual_features [1,15,4] hold 15 tokens but grid_size 4 needs 16"));
}
