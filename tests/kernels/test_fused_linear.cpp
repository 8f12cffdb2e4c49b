// linear_gelu: GELU(x·Wᵀ + b) fused (core/ops/fused_linear.cpp, kernels/fused_linear.h).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "core/threads.h"
#include "kernels/fused_linear.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;

namespace {

constexpr GeluApprox kApprox[] = {GeluApprox::none, GeluApprox::tanh};

const char* name_of(GeluApprox a) { return a == GeluApprox::tanh ? "tanh" : "none"; }

double gelu_ref(double z, GeluApprox a) {
  if (a == GeluApprox::tanh)
    return 0.5 * z * (1 + std::tanh(std::sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)));
  return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
}

// The unfused composition, the reference the fused op must reproduce.
Tensor unfused(const Tensor& x, const Tensor& w, const Tensor& b, GeluApprox a) {
  return gelu(linear(x, w, b), a);
}

}  // namespace

TEST_CASE("linear_gelu computes GELU(x W^T + b) on a hand-checked example", "[fused_linear]") {
  // x [1, 2], W [2, 2], b [2]: z = (0.5 - 0.5 + 0.1, 1 - 2 - 0.3) = (0.1, -1.3).
  const Tensor x = Tensor::from_vector(std::vector<double>{1, -2}, {1, 2});
  const Tensor w = Tensor::from_vector(std::vector<double>{0.5, 0.25, 1, 1}, {2, 2});
  const Tensor b = Tensor::from_vector(std::vector<double>{0.1, -0.3}, {2});
  for (GeluApprox a : kApprox) {
    INFO(name_of(a));
    const std::vector<double> y = linear_gelu(x, w, b, a).to_vector<double>();
    REQUIRE(y.size() == 2);
    CHECK(y[0] == Approx(gelu_ref(0.1, a)).epsilon(1e-14));
    CHECK(y[1] == Approx(gelu_ref(-1.3, a)).epsilon(1e-14));
  }
  // Spelled out once: GELU(0.1) = 0.1 * Phi(0.1) = 0.0539827837...
  CHECK(linear_gelu(x, w, b).to_vector<double>()[0] == Approx(0.05398278372770290).epsilon(1e-12));
}

TEST_CASE("linear_gelu matches PyTorch's golden values and gradients", "[fused_linear]") {
  const test::GoldenFile golden = test::load_golden("fused_linear");
  const auto& tensors = golden.tensors;
  int cases = 0;
  for (const auto& [name, args] : golden.cases) {
    INFO("case " << name);
    REQUIRE(args.at("op") == "linear_gelu");
    const GeluApprox approx = args.at("approximate") == "tanh" ? GeluApprox::tanh : GeluApprox::none;
    auto leaf = [&](const std::string& in) {
      const auto it = tensors.find(name + ".in." + in);
      if (it == tensors.end()) return Tensor();
      Tensor t = it->second.clone();
      t.set_requires_grad(true);
      return t;
    };
    Tensor x = leaf("x"), w = leaf("w"), b = leaf("b");
    REQUIRE(x.defined());
    const Tensor y = linear_gelu(x, w, b, approx);
    CHECK_REL(y, tensors.at(name + ".out"), 1e-5);
    sum(y * tensors.at(name + ".proj")).backward();
    CHECK_REL(x.grad(), tensors.at(name + ".grad.x"), 1e-5);
    CHECK_REL(w.grad(), tensors.at(name + ".grad.w"), 1e-5);
    if (b.defined()) CHECK_REL(b.grad(), tensors.at(name + ".grad.b"), 1e-5);
    ++cases;
  }
  CHECK(cases == 12);
}

TEST_CASE("linear_gelu f64 gradients by finite differences", "[fused_linear]") {
  for (GeluApprox a : kApprox) {
    INFO(name_of(a));
    // x, W, b at odd sizes.
    CHECK_GRADIENTS([a](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], in[2], a); },
                    {test::leaf({7, 13}, 1), test::leaf({9, 13}, 2), test::leaf({9}, 3)});
    // Batched x [2, 3, K], no bias.
    CHECK_GRADIENTS([a](const std::vector<Tensor>& in) { return linear_gelu(in[0], in[1], Tensor(), a); },
                    {test::leaf({2, 3, 5}, 4), test::leaf({4, 5}, 5)});
    // Non-contiguous x (a transposed view) and W (W = leaf [in, out] transposed).
    CHECK_GRADIENTS(
        [a](const std::vector<Tensor>& in) {
          return linear_gelu(in[0].transpose(0, 1), in[1].transpose(0, 1), in[2], a);
        },
        {test::leaf({6, 4}, 6), test::leaf({6, 3}, 7), test::leaf({3}, 8)});
    // Pre-activations far out on both tails (|z| up to ~10).
    CHECK_GRADIENTS([a](const std::vector<Tensor>& in) { return linear_gelu(in[0] * 3.0, in[1], in[2], a); },
                    {test::leaf({3, 8}, 9), test::leaf({5, 8}, 10), test::leaf({5}, 11)});
  }
}

TEST_CASE("linear_gelu gradients follow the grad mask", "[fused_linear]") {
  Generator gen(21);
  Tensor x = Tensor::randn({4, 6}, gen, DType::f64);
  Tensor w = Tensor::randn({5, 6}, gen, DType::f64);
  Tensor b = Tensor::randn({5}, gen, DType::f64);
  w.set_requires_grad(true);  // a trainable weight over a frozen input and bias
  sum(linear_gelu(x, w, b)).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // Same gradient as the unfused composition.
  Tensor w2 = w.detach().clone();
  w2.set_requires_grad(true);
  sum(unfused(x, w2, b, GeluApprox::none)).backward();
  CHECK_REL(w.grad(), w2.grad(), 1e-13);
}

TEST_CASE("linear_gelu f32 across several row blocks matches the f64 composition", "[fused_linear]") {
  // The CPU kernel's row blocks hold 16 MiB of output: 512 rows of 8192 f32
  // columns, so 1100 rows are three blocks (367, 367, 366). The bias gradient
  // runs over 32 column chunks.
  Generator gen(31);
  const int64_t m = 1100, k = 8, n = 8192;
  const Tensor x64 = Tensor::randn({m, k}, gen, DType::f64);
  const Tensor w64 = Tensor::randn({n, k}, gen, DType::f64) * 0.5;
  const Tensor b64 = Tensor::randn({n}, gen, DType::f64);
  for (GeluApprox a : kApprox) {
    INFO(name_of(a));
    Tensor x = x64.to(DType::f32), w = w64.to(DType::f32), b = b64.to(DType::f32);
    const Tensor no_grad = linear_gelu(x, w, b, a);
    CHECK_REL(no_grad, unfused(x64, w64, b64, a), 1e-6);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);
    const Tensor y = linear_gelu(x, w, b, a);
    // Keeping z for the backward does not change y.
    CHECK(test::max_abs_error(y.detach(), no_grad) == 0);
    Generator gg(32);
    const Tensor g64 = Tensor::randn({m, n}, gg, DType::f64);
    y.backward(g64.to(DType::f32));
    Tensor x2 = x64.clone(), w2 = w64.clone(), b2 = b64.clone();
    x2.set_requires_grad(true);
    w2.set_requires_grad(true);
    b2.set_requires_grad(true);
    unfused(x2, w2, b2, a).backward(g64);
    CHECK_REL(x.grad(), x2.grad(), 1e-5);
    CHECK_REL(w.grad(), w2.grad(), 1e-5);
    CHECK_REL(b.grad(), b2.grad(), 1e-5);
  }
}

TEST_CASE("linear_gelu_bf16 across several row blocks equals the f32 kernel on the widened operands",
          "[fused_linear]") {
  // Autocast's CPU form (bf16 bits in, f32 y and z out): each row block is one
  // gemm_bf16, oneDNN's bf16 kernel where this CPU has one and the widened f32
  // product elsewhere. 1100 rows of 8192 columns are three blocks, as above.
  // The bf16 values are exact in f32, so only the summation order may differ.
  Generator gen(33);
  const int64_t m = 1100, k = 24, n = 8192;
  const Tensor x16 = Tensor::randn({m, k}, gen).to(DType::bf16);
  const Tensor w16 = (Tensor::randn({n, k}, gen) * 0.5).to(DType::bf16);
  const Tensor b16 = Tensor::randn({n}, gen).to(DType::bf16);
  const Tensor x = x16.to(DType::f32), w = w16.to(DType::f32), b = b16.to(DType::f32);
  const auto bits = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); };
  for (auto kind : {kernels::GeluKind::erf, kernels::GeluKind::tanh}) {
    const Tensor y = Tensor::empty({m, n}), z = Tensor::empty({m, n});
    const Tensor y_ref = Tensor::empty({m, n}), z_ref = Tensor::empty({m, n});
    kernels::cpu::linear_gelu_bf16(y.data<float>(), z.data<float>(), bits(x16), bits(w16), bits(b16), m, n, k, kind);
    kernels::cpu::linear_gelu<float>(y_ref.data<float>(), z_ref.data<float>(), x.data<float>(), w.data<float>(),
                                     b.data<float>(), m, n, k, kind);
    CHECK_REL(z, z_ref, 1e-6);
    CHECK_REL(y, y_ref, 1e-6);
    // Without z (no gradient wanted) and without a bias, y is written in place.
    const Tensor y_only = Tensor::empty({m, n});
    kernels::cpu::linear_gelu_bf16(y_only.data<float>(), nullptr, bits(x16), bits(w16), nullptr, m, n, k, kind);
    kernels::cpu::linear_gelu<float>(y_ref.data<float>(), nullptr, x.data<float>(), w.data<float>(), nullptr, m, n,
                                     k, kind);
    CHECK_REL(y_only, y_ref, 1e-6);
  }
}

TEST_CASE("linear_gelu backward kernel does not depend on the thread count", "[fused_linear][threads]") {
  // Widths of several column chunks, of one (CLIP's fc1: 256), and below the narrowest chunk.
  for (const int64_t n : {777, 256, 45}) {
    Generator gen(41);
    const int64_t m = 333;
    const std::vector<float> dy = Tensor::randn({m, n}, gen).to_vector<float>();
    const std::vector<float> z = (Tensor::randn({m, n}, gen) * 3.0).to_vector<float>();
    const int saved = num_threads();
    for (auto kind : {kernels::GeluKind::erf, kernels::GeluKind::tanh}) {
      std::vector<std::vector<float>> dz(3, std::vector<float>(static_cast<size_t>(m * n)));
      std::vector<std::vector<float>> db(3, std::vector<float>(static_cast<size_t>(n)));
      for (int t = 0; t < 3; ++t) {
        set_num_threads(t + 1);
        kernels::cpu::linear_gelu_backward<float>(dz[t].data(), db[t].data(), dy.data(), z.data(), m, n, kind);
      }
      CHECK(dz[0] == dz[1]);
      CHECK(dz[0] == dz[2]);
      CHECK(db[0] == db[1]);
      CHECK(db[0] == db[2]);
      // db is each column of dz summed in row order in double, whatever the chunks.
      std::vector<float> sums(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < m; ++i) acc += static_cast<double>(dz[0][static_cast<size_t>(i * n + j)]);
        sums[static_cast<size_t>(j)] = static_cast<float>(acc);
      }
      CHECK(db[0] == sums);
    }
    set_num_threads(saved);
  }
}

TEST_CASE("linear_gelu empty sizes", "[fused_linear]") {
  Generator gen(51);
  // in = 0: z = b, so y = GELU(b); the weight's gradient is empty and x's too.
  Tensor x = Tensor::zeros({3, 0}, DType::f64);
  Tensor w = Tensor::zeros({4, 0}, DType::f64);
  Tensor b = Tensor::randn({4}, gen, DType::f64);
  b.set_requires_grad(true);
  const Tensor y = linear_gelu(x, w, b);
  REQUIRE(y.shape() == Shape{3, 4});
  CHECK_REL(y, gelu(b.detach()).unsqueeze(0).expand({3, 4}).contiguous(), 1e-15);
  sum(y).backward();
  Tensor b2 = b.detach().clone();
  b2.set_requires_grad(true);
  sum(unfused(x, w, b2, GeluApprox::none)).backward();
  CHECK_REL(b.grad(), b2.grad(), 1e-15);
  // rows = 0: an empty output and zero weight/bias gradients.
  Tensor x0 = Tensor::zeros({0, 5});
  Tensor w0 = Tensor::randn({2, 5}, gen);
  Tensor b0 = Tensor::randn({2}, gen);
  w0.set_requires_grad(true);
  b0.set_requires_grad(true);
  const Tensor y0 = linear_gelu(x0, w0, b0);
  CHECK(y0.shape() == Shape{0, 2});
  sum(y0).backward();
  CHECK(test::max_abs_error(w0.grad(), Tensor::zeros({2, 5})) == 0);
  CHECK(test::max_abs_error(b0.grad(), Tensor::zeros({2})) == 0);
}

TEST_CASE("erf_fast is within 1e-7 of erf over a dense sweep", "[fused_linear]") {
  // Every 2^-17 on [-8, 8] (2.1 million points), plus special values.
  std::vector<float> in;
  for (int64_t i = -(int64_t(8) << 17); i <= (int64_t(8) << 17); ++i)
    in.push_back(static_cast<float>(std::ldexp(static_cast<double>(i), -17)));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-8f, 1.1f, -1.1f, 3.92f, 1e30f, -1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::denorm_min()})
    in.push_back(v);
  std::vector<float> out(in.size());
  kernels::cpu::erf_fast(out.data(), in.data(), static_cast<int64_t>(in.size()));
  double worst = 0, worst_at = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const double err = std::fabs(static_cast<double>(out[i]) - std::erf(static_cast<double>(in[i])));
    if (!(err <= worst)) {
      worst = err;
      worst_at = in[i];
    }
  }
  INFO("largest error " << worst << " at x = " << worst_at);
  CHECK(worst <= 1e-7);
  // Odd, exactly; and NaN in, NaN out.
  const float probe[3] = {0.75f, -0.75f, std::numeric_limits<float>::quiet_NaN()};
  float got[3];
  kernels::cpu::erf_fast(got, probe, 3);
  CHECK(got[0] == -got[1]);
  CHECK(std::isnan(got[2]));
}

TEST_CASE("exp_fast is within 2e-7 relative of exp over its range", "[fused_linear]") {
  std::vector<float> in;
  for (double v = -87.3; v <= 88.3; v += 1.0 / 4096) in.push_back(static_cast<float>(v));
  std::vector<float> out(in.size());
  kernels::cpu::exp_fast(out.data(), in.data(), static_cast<int64_t>(in.size()));
  double worst = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const double want = std::exp(static_cast<double>(in[i]));
    worst = std::max(worst, std::fabs(out[i] - want) / want);
  }
  INFO("largest relative error " << worst);
  CHECK(worst <= 2e-7);
  // Beyond the range: clamped, finite, never NaN.
  const float far[2] = {-1e4f, 1e4f};
  float got[2];
  kernels::cpu::exp_fast(got, far, 2);
  CHECK(got[0] >= 0);
  CHECK(got[0] < 1e-37f);
  CHECK(std::isfinite(got[1]));
}

TEST_CASE("linear_gelu rejects bad arguments by name", "[fused_linear]") {
  const Tensor x = Tensor::zeros({4, 576, 1000});
  const Tensor w = Tensor::zeros({4096, 1024});
  REQUIRE_THROWS_WITH(linear_gelu(x, w),
                      Catch::Contains("linear_gelu: input [4,576,1000] does not match weight [4096,1024]"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor::zeros({2, 3}), Tensor::zeros({3})),
                      Catch::Contains("linear_gelu: weight [3] must be 2-D [out, in]"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}), Tensor::zeros({3})),
                      Catch::Contains("linear_gelu: bias [3] does not match weight [4,3] (expected [4])"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor::zeros({2, 3}, DType::f64), Tensor::zeros({4, 3})),
                      Catch::Contains("linear_gelu: dtypes f64 and f32 differ"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor::zeros({2, 3}, DType::i64), Tensor::zeros({4, 3}, DType::i64)),
                      Catch::Contains("must be f32 or f64"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor::zeros({2, 3}, DType::bf16), Tensor::zeros({4, 3}, DType::bf16)),
                      Catch::Contains("linear_gelu: input bf16 [2,3] on cpu: bf16 runs on CUDA only"));
  REQUIRE_THROWS_WITH(linear_gelu(Tensor(), w), Catch::Contains("linear_gelu: undefined input or weight"));
}
