// The seed's connectors: parameter counts, state_dict names, shapes, errors.
#include <catch2/catch.hpp>

#include "modules/connectors.h"
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
}

TEST_CASE("connectors map [B, N, Dv] to [B, N', Dllm]", "[modules]") {
  Generator gen(3);
  const Tensor x = Tensor::randn({2, 36, 8}, gen);
  CHECK(nn::LinearProjection(8, 16, gen).forward(x).shape() == Shape{2, 36, 16});
  CHECK(nn::MLPConnector(8, 16, std::nullopt, gen).forward(x).shape() == Shape{2, 36, 16});
  CHECK(nn::DownsamplingConnector(8, 16, 6, 4, gen).forward(x).shape() == Shape{2, 16, 16});
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
