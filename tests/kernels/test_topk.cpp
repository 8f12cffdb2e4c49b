// topk_indices and gather_rows: hand-checked values, the tie/NaN rules, a
// brute-force oracle at the seed's sizes, PyTorch golden values, gradients
// and error messages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/topk.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;

namespace {

// The ranking by definition: stable sort by score descending (NaN first),
// take k, sort the positions.
std::vector<int64_t> brute_force_topk(const std::vector<double>& row, int64_t k) {
  std::vector<int64_t> order(row.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  const auto rank = [](double v) { return std::isnan(v) ? INFINITY : v; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double va = row[static_cast<size_t>(a)], vb = row[static_cast<size_t>(b)];
    if (std::isnan(va) != std::isnan(vb)) return std::isnan(va);
    return rank(va) > rank(vb);
  });
  order.resize(static_cast<size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int64_t> brute_force_topk(const Tensor& scores, int64_t k) {
  const std::vector<double> v = scores.to_vector<double>();
  const int64_t rows = scores.size(0), n = scores.size(1);
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int64_t> one =
        brute_force_topk(std::vector<double>(v.begin() + r * n, v.begin() + (r + 1) * n), k);
    out.insert(out.end(), one.begin(), one.end());
  }
  return out;
}

}  // namespace

TEST_CASE("topk_indices returns the k best positions in ascending order", "[topk]") {
  const Tensor scores = Tensor::from_vector(std::vector<float>{0.1f, 0.9f, 0.5f, 0.7f, 3, 2, 1, 0}, {2, 4});
  CHECK(topk_indices(scores, 2).to_vector<int64_t>() == std::vector<int64_t>{1, 3, 0, 1});
  CHECK(topk_indices(scores, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(topk_indices(scores, 4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3});
  const Tensor out = topk_indices(scores.to(DType::f64), 3);
  CHECK(out.dtype() == DType::i64);
  CHECK(out.shape() == Shape{2, 3});
  CHECK(out.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 3, 0, 1, 2});
}

TEST_CASE("topk_indices breaks ties by the lower position, ranks NaN first and -0 as +0", "[topk]") {
  for (const DType dtype : {DType::f32, DType::f64}) {
    INFO(dtype_name(dtype));
    const Tensor ties = Tensor::from_vector(std::vector<double>{1, 2, 2, 1, 2, 1}, {1, 6}).to(dtype);
    CHECK(topk_indices(ties, 2).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    CHECK(topk_indices(ties, 4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 4});
    const Tensor nan = Tensor::from_vector(std::vector<double>{INFINITY, NAN, 5, NAN, -1}, {1, 5}).to(dtype);
    CHECK(topk_indices(nan, 1).to_vector<int64_t>() == std::vector<int64_t>{1});
    CHECK(topk_indices(nan, 3).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 3});
    const Tensor zeros = Tensor::from_vector(std::vector<double>{-1, -0.0, 0.0, -0.0}, {1, 4}).to(dtype);
    CHECK(topk_indices(zeros, 2).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    const Tensor constant = Tensor::full({2, 7}, 0.25, dtype);
    CHECK(topk_indices(constant, 3).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 0, 1, 2});
  }
}

TEST_CASE("topk_indices agrees with a brute-force ranking at the seed's and odd shapes", "[topk]") {
  uint64_t seed = 40;
  for (auto [rows, n, k] : std::vector<std::array<int64_t, 3>>{
           {4, 576, 144}, {16, 576, 144}, {3, 4096, 1000}, {2, 33, 33}, {5, 1, 1}, {2, 1000, 1}, {1, 300, 299}}) {
    INFO(rows << "x" << n << " k=" << k);
    Generator gen(seed++);
    // Rounded scores: many exact ties, so the tie-break is exercised.
    const Tensor scores = mul(Tensor::randn({rows, n}, gen, DType::f64), 4.0).to(DType::i64).to(DType::f64);
    CHECK(topk_indices(scores, k).to_vector<int64_t>() == brute_force_topk(scores, k));
    CHECK(topk_indices(scores.to(DType::f32), k).to_vector<int64_t>() == brute_force_topk(scores, k));
  }
}

TEST_CASE("gather_rows picks rows and scatters the gradient back into zeros", "[topk]") {
  const Tensor x = Tensor::arange(2 * 3 * 2, DType::f64).view({2, 3, 2}).detach();
  Tensor leaf = x.clone();
  leaf.set_requires_grad(true);
  const Tensor indices = Tensor::from_vector(std::vector<int64_t>{2, 0, 1, 2}, {2, 2});
  const Tensor y = gather_rows(leaf, indices);
  REQUIRE(y.shape() == Shape{2, 2, 2});
  CHECK(y.to_vector<double>() == std::vector<double>{4, 5, 0, 1, 8, 9, 10, 11});
  y.backward(Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}));
  CHECK(leaf.grad().to_vector<double>() == std::vector<double>{3, 4, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8});
  // Any dtype moves: integer rows, and a CPU index for any x.
  CHECK(gather_rows(Tensor::arange(6).view({1, 3, 2}), Tensor::from_vector(std::vector<int64_t>{1}, {1, 1}))
            .to_vector<int64_t>() == std::vector<int64_t>{2, 3});
}

TEST_CASE("gather_rows gradients (f64 finite differences)", "[topk]") {
  const Tensor indices = Tensor::from_vector(std::vector<int64_t>{4, 0, 2, 1, 3, 0}, {2, 3});
  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return gather_rows(in[0], indices); },
                  {test::leaf({2, 5, 3}, 11)});
  // A non-contiguous x: a transposed view of the leaf.
  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return gather_rows(in[0].transpose(0, 1), indices); },
                  {test::leaf({5, 2, 3}, 12)});
  // The seed's chain: indices from the scores (constant), then the gather.
  const Tensor scores = Tensor::randn({3, 8}, DType::f64);
  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return gather_rows(in[0], topk_indices(scores, 8)); },
                  {test::leaf({3, 8, 2}, 13)});
  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return gather_rows(in[0], topk_indices(scores, 3)); },
                  {test::leaf({3, 8, 2}, 14)});
}

TEST_CASE("topk_indices and gather_rows match PyTorch golden values", "[topk][golden]") {
  const test::GoldenFile golden = test::load_golden("topk_splice");
  const auto& file = golden.tensors;
  int cases = 0;
  for (const auto& [name, args] : golden.cases) {
    if (args.value("op", "") != "topk_gather") continue;
    DYNAMIC_SECTION(name) {
      const Tensor& scores = file.at(name + ".in.scores");
      Tensor x = file.at(name + ".in.x").clone();
      x.set_requires_grad(true);
      const Tensor indices = topk_indices(scores, args.at("k").get<int64_t>());
      CHECK(indices.to_vector<int64_t>() == file.at(name + ".out.indices").to_vector<int64_t>());
      const Tensor y = gather_rows(x, indices);
      CHECK_REL(y, file.at(name + ".out.y"), 1e-5);
      y.backward(file.at(name + ".proj.y"));
      CHECK_REL(x.grad(), file.at(name + ".grad.x"), 1e-5);
      // The indices carry no gradient to the scores, in PyTorch either.
      const std::vector<float> gs = file.at(name + ".grad.scores").to_vector<float>();
      CHECK(std::all_of(gs.begin(), gs.end(), [](float v) { return v == 0.0f; }));
    }
    ++cases;
  }
  CHECK(cases == 7);
}

TEST_CASE("topk kernels: the inverse map validates the indices", "[topk]") {
  const std::vector<int64_t> good{2, 0, 1, 2};
  std::vector<int64_t> inverse(6);
  int64_t error[3] = {0, 0, 0};
  kernels::cpu::invert_row_indices(inverse.data(), error, good.data(), 2, 3, 2);
  CHECK(error[0] == 0);
  CHECK(inverse == std::vector<int64_t>{1, -1, 0, -1, 0, 1});
  const std::vector<int64_t> repeated{0, 1, 2, 2};
  kernels::cpu::invert_row_indices(inverse.data(), error, repeated.data(), 2, 3, 2);
  CHECK(error[0] == kernels::kIndexRepeated);
  CHECK(error[1] == 1);
  CHECK(error[2] == 2);
}

TEST_CASE("topk_indices and gather_rows reject bad arguments by name", "[topk]") {
  const Tensor scores = Tensor::zeros({2, 5});
  REQUIRE_THROWS_WITH(topk_indices(scores, 0), Catch::Contains("topk_indices: k = 0 is outside [1, N] for scores [2,5]"));
  REQUIRE_THROWS_WITH(topk_indices(scores, 6), Catch::Contains("topk_indices: k = 6 is outside [1, N]"));
  REQUIRE_THROWS_WITH(topk_indices(Tensor::zeros({2, 5, 1}), 1),
                      Catch::Contains("topk_indices: scores [2,5,1] must be [B, N]"));
  REQUIRE_THROWS_WITH(topk_indices(Tensor::zeros({2, 5}, DType::i64), 1), Catch::Contains("must be f32 or f64"));

  const Tensor x = Tensor::zeros({2, 5, 3});
  REQUIRE_THROWS_WITH(gather_rows(x, Tensor::from_vector(std::vector<int64_t>{0, 5, 1, 2}, {2, 2})),
                      Catch::Contains("gather_rows: index 5 in row 0 is outside [0, 5)"));
  REQUIRE_THROWS_WITH(gather_rows(x, Tensor::from_vector(std::vector<int64_t>{0, 1, -1, 2}, {2, 2})),
                      Catch::Contains("gather_rows: index -1 in row 1 is outside [0, 5)"));
  REQUIRE_THROWS_WITH(gather_rows(x, Tensor::from_vector(std::vector<int64_t>{0, 1, 3, 3}, {2, 2})),
                      Catch::Contains("gather_rows: index 3 appears twice in row 1"));
  REQUIRE_THROWS_WITH(gather_rows(x, Tensor::zeros({3, 2}, DType::i64)),
                      Catch::Contains("gather_rows: x [2,5,3] and indices [3,2] must be [B, N, D] and [B, k]"));
  REQUIRE_THROWS_WITH(gather_rows(Tensor::zeros({2, 5}), Tensor::zeros({2, 2}, DType::i64)),
                      Catch::Contains("gather_rows: x [2,5] and indices [2,2]"));
  REQUIRE_THROWS_WITH(gather_rows(x, Tensor::zeros({2, 2})),
                      Catch::Contains("gather_rows: indices f32 [2,2] on cpu must be i64"));
}
