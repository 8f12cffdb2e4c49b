// Reductions: sum / mean over all elements and over dims (keepdim, negative
// and non-adjacent dims), max / argmax (ties, NaN), sum_to; f64 finite-difference
// gradients, accuracy of large f32 sums, thread-count independence, errors.
#include <cmath>

#include "core/ops.h"
#include "core/threads.h"
#include "kernels/reduce.h"
#include "tests/support/check.h"

using namespace vlmc;
using vlmc::test::leaf;

namespace {

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

// x[i,j,k] = 100i + 10j + k, shape [2,3,4].
Tensor iota234() {
  std::vector<double> v;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) v.push_back(100 * i + 10 * j + k);
  return Tensor::from_vector(v, {2, 3, 4});
}

}  // namespace

TEST_CASE("sum and mean: values over all elements and over dims", "[reduce]") {
  const Tensor x = iota234();
  const Tensor s = sum(x);
  CHECK(s.shape() == Shape{});
  CHECK(s.item() == 12 * 100 + 8 * 30 + 6 * 6);  // 1476
  CHECK(mean(x).item() == 1476.0 / 24);

  const Tensor s1 = sum(x, {1});
  CHECK(s1.shape() == Shape{2, 4});
  CHECK(values(s1) == std::vector<double>{30, 33, 36, 39, 330, 333, 336, 339});
  CHECK(sum(x, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(values(sum(x, {-2}, true)) == values(s1));  // negative dim

  const Tensor s_last = sum(x, {-1});
  CHECK(s_last.shape() == Shape{2, 3});
  CHECK(values(s_last) == std::vector<double>{6, 46, 86, 406, 446, 486});

  // Non-adjacent dims: permuted to the end internally.
  const Tensor s02 = sum(x, {0, 2});
  CHECK(s02.shape() == Shape{3});
  CHECK(values(s02) == std::vector<double>{412, 492, 572});
  CHECK(sum(x, {2, 0}, true).shape() == Shape{1, 3, 1});
  CHECK(values(mean(x, {0, -1})) == std::vector<double>{412.0 / 8, 492.0 / 8, 572.0 / 8});

  // Adjacent dims and all dims listed explicitly.
  CHECK(values(sum(x, {0, 1})) == std::vector<double>{360, 366, 372, 378});
  CHECK(sum(x, {0, 1, 2}).item() == 1476);
  CHECK(sum(x, {0, 1, 2}, true).shape() == Shape{1, 1, 1});

  // Non-contiguous input.
  const Tensor xt = x.transpose(0, 2);  // [4,3,2]
  CHECK(values(sum(xt, {2})) == values(sum(x, {0}).transpose(0, 1).contiguous()));

  // Scalars and empty tensors, as PyTorch.
  CHECK(sum(Tensor::scalar(3.0)).item() == 3.0);
  CHECK(sum(Tensor::scalar(3.0), {0}).item() == 3.0);
  CHECK(sum(Tensor::zeros({0, 3})).item() == 0.0);
  CHECK(values(sum(Tensor::zeros({0, 3}), {0})) == std::vector<double>{0, 0, 0});
  CHECK(std::isnan(mean(Tensor::zeros({0})).item()));
  CHECK(sum(Tensor::from_vector(std::vector<float>{1, INFINITY, 2}, {3})).item() == INFINITY);
}

TEST_CASE("sum and mean: gradients", "[reduce]") {
  const std::vector<Tensor> in = {leaf({2, 3, 4}, 31)};
  const auto grad = [&](auto f) {
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0]); }, in);
  };
  for (bool keepdim : {false, true}) {
    INFO("keepdim " << keepdim);
    grad([&](const Tensor& t) { return sum(t, {1}, keepdim); });
    grad([&](const Tensor& t) { return sum(t, {-1}, keepdim); });
    grad([&](const Tensor& t) { return sum(t, {0, 2}, keepdim); });
    grad([&](const Tensor& t) { return sum(t, {0, 1}, keepdim); });
    grad([&](const Tensor& t) { return mean(t, {-3, -1}, keepdim); });
    grad([&](const Tensor& t) { return mean(t, {1}, keepdim); });
    // Non-contiguous: reduce a transposed view and a narrowed one.
    grad([&](const Tensor& t) { return sum(t.transpose(0, 2), {1}, keepdim); });
    grad([&](const Tensor& t) { return mean(t.narrow(2, 1, 2), {0, 2}, keepdim); });
  }
  grad([](const Tensor& t) { return sum(t); });
  grad([](const Tensor& t) { return mean(t); });
  grad([](const Tensor& t) { return mean(t.transpose(1, 2)); });
}

TEST_CASE("sum: large f32 sums stay accurate", "[reduce]") {
  // 3M values of mean 1: naive f32 accumulation loses ~1e-3 relative here.
  Generator gen(17);
  const Tensor x = add(Tensor::rand({3, 1000000}, gen, DType::f32), 0.5);
  const Tensor ref = sum(x.to(DType::f64));
  CHECK_REL(sum(x).to(DType::f64), ref, 1e-6);
  CHECK_REL(sum(x, {1}).to(DType::f64), sum(x.to(DType::f64), {1}), 1e-6);
  CHECK_REL(sum(x, {0}).to(DType::f64), sum(x.to(DType::f64), {0}), 1e-6);
  CHECK_REL(mean(x).to(DType::f64), mean(x.to(DType::f64)), 1e-6);
}

TEST_CASE("reductions do not depend on the thread count", "[reduce]") {
  Generator gen(19);
  const Tensor x = Tensor::randn({5, 70001}, gen);
  const Tensor y = Tensor::randn({40, 300, 33}, gen);
  const Tensor z = Tensor::randn({301, 4100}, gen);  // a bias gradient's shape: 512-wide tiles, a ragged last one
  CHECK_REL(sum(z, {0}).to(DType::f64), sum(z.to(DType::f64), {0}), 1e-6);
  // Each column of z summed down its rows in order, in double: what every split must give.
  const std::vector<float> zv = z.to_vector<float>();
  std::vector<float> column_sums(4100);
  for (int64_t j = 0; j < 4100; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < 301; ++i) acc += static_cast<double>(zv[static_cast<size_t>(i * 4100 + j)]);
    column_sums[static_cast<size_t>(j)] = static_cast<float>(acc);
  }
  const int saved = num_threads();
  std::vector<Tensor> results[3];
  for (int t : {1, 2, 3}) {  // 3: shares of 4100 columns that are not whole tiles
    set_num_threads(t);
    auto& r = results[t - 1];
    r = {sum(x), sum(x, {1}), sum(y, {1}), mean(y, {0, 2}), max(x), max(y, 1).values,
         max(y, 1).indices.to(DType::f64), max(x, 1).indices.to(DType::f64), sum(z, {0})};
    CHECK(r.back().to_vector<float>() == column_sums);
  }
  set_num_threads(saved);
  for (size_t i = 0; i < results[0].size(); ++i) {
    INFO("result " << i);
    CHECK(test::max_abs_error(results[0][i], results[1][i]) == 0.0);
    CHECK(test::max_abs_error(results[0][i], results[2][i]) == 0.0);
  }
}

TEST_CASE("max over a dim: values, indices, keepdim, negative dims", "[reduce]") {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 7, 3, 9, 2, 8}, {2, 3});
  const MaxResult m = max(x, 1);
  CHECK(m.values.shape() == Shape{2});
  CHECK(m.indices.dtype() == DType::i64);
  CHECK(values(m.values) == std::vector<double>{7, 9});
  CHECK(m.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  const MaxResult m0 = max(x, -2, true);
  CHECK(m0.values.shape() == Shape{1, 3});
  CHECK(values(m0.values) == std::vector<double>{9, 7, 8});
  CHECK(m0.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 1});
  CHECK(argmax(x, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(argmax(x, 0, true).shape() == Shape{1, 3});
  CHECK(max(x).item() == 9);
  CHECK(max(x).shape() == Shape{});

  // Middle dim of a 3-D tensor, and a non-contiguous input.
  const Tensor y = iota234();
  const MaxResult my = max(y, 1);
  CHECK(values(my.values) == std::vector<double>{20, 21, 22, 23, 120, 121, 122, 123});
  CHECK(my.indices.to_vector<int64_t>() == std::vector<int64_t>(8, 2));
  const MaxResult mt = max(y.transpose(0, 2), 2);  // [4,3]: over the original dim 0
  CHECK(values(mt.values) == values(add(y.select(0, 1), 0.0).transpose(0, 1).contiguous()));
  CHECK(mt.indices.to_vector<int64_t>() == std::vector<int64_t>(12, 1));
}

TEST_CASE("max: the first index wins ties and NaN propagates", "[reduce]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{5, 1, 5, 5, 2, 2, 2, 0}, {2, 4});
  CHECK(max(x, 1).indices.to_vector<int64_t>() == std::vector<int64_t>{0, 0});
  CHECK(argmax(x, 0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 0, 0});
  // Ties across the chunk boundary of the CPU kernel: first index still wins.
  Tensor big = Tensor::zeros({100000}, DType::f32);
  {
    float* p = big.data<float>();
    p[70000] = 3;
    p[20000] = 3;
    p[99999] = 3;
  }
  CHECK(argmax(big, 0).item() == 20000);

  // Ties in the backward: the gradient goes to the selected (first) index only.
  Tensor t = Tensor::from_vector(std::vector<double>{4, 4, 1}, {3}).set_requires_grad(true);
  max(t, 0).values.backward();
  CHECK(values(t.grad()) == std::vector<double>{1, 0, 0});
  t.set_grad(Tensor());
  max(t).backward();
  CHECK(values(t.grad()) == std::vector<double>{1, 0, 0});

  const Tensor n = Tensor::from_vector(std::vector<double>{1, NAN, 3, NAN, 0, 9}, {2, 3});
  const MaxResult mn = max(n, 1);
  CHECK(std::isnan(values(mn.values)[0]));
  CHECK(std::isnan(values(mn.values)[1]));
  CHECK(mn.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(std::isnan(max(n).item()));
  CHECK(argmax(n, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 1});
}

TEST_CASE("max: gradients", "[reduce]") {
  const std::vector<Tensor> in = {leaf({3, 4, 5}, 41)};
  const auto grad = [&](auto f) {
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0]); }, in);
  };
  for (bool keepdim : {false, true}) {
    INFO("keepdim " << keepdim);
    grad([&](const Tensor& t) { return max(t, 0, keepdim).values; });
    grad([&](const Tensor& t) { return max(t, 1, keepdim).values; });
    grad([&](const Tensor& t) { return max(t, -1, keepdim).values; });
    grad([&](const Tensor& t) { return max(t.transpose(0, 2), 1, keepdim).values; });
  }
  grad([](const Tensor& t) { return max(t); });
  grad([](const Tensor& t) { return max(t.permute({2, 0, 1})); });
  grad([](const Tensor& t) { return max(t.narrow(1, 1, 2), 2).values; });
}

TEST_CASE("sum_to: folds broadcast dims back", "[reduce]") {
  const Tensor x = iota234();
  CHECK(sum_to(x, {2, 3, 4}).same(x));
  const Tensor a = sum_to(x, {4});
  CHECK(a.shape() == Shape{4});
  CHECK(values(a) == std::vector<double>{360, 366, 372, 378});
  const Tensor b = sum_to(x, {3, 1});
  CHECK(b.shape() == Shape{3, 1});
  CHECK(values(b) == std::vector<double>{412, 492, 572});
  CHECK(values(sum_to(x, {2, 1, 1})) == std::vector<double>{138, 1338});
  CHECK(sum_to(x, {1, 1, 4}).shape() == Shape{1, 1, 4});
  CHECK(sum_to(x, {}).item() == 1476);
  // Only size-1 dims differ: a reshape.
  CHECK(sum_to(Tensor::zeros({1, 3}), {3}).shape() == Shape{3});

  const std::vector<Tensor> in = {leaf({2, 3, 4}, 51)};
  for (const Shape& to : {Shape{4}, Shape{3, 1}, Shape{2, 1, 4}, Shape{}, Shape{1, 3, 1}}) {
    INFO("to " << shape_str(to));
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return sum_to(v[0], to); }, in);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return sum_to(v[0].transpose(0, 1).transpose(0, 1), to); },
                    in);
  }
  // The backward of expand is sum_to.
  CHECK_GRADIENTS([](const std::vector<Tensor>& v) { return v[0].expand({2, 3, 4}); },
                  std::vector<Tensor>{leaf({3, 1}, 52)});
}

TEST_CASE("reductions: errors name the op and the shapes", "[reduce]") {
  const Tensor x = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(sum(x, {2}), Catch::Contains("sum: dim 2 is out of range for a tensor of 2 dims"));
  REQUIRE_THROWS_WITH(mean(x, {-3}), Catch::Contains("mean: dim -3 is out of range"));
  REQUIRE_THROWS_WITH(sum(x, {1, -1}), Catch::Contains("sum: dim 1 appears twice in the dims of f32 [2,3]"));
  REQUIRE_THROWS_WITH(max(x, 5), Catch::Contains("max: dim 5 is out of range"));
  REQUIRE_THROWS_WITH(argmax(x, -3), Catch::Contains("argmax: dim -3 is out of range"));
  REQUIRE_THROWS_WITH(max(Tensor::zeros({2, 0}), 1),
                      Catch::Contains("max: cannot take the maximum over a zero-size dim of f32 [2,0]"));
  REQUIRE_THROWS_WITH(max(Tensor::zeros({0})), Catch::Contains("max: cannot take the maximum of an empty tensor"));
  REQUIRE_THROWS_WITH(sum_to(x, {4}), Catch::Contains("sum_to: cannot sum [2,3] to [4]"));
  REQUIRE_THROWS_WITH(sum_to(x, {1, 2, 3}), Catch::Contains("sum_to: cannot sum [2,3] to [1,2,3]"));
  REQUIRE_THROWS_WITH(sum(Tensor::zeros({2}, DType::i64)),
                      Catch::Contains("sum: input i64 [2] on cpu must be f32 or f64"));
}

TEST_CASE("round_bf16_with_column_sums: sum(g, {0})'s bits and g.to(bf16)'s, in one pass", "[reduce]") {
  Generator gen(23);
  for (const Shape& shape : {Shape{301, 4100}, Shape{77, 1}, Shape{5, 3}}) {
    INFO(shape_str(shape));
    const Tensor g = Tensor::randn(shape, gen);
    const int64_t rows = shape[0], cols = shape[1];
    const Tensor rounded = Tensor::empty(shape, DType::bf16), sums = Tensor::empty({cols});
    kernels::cpu::round_bf16_with_column_sums(static_cast<uint16_t*>(rounded.data_ptr()), sums.data<float>(),
                                              g.data<float>(), rows, cols);
    CHECK(test::max_abs_error(sums, sum(g, {0})) == 0.0);
    CHECK(test::max_abs_error(rounded.to(DType::f32), g.to(DType::bf16).to(DType::f32)) == 0.0);
  }
}

