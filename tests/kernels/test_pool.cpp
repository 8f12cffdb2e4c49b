// Adaptive average pooling over channels-last grids.
#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;

TEST_CASE("adaptive_avg_pool2d uses PyTorch's windows", "[pool]") {
  // A 1x5x1x1 column pooled to 3: windows [0,2), [1,4), [3,5).
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5}, {1, 5, 1, 1});
  const std::vector<double> y = adaptive_avg_pool2d(x, 3, 1).to_vector<double>();
  CHECK(y[0] == Approx(1.5));
  CHECK(y[1] == Approx(3.0));
  CHECK(y[2] == Approx(4.5));
  // Upsampling (out > in) repeats inputs.
  const std::vector<double> up = adaptive_avg_pool2d(x.narrow(1, 0, 2), 4, 1).to_vector<double>();
  CHECK(up == std::vector<double>{1, 1, 2, 2});
}

TEST_CASE("adaptive_avg_pool2d 24x24 -> 12x12 averages 2x2 blocks per channel", "[pool]") {
  Generator gen(5);
  const Tensor x = Tensor::randn({2, 24, 24, 3}, gen, DType::f64);
  const Tensor y = adaptive_avg_pool2d(x, 12, 12);
  REQUIRE(y.shape() == Shape{2, 12, 12, 3});
  const std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
  auto at = [&](int b, int i, int j, int c) { return xv[static_cast<size_t>(((b * 24 + i) * 24 + j) * 3 + c)]; };
  const double expected = (at(1, 6, 10, 2) + at(1, 6, 11, 2) + at(1, 7, 10, 2) + at(1, 7, 11, 2)) / 4;
  CHECK(yv[static_cast<size_t>(((1 * 12 + 3) * 12 + 5) * 3 + 2)] == Approx(expected));
}

TEST_CASE("adaptive_avg_pool2d gradients at non-divisible sizes", "[pool]") {
  for (auto [h, w, oh, ow] : std::vector<std::array<int64_t, 4>>{{5, 7, 3, 2}, {4, 4, 4, 4}, {3, 2, 5, 4}, {6, 6, 1, 1}}) {
    INFO(h << "x" << w << " -> " << oh << "x" << ow);
    CHECK_GRADIENTS([=](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], oh, ow); },
                    {test::leaf({2, h, w, 3}, 7)});
  }
  // A non-contiguous input (a permuted view).
  CHECK_GRADIENTS([](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0].permute({0, 2, 1, 3}), 2, 3); },
                  {test::leaf({1, 5, 4, 2}, 8)});
}

TEST_CASE("adaptive_avg_pool2d rejects bad shapes by name", "[pool]") {
  REQUIRE_THROWS_WITH(adaptive_avg_pool2d(Tensor::zeros({2, 576, 1024}), 12, 12),
                      Catch::Contains("adaptive_avg_pool2d: input [2,576,1024] must be [B, H, W, C]"));
  REQUIRE_THROWS_WITH(adaptive_avg_pool2d(Tensor::zeros({1, 4, 4, 2}), 0, 2),
                      Catch::Contains("output size 0x2 must be positive"));
  REQUIRE_THROWS_WITH(adaptive_avg_pool2d(Tensor::zeros({1, 4, 4, 2}, DType::i64), 2, 2),
                      Catch::Contains("must be f32 or f64"));
}
