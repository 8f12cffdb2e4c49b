// softmax, log_softmax, layer_norm, rms_norm, embedding, cross_entropy and
// dropout: values, finite-difference gradients and errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/threads.h"
#include "kernels/philox.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;
using vlmc::test::leaf;

namespace {

Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::f64) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dtype);
}

Tensor i64(const std::vector<int64_t>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

}  // namespace

// ---- softmax ----------------------------------------------------------------------------

TEST_CASE("softmax and log_softmax values", "[nn]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 1, 1, 1}, {2, 3});
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const std::vector<double> s = softmax(x, -1).to_vector<double>();
  CHECK(s[0] == Approx(std::exp(1.0) / z));
  CHECK(s[2] == Approx(std::exp(3.0) / z));
  CHECK(s[4] == Approx(1.0 / 3));
  const std::vector<double> l = log_softmax(x, 1).to_vector<double>();
  CHECK(l[1] == Approx(2.0 - std::log(z)));
  CHECK(l[3] == Approx(-std::log(3.0)));
  // Over dim 0 (moved last internally): columns sum to 1.
  const std::vector<double> c = softmax(x, 0).to_vector<double>();
  CHECK(c[0] == Approx(0.5));
  CHECK(c[2] + c[5] == Approx(1.0));
  CHECK(c[2] == Approx(std::exp(2.0) / (1 + std::exp(2.0))));
}

TEST_CASE("softmax is stable for large logits", "[nn]") {
  const Tensor x = Tensor::from_vector(std::vector<float>{1000, 1000, -1000, 0}, {2, 2});
  CHECK(softmax(x, -1).to_vector<float>() == std::vector<float>{0.5f, 0.5f, 0.0f, 1.0f});
  const std::vector<float> l = log_softmax(x, -1).to_vector<float>();
  CHECK(l[0] == Approx(-std::log(2.0)));
  CHECK(l[2] == Approx(-1000.0));
  CHECK(l[3] == 0.0f);
}

TEST_CASE("softmax and log_softmax in f32 follow f64, values and gradients", "[nn]") {
  // The f32 kernel: exps by fast::exp_f32_or_zero, the maximum and the sums in 8 lanes
  // (13 columns leave a tail of 5; 517 of 5).
  Generator gen(6);
  for (const int64_t n : {13, 517}) {
    for (const bool log : {false, true}) {
      INFO(n << " columns, " << (log ? "log_softmax" : "softmax"));
      const Tensor x64 = Tensor::randn({5, n}, gen, DType::f64) * 4.0, w = Tensor::randn({5, n}, gen, DType::f64);
      auto run = [&](DType t) {
        Tensor x = x64.to(t).set_requires_grad(true);
        const Tensor y = log ? log_softmax(x, -1) : softmax(x, -1);
        sum(y * w.to(t)).backward();
        return std::vector<Tensor>{y, x.grad()};
      };
      const std::vector<Tensor> f32 = run(DType::f32), f64 = run(DType::f64);
      CHECK_REL(f32[0].to(DType::f64), f64[0], 1e-6);
      CHECK_REL(f32[1].to(DType::f64), f64[1], 1e-5);
      // And f64 against the definition: each row's probabilities sum to 1.
      const Tensor p = log ? exp(f64[0]) : f64[0];
      CHECK(test::max_abs_error(sum(p, {-1}), Tensor::ones({5}, DType::f64)) < 1e-12);
    }
  }
}

TEST_CASE("softmax gradients", "[nn]") {
  for (bool log : {false, true}) {
    INFO((log ? "log_softmax" : "softmax"));
    const auto op = [log](const Tensor& x, int64_t dim) {
      return log ? log_softmax(x, dim) : softmax(x, dim);
    };
    CHECK_GRADIENTS([&](const std::vector<Tensor>& t) { return op(t[0], -1); }, {leaf({3, 5}, 1)});
    CHECK_GRADIENTS([&](const std::vector<Tensor>& t) { return op(t[0], 0); }, {leaf({3, 5}, 2)});
    CHECK_GRADIENTS([&](const std::vector<Tensor>& t) { return op(t[0], 1); },
                    {leaf({2, 3, 4}, 3)});
    CHECK_GRADIENTS([&](const std::vector<Tensor>& t) { return op(t[0], 0); }, {leaf({6}, 4)});
    // Non-contiguous input.
    CHECK_GRADIENTS([&](const std::vector<Tensor>& t) { return op(t[0].transpose(0, 1), -1); },
                    {leaf({4, 3}, 5)});
  }
}

TEST_CASE("softmax errors", "[nn]") {
  REQUIRE_THROWS_WITH(softmax(Tensor::zeros({2, 3}), 2), Contains("softmax"));
  REQUIRE_THROWS_WITH(log_softmax(Tensor::zeros({2, 3}, DType::i64), 1),
                      Contains("log_softmax: input i64 [2,3] on cpu must be f32 or f64"));
}

// ---- layer norm / RMS norm ----------------------------------------------------------------

TEST_CASE("layer_norm values", "[nn]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 4});
  const double rstd = 1.0 / std::sqrt(1.25 + 1e-5);  // biased variance of 1..4 is 1.25
  const std::vector<double> y = layer_norm(x, {4}).to_vector<double>();
  CHECK(y[0] == Approx(-1.5 * rstd));
  CHECK(y[3] == Approx(1.5 * rstd));
  const Tensor w = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {4});
  const Tensor b = Tensor::from_vector(std::vector<double>{0, 0, 0, 10}, {4});
  const std::vector<double> yw = layer_norm(x, {4}, w, b).to_vector<double>();
  CHECK(yw[1] == Approx(2 * -0.5 * rstd));
  CHECK(yw[3] == Approx(4 * 1.5 * rstd + 10));
}

TEST_CASE("rms_norm values", "[nn]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {4});
  const double r = 1.0 / std::sqrt(7.5 + 1e-6);  // mean of squares: 30 / 4
  const Tensor w = Tensor::from_vector(std::vector<double>{1, 1, 2, 1}, {4});
  const std::vector<double> y = rms_norm(x, {4}, w).to_vector<double>();
  CHECK(y[0] == Approx(r));
  CHECK(y[2] == Approx(6 * r));
}

TEST_CASE("layer_norm and rms_norm gradients", "[nn]") {
  SECTION("layer_norm over 2 dims with weight and bias") {
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return layer_norm(t[0], {3, 4}, t[1], t[2]);
        },
        {leaf({2, 3, 4}, 11), leaf({3, 4}, 12), leaf({3, 4}, 13)});
  }
  SECTION("layer_norm without weight and bias") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return layer_norm(t[0], {5}); },
                    {leaf({3, 5}, 14)});
  }
  SECTION("layer_norm on a non-contiguous input") {
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return layer_norm(t[0].transpose(0, 1), {3}, t[1], t[2]);
        },
        {leaf({3, 4}, 15), leaf({3}, 16), leaf({3}, 17)});
  }
  SECTION("rms_norm with and without weight") {
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return rms_norm(t[0], {2, 3}, t[1]);
        },
        {leaf({4, 2, 3}, 18), leaf({2, 3}, 19)});
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) { return rms_norm(t[0].narrow(1, 1, 4), {4}); },
        {leaf({3, 6}, 20)});
  }
  SECTION("only the weight requires grad") {
    const Tensor x = randn({3, 4}, 21);
    CHECK_GRADIENTS([x](const std::vector<Tensor>& t) { return layer_norm(x, {4}, t[0], t[1]); },
                    {leaf({4}, 22), leaf({4}, 23)});
  }
}

TEST_CASE("layer_norm and rms_norm give the same bits on 1, 2 and 3 threads, weight and bias gradients included",
          "[nn][threads]") {
  // 203 rows of 128 (above the parallel grain, blocks of 64 rows and a short last one):
  // the weight and bias gradients sum fixed blocks of rows, then the blocks in order.
  const Tensor x = randn({203, 128}, 31).to(DType::f32), g = randn({203, 128}, 32).to(DType::f32);
  const Tensor w0 = randn({128}, 33).to(DType::f32), b0 = randn({128}, 34).to(DType::f32);
  const int saved = num_threads();
  std::vector<std::vector<float>> runs;
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor xi = x.clone(), w = w0.clone(), b = b0.clone();
    for (Tensor* t : {&xi, &w, &b}) t->set_requires_grad(true);
    sum(mul(layer_norm(xi, {128}, w, b), g)).backward();
    Tensor xr = x.clone(), wr = w0.clone();
    for (Tensor* t : {&xr, &wr}) t->set_requires_grad(true);
    sum(mul(rms_norm(xr, {128}, wr), g)).backward();
    std::vector<float> all;
    for (const Tensor& t : {xi.grad(), w.grad(), b.grad(), xr.grad(), wr.grad()}) {
      const std::vector<float> v = t.to_vector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    runs.push_back(all);
  }
  set_num_threads(saved);
  CHECK(runs[0] == runs[1]);
  CHECK(runs[0] == runs[2]);
}

TEST_CASE("layer_norm f32 matches f64", "[nn]") {
  const Tensor x = randn({7, 300}, 24);
  const Tensor w = randn({300}, 25), b = randn({300}, 26);
  CHECK_REL(layer_norm(x.to(DType::f32), {300}, w.to(DType::f32), b.to(DType::f32)),
            layer_norm(x, {300}, w, b), 1e-6);
}

TEST_CASE("norm errors", "[nn]") {
  REQUIRE_THROWS_WITH(
      layer_norm(Tensor::zeros({2, 3, 4}), {3, 5}),
      Contains("layer_norm: input [2,3,4] does not end with normalized_shape [3,5]"));
  REQUIRE_THROWS_WITH(layer_norm(Tensor::zeros({2, 4}), {4}, Tensor::zeros({5})),
                      Contains("layer_norm: weight [5] does not match normalized_shape [4]"));
  REQUIRE_THROWS_WITH(
      layer_norm(Tensor::zeros({2, 4}), {4}, Tensor::zeros({4}), Tensor::zeros({3})),
      Contains("layer_norm: bias [3] does not match normalized_shape [4]"));
  REQUIRE_THROWS_WITH(rms_norm(Tensor::zeros({4}), {2, 4}),
                      Contains("rms_norm: input [4] does not end with normalized_shape [2,4]"));
  REQUIRE_THROWS_WITH(rms_norm(Tensor::zeros({2, 4}), {4}, Tensor::zeros({4}, DType::f64)),
                      Contains("rms_norm: dtypes f32 and f64 differ"));
}

// ---- embedding -----------------------------------------------------------------------------

TEST_CASE("embedding values", "[nn]") {
  const Tensor w = Tensor::from_vector(std::vector<float>{0, 1, 10, 11, 20, 21}, {3, 2});
  const Tensor out = embedding(w, i64({2, 0, 2, 1}, {2, 2}));
  CHECK(out.shape() == Shape{2, 2, 2});
  CHECK(out.to_vector<float>() == std::vector<float>{20, 21, 0, 1, 20, 21, 10, 11});
}

TEST_CASE("embedding gradients accumulate repeated indices", "[nn]") {
  const Tensor idx = i64({1, 3, 1, 0, 1, 4}, {2, 3});
  CHECK_GRADIENTS([idx](const std::vector<Tensor>& t) { return embedding(t[0], idx); },
                  {leaf({5, 3}, 31)});
  Tensor w = leaf({5, 2}, 32);
  sum(embedding(w, idx)).backward();
  CHECK(w.grad().to_vector<double>() == std::vector<double>{1, 1, 3, 3, 0, 0, 1, 1, 1, 1});
  // Non-contiguous weight (a transposed view of the leaf).
  CHECK_GRADIENTS(
      [idx](const std::vector<Tensor>& t) { return embedding(t[0].transpose(0, 1), idx); },
      {leaf({3, 5}, 33)});
}

TEST_CASE("embedding errors", "[nn]") {
  const Tensor w = Tensor::zeros({5, 3});
  REQUIRE_THROWS_WITH(
      embedding(w, i64({0, 7, 1}, {3})),
      Contains("embedding: index 7 is out of range for 5 embeddings (weight [5,3])"));
  REQUIRE_THROWS_WITH(embedding(w, i64({-1}, {1})),
                      Contains("embedding: index -1 is out of range for 5"));
  REQUIRE_THROWS_WITH(embedding(w, Tensor::zeros({2})),
                      Contains("embedding: indices f32 [2] on cpu must be i64"));
  REQUIRE_THROWS_WITH(embedding(Tensor::zeros({5}), i64({0}, {1})),
                      Contains("embedding: weight [5] must be 2-D [num, dim]"));
}

// ---- cross entropy ---------------------------------------------------------------------------

TEST_CASE("cross_entropy values", "[nn]") {
  const Tensor logits = Tensor::from_vector(std::vector<double>{1, 2, 3, 0, 0, 0}, {2, 3});
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double expected = ((lse0 - 3.0) + std::log(3.0)) / 2;
  CHECK(cross_entropy(logits, i64({2, 1}, {2})).item() == Approx(expected));
  // Ignored rows are left out of the mean.
  CHECK(cross_entropy(logits, i64({0, -100}, {2})).item() == Approx(lse0 - 1.0));
  CHECK(cross_entropy(logits, i64({5, 0}, {2}), 5).item() == Approx(std::log(3.0)));
}

TEST_CASE("cross_entropy with every target ignored is NaN", "[nn]") {
  Tensor logits = leaf({3, 4}, 41);
  const Tensor loss = cross_entropy(logits, i64({-100, -100, -100}, {3}));
  CHECK(std::isnan(loss.item()));
  loss.backward();
  CHECK(logits.grad().to_vector<double>() == std::vector<double>(12, 0.0));
}

TEST_CASE("cross_entropy gradients", "[nn]") {
  const Tensor targets = i64({2, -100, 0, 3, -100}, {5});
  CHECK_GRADIENTS([targets](const std::vector<Tensor>& t) { return cross_entropy(t[0], targets); },
                  {leaf({5, 4}, 42)});
  // Non-contiguous logits.
  CHECK_GRADIENTS(
      [targets](const std::vector<Tensor>& t) {
        return cross_entropy(t[0].transpose(0, 1), targets);
      },
      {leaf({4, 5}, 43)});
  // Ignored rows get zero gradient; kept rows (softmax - onehot) / count.
  Tensor logits = leaf({5, 4}, 44);
  cross_entropy(logits, targets).backward();
  const std::vector<double> g = logits.grad().to_vector<double>();
  for (int j = 0; j < 4; ++j) CHECK(g[static_cast<size_t>(4 + j)] == 0.0);
  const std::vector<double> p = softmax(logits.detach(), -1).to_vector<double>();
  CHECK(g[2] == Approx((p[2] - 1) / 3));
  CHECK(g[1] == Approx(p[1] / 3));
}

TEST_CASE("cross_entropy in f32 follows f64 over a language model's vocabulary", "[nn]") {
  // The f32 kernel's exps are fast::exp_f32 summed in double lanes; LLaMA's 32,000 logits a
  // row, some far below the row's largest (exp_f32 clamps below -87.3), and a lane tail.
  Generator gen(45);
  for (const auto& [classes, spread] : std::vector<std::pair<int64_t, double>>{
           {32000, 3.0}, {32000, 30.0}, {52, 3.0}, {10, 3.0}, {13, 30.0}}) {
    INFO(classes << " classes, logits of spread " << spread);
    const Tensor logits64 = Tensor::randn({6, classes}, gen, DType::f64) * spread;
    const Tensor targets = i64({0, classes - 1, -100, classes / 2, 3, 1}, {6});
    auto run = [&](DType t) {
      Tensor logits = logits64.to(t).set_requires_grad(true);
      const Tensor loss = cross_entropy(logits, targets);
      loss.backward();
      return std::vector<Tensor>{loss, logits.grad()};
    };
    const std::vector<Tensor> f32 = run(DType::f32), f64 = run(DType::f64);
    CHECK_REL(f32[0].to(DType::f64), f64[0], 1e-6);
    CHECK_REL(f32[1].to(DType::f64), f64[1], 1e-5);
  }
}

TEST_CASE("cross_entropy errors", "[nn]") {
  const Tensor logits = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(cross_entropy(logits, i64({0, 3}, {2})),
                      Contains("cross_entropy: target 3 is out of range for 3 classes"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, i64({-2, 0}, {2})),
                      Contains("cross_entropy: target -2 is out of range"));
  REQUIRE_THROWS_WITH(
      cross_entropy(logits, i64({0, 1, 2}, {3})),
      Contains("cross_entropy: logits [2,3] and targets [3]: expected targets [2]"));
  REQUIRE_THROWS_WITH(cross_entropy(Tensor::zeros({2, 3, 4}), i64({0, 1}, {2})),
                      Contains("cross_entropy: logits [2,3,4] must be 2-D [N, C]"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::zeros({2})),
                      Contains("cross_entropy: targets f32 [2] on cpu must be i64"));
}

// ---- dropout ----------------------------------------------------------------------------------

TEST_CASE("dropout is the identity when not training or p == 0", "[nn]") {
  const Tensor x = randn({4, 5}, 51, DType::f32);
  Generator gen(1);
  CHECK(dropout(x, 0.5, false, gen).same(x));
  CHECK(dropout(x, 0.0, true, gen).same(x));
  CHECK(gen.offset() == 0);  // no numbers drawn
}

TEST_CASE("dropout keeps where the Philox uniform is >= p and scales by 1/(1-p)", "[nn]") {
  const int64_t n = 10001;
  const Tensor x = Tensor::ones({n}, DType::f32);
  Generator gen(7);
  gen.advance(3);
  const std::vector<float> y = dropout(x, 0.25, true, gen).to_vector<float>();
  CHECK(gen.offset() == 3 + kernels::uniform_counters(n));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = kernels::uniform_at(7, 3, i) >= 0.25;
    CHECK(y[static_cast<size_t>(i)] == (keep ? 1.0f / 0.75f : 0.0f));
    kept += keep;
  }
  CHECK(static_cast<double>(kept) / n == Approx(0.75).margin(0.02));
  // p == 1 drops everything, as PyTorch.
  CHECK(dropout(x, 1.0, true, gen).to_vector<float>() == std::vector<float>(n, 0.0f));
}

TEST_CASE("dropout gradients reuse the forward mask", "[nn]") {
  CHECK_GRADIENTS(
      [](const std::vector<Tensor>& t) {
        Generator gen(11);  // the same mask at every evaluation
        return dropout(t[0].transpose(0, 1), 0.4, true, gen);
      },
      {leaf({6, 7}, 52)});
  Tensor x = leaf({50}, 53);
  Generator gen(12);
  const Tensor y = dropout(x, 0.5, true, gen);
  y.backward(Tensor::ones({50}, DType::f64));
  const std::vector<double> yv = y.to_vector<double>(), gv = x.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) CHECK(gv[i] == (yv[i] == 0.0 ? 0.0 : 2.0));
}

TEST_CASE("dropout does not depend on the thread count", "[nn]") {
  const Tensor x = randn({100000}, 54, DType::f32);
  const int saved = num_threads();
  set_num_threads(1);
  Generator g1(5);
  const std::vector<float> one = dropout(x, 0.3, true, g1).to_vector<float>();
  set_num_threads(2);
  Generator g2(5);
  const std::vector<float> two = dropout(x, 0.3, true, g2).to_vector<float>();
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("dropout errors", "[nn]") {
  Generator gen(1);
  REQUIRE_THROWS_WITH(dropout(Tensor::zeros({3}), 1.5, true, gen),
                      Contains("dropout: probability p must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_WITH(dropout(Tensor::zeros({3}), -0.1, true, gen),
                      Contains("dropout: probability p"));
}
