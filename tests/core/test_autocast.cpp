// bf16 autocast (core/autocast.h) on the CPU: matmul, linear and linear_gelu
// under the guard equal the f32 ops applied to bf16-rounded operands (forward,
// and gradients worked out by hand from the rounded tensors; bit for bit where
// the operands are held as f32 values, the form of a CPU without a bf16
// kernel, VLMC_GEMM_BF16=widened), differ from plain
// f32 by a small nonzero amount, capture the mode at forward time, leave f64
// alone, nest, cache weights only for the guard's life, and train a small MLP
// along the f32 loss curve.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/autocast.h"
#include "core/ops.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/fused_linear.h"
#include "optim/adamw.h"
#include "tests/support/check.h"

using namespace vlmc;
using vlmc::test::max_abs_error;
using vlmc::test::rel_error;

namespace {

// A random f32 CPU tensor, N(0,1) from the seed; a leaf that requires grad when asked.
Tensor randn_f32(const Shape& shape, uint64_t seed, bool grad = false) {
  Generator gen(seed);
  Tensor t = Tensor::randn(shape, gen, DType::f32);
  if (grad) t.set_requires_grad(true);
  return t;
}

// x's values rounded to bf16 (nearest even), as f32.
Tensor rounded(const Tensor& x) { return x.detach().to(DType::bf16).to(DType::f32); }

// The f32 linear_gelu forward on rounded x, w, b and its dz = g ⊙ GELU'(z),
// through the same CPU kernels the op runs (so z and dz are bit for bit the op's).
struct GeluByHand {
  Tensor y, dz;
};

GeluByHand linear_gelu_by_hand(const Tensor& rx, const Tensor& rw, const Tensor& rb,
                               const Tensor& g) {
  const int64_t m = rx.size(0), k = rx.size(1), n = rw.size(0);
  GeluByHand out{Tensor::empty({m, n}), Tensor::empty({m, n})};
  const Tensor z = Tensor::empty({m, n});
  kernels::cpu::linear_gelu<float>(out.y.data<float>(), z.data<float>(), rx.data<float>(),
                                   rw.data<float>(), rb.data<float>(), m, n, k,
                                   kernels::GeluKind::erf);
  kernels::cpu::linear_gelu_backward<float>(out.dz.data<float>(), nullptr, g.data<float>(),
                                            z.data<float>(), m, n, kernels::GeluKind::erf);
  return out;
}

using kernels::cpu::onednn::Bf16Path;

// The CPU's two forms of autocast's operands: bf16 bits for oneDNN's bf16
// kernel (native, where this CPU has one) and f32 values rounded to bf16 for
// the f32 GEMM (widened, as on every CPU without one).
constexpr Bf16Path kPaths[] = {Bf16Path::native, Bf16Path::widened};

const char* path_name(Bf16Path path) { return path == Bf16Path::native ? "native" : "widened"; }

// Whether the CPU's operands are f32 values on the path now set: then the
// products are the f32 op's own calls on the rounded tensors, the same bits,
// not just close ones.
bool f32_held() { return autocast_operand_dtype(Device::cpu()) == DType::f32; }

struct PathScope {
  explicit PathScope(Bf16Path path) { kernels::cpu::onednn::set_bf16_path(path); }
  ~PathScope() { kernels::cpu::onednn::set_bf16_path(Bf16Path::automatic); }
  PathScope(const PathScope&) = delete;
  PathScope& operator=(const PathScope&) = delete;
};

}  // namespace

TEST_CASE("autocast matmul rounds operands to bf16 and accumulates in f32", "[autocast]") {
  // Plain, batched with a broadcast b (one stacked GEMM; dB summed in one GEMM),
  // and batched on both sides; each in both operand forms.
  const std::vector<std::pair<Shape, Shape>> cases{
      {{17, 33}, {33, 9}}, {{3, 5, 40}, {40, 12}}, {{2, 6, 24}, {2, 24, 7}}};
  uint64_t seed = 100;
  for (const Bf16Path path : kPaths) {
    const PathScope scope(path);
    for (const auto& [sa, sb] : cases) {
      INFO(path_name(path) << ": a " << shape_str(sa) << " b " << shape_str(sb));
      const Tensor a = randn_f32(sa, ++seed, true), b = randn_f32(sb, ++seed, true);
      Tensor out;
      {
        AutocastGuard guard(true);
        out = matmul(a, b);
      }
      const Tensor g = randn_f32(out.shape(), ++seed);
      out.backward(g);  // outside the guard: the forward's mode still applies
      CHECK(out.dtype() == DType::f32);
      CHECK(a.grad().dtype() == DType::f32);

      const Tensor ra = rounded(a), rb = rounded(b), rg = rounded(g);
      const double tolerance = f32_held() ? 0.0 : 1e-6;
      CHECK(rel_error(out, matmul(ra, rb)) <= tolerance);
      CHECK(rel_error(a.grad(), sum_to(matmul(rg, rb.transpose(-1, -2)), sa)) <= tolerance);
      // A b shared by the batch gets dB as one product over the stacked rows.
      const Tensor want_db = sb.size() == 2 && sa.size() > 2
                                 ? matmul(ra.reshape({-1, sa.back()}).transpose(0, 1), rg.reshape({-1, sb.back()}))
                                 : sum_to(matmul(ra.transpose(-1, -2), rg), sb);
      CHECK(rel_error(b.grad(), want_db) <= tolerance);
      // Autocast did something, and not much: bf16 keeps 8 significant bits.
      const double vs_f32 = rel_error(out, matmul(a.detach(), b.detach()));
      CHECK(vs_f32 > 1e-5);
      CHECK(vs_f32 < 1e-2);
    }
  }
}

TEST_CASE("autocast linear rounds x and W and keeps the bias and its gradient f32",
          "[autocast]") {
  for (const Bf16Path path : kPaths) {
    const PathScope scope(path);
    INFO(path_name(path));
    const Tensor x = randn_f32({2, 7, 48}, 1, true), w = randn_f32({20, 48}, 2, true);
    const Tensor b = randn_f32({20}, 3, true);
    Tensor y;
    {
      AutocastGuard guard(true);
      y = linear(x, w, b);
      // The form the products multiply: bits for a bf16 kernel, else f32 values.
      CHECK(autocast_operand(w).dtype() == (f32_held() ? DType::f32 : DType::bf16));
      CHECK(autocast_operand(w).same(autocast_operand(w)));  // the weight cache
    }
    const Tensor g = randn_f32(y.shape(), 4);
    y.backward(g);

    const Tensor rx = rounded(x), rw = rounded(w), rg = rounded(g).reshape({14, 20});
    const double tolerance = f32_held() ? 0.0 : 1e-6;
    CHECK(rel_error(y, linear(rx, rw, b.detach())) <= tolerance);
    CHECK(rel_error(x.grad(), matmul(rg, rw).reshape(x.shape())) <= tolerance);
    CHECK(rel_error(w.grad(), matmul(rg.transpose(0, 1), rx.reshape({14, 48}))) <= tolerance);
    CHECK(rel_error(b.grad(), sum(g.reshape({14, 20}), {0})) <= tolerance);  // not rounded
    const double vs_f32 = rel_error(y, linear(x.detach(), w.detach(), b.detach()));
    CHECK(vs_f32 > 1e-5);
    CHECK(vs_f32 < 1e-2);
  }
}

TEST_CASE("autocast linear_gelu rounds x W and b and its backward GEMMs take bf16 dz",
          "[autocast]") {
  const int64_t m = 37, k = 40, n = 24;
  for (const Bf16Path path : kPaths) {
    const PathScope scope(path);
    INFO(path_name(path));
    const Tensor x = randn_f32({m, k}, 11, true), w = randn_f32({n, k}, 12, true);
    const Tensor b = randn_f32({n}, 13, true);
    Tensor y;
    {
      AutocastGuard guard(true);
      y = linear_gelu(x, w, b);
    }
    const Tensor g = randn_f32(y.shape(), 14);
    y.backward(g);

    const Tensor rx = rounded(x), rw = rounded(w), rb = rounded(b);
    const GeluByHand want = linear_gelu_by_hand(rx, rw, rb, g);
    const Tensor rdz = rounded(want.dz);
    const double tolerance = f32_held() ? 0.0 : 1e-6;
    CHECK(rel_error(y, want.y) <= tolerance);
    CHECK(rel_error(x.grad(), matmul(rdz, rw)) <= tolerance);
    CHECK(rel_error(w.grad(), matmul(rdz.transpose(0, 1), rx)) <= tolerance);
    CHECK(rel_error(b.grad(), sum(want.dz, {0})) <= tolerance);  // db sums dz before its rounding
    const double vs_f32 = rel_error(y, linear_gelu(x.detach(), w.detach(), b.detach()));
    CHECK(vs_f32 > 1e-5);
    CHECK(vs_f32 < 1e-2);
  }
}

TEST_CASE("autocast conv2d rounds x, w and dz to bf16 on the CPU and keeps the bias f32", "[autocast]") {
  // 3x3 padded, 3x3 strided, and pointwise (x itself is the patch matrix); the
  // operands kept as bf16 bits for oneDNN's bf16 kernel (where this CPU has
  // one) and as rounded f32 values for the f32 GEMM (VLMC_GEMM_BF16=widened,
  // and every CPU without a bf16 kernel).
  struct Case {
    int64_t k, stride, padding;
  };
  uint64_t seed = 300;
  for (const Bf16Path path : {Bf16Path::native, Bf16Path::widened}) {
    for (const Case c : {Case{3, 1, 1}, Case{3, 2, 0}, Case{1, 1, 0}}) {
      kernels::cpu::onednn::set_bf16_path(path);
      INFO((path == Bf16Path::native ? "native" : "widened") << ": kernel " << c.k << " stride " << c.stride
                                                              << " padding " << c.padding);
      const Tensor x = randn_f32({2, 7, 6, 24}, ++seed, true), w = randn_f32({20, 24, c.k, c.k}, ++seed, true);
      const Tensor b = randn_f32({20}, ++seed, true);
      Tensor y;
      {
        AutocastGuard guard(true);
        y = conv2d(x, w, b, c.stride, c.padding);
      }
      const Tensor g = randn_f32(y.shape(), ++seed);
      y.backward(g);  // outside the guard: the forward's mode still applies

      // The f32 op on the rounded operands, its backward fed the rounded gradient.
      Tensor rx = rounded(x), rw = rounded(w);
      rx.set_requires_grad(true);
      rw.set_requires_grad(true);
      const Tensor want = conv2d(rx, rw, b.detach(), c.stride, c.padding);
      want.backward(rounded(g));
      CHECK(rel_error(y, want) <= 1e-6);
      CHECK(rel_error(x.grad(), rx.grad()) <= 1e-6);
      CHECK(rel_error(w.grad(), rw.grad()) <= 1e-6);
      CHECK(rel_error(b.grad(), sum(g, {0, 1, 2})) <= 1e-6);  // from g in f32
      const double vs_f32 = rel_error(y, conv2d(x.detach(), w.detach(), b.detach(), c.stride, c.padding));
      CHECK(vs_f32 > 1e-5);
      CHECK(vs_f32 < 1e-2);
    }
  }
  kernels::cpu::onednn::set_bf16_path(Bf16Path::automatic);
}

TEST_CASE("autocast conv2d_batchnorm rounds the convolution's operands on the CPU", "[autocast]") {
  const Tensor x = randn_f32({2, 6, 6, 16}, 310, true), w = randn_f32({12, 16, 3, 3}, 311, true);
  const Tensor gamma = randn_f32({12}, 312, true), beta = randn_f32({12}, 313, true);
  const auto run = [&](const Tensor& xi, const Tensor& wi) {
    Tensor mean = Tensor::zeros({12}), var = Tensor::ones({12}), count;
    return conv2d_batchnorm(xi, wi, Tensor(), gamma, beta, mean, var, count, true, 0.1, 1e-5, true);
  };
  Tensor y;
  {
    AutocastGuard guard(true);
    y = run(x, w);
  }
  const Tensor g = randn_f32(y.shape(), 314);
  y.backward(g);
  const Tensor grad_x = x.grad(), grad_w = w.grad(), grad_gamma = gamma.grad();
  // Forward: exactly the f32 op on the rounded operands.
  CHECK(rel_error(y, run(rounded(x), rounded(w)).detach()) <= 1e-6);
  // Backward: the products take dz (after BatchNorm and GELU) rounded, which the
  // f32 op cannot be fed from outside; it must stay within bf16's precision of
  // the f32 op's gradients on the rounded operands, and the BN gradients too.
  gamma.set_grad(Tensor());  // the reference run's BN gradient lands here again
  Tensor rx = rounded(x), rw = rounded(w);
  rx.set_requires_grad(true);
  rw.set_requires_grad(true);
  run(rx, rw).backward(g);
  CHECK(rel_error(grad_x, rx.grad()) < 1e-2);
  CHECK(rel_error(grad_w, rw.grad()) < 1e-2);
  CHECK(rel_error(grad_gamma, gamma.grad()) <= 1e-5);
}

TEST_CASE("autocast mode is captured at forward time", "[autocast]") {
  const Tensor a = randn_f32({9, 30}, 21, true), b = randn_f32({30, 8}, 22, true);
  const Tensor g = randn_f32({9, 8}, 23);
  // Forward outside, backward inside: plain f32 gradients.
  const Tensor out = matmul(a, b);
  {
    AutocastGuard guard(true);
    out.backward(g);
  }
  CHECK(rel_error(a.grad(), matmul(g, b.detach().transpose(0, 1))) <= 1e-6);
  CHECK(rel_error(a.grad(), matmul(rounded(g), rounded(b).transpose(0, 1))) > 1e-5);
}

TEST_CASE("autocast guards nest and restore the mode", "[autocast]") {
  CHECK_FALSE(autocast_bf16());
  {
    AutocastGuard on(true);
    CHECK(autocast_bf16());
    {
      AutocastGuard off(false);
      CHECK_FALSE(autocast_bf16());
      {
        AutocastGuard again(true);
        CHECK(autocast_bf16());
      }
      CHECK_FALSE(autocast_bf16());
      // Disabled inside an enabled guard: plain f32.
      const Tensor a = randn_f32({6, 10}, 31), b = randn_f32({10, 5}, 32);
      CHECK(rel_error(matmul(a, b), matmul(rounded(a), rounded(b))) > 1e-5);
    }
    CHECK(autocast_bf16());
  }
  CHECK_FALSE(autocast_bf16());
}

TEST_CASE("autocast leaves f64 untouched", "[autocast]") {
  Generator gen(41);
  const Tensor a = Tensor::randn({8, 16}, gen, DType::f64);
  const Tensor w = Tensor::randn({6, 16}, gen, DType::f64);
  const Tensor want_mm = matmul(a, w.transpose(0, 1)), want_lin = linear(a, w);
  const Tensor want_gelu = linear_gelu(a, w);
  AutocastGuard guard(true);
  const Tensor mm = matmul(a, w.transpose(0, 1));
  CHECK(mm.dtype() == DType::f64);
  CHECK(max_abs_error(mm, want_mm) == 0.0);
  CHECK(max_abs_error(linear(a, w), want_lin) == 0.0);
  CHECK(max_abs_error(linear_gelu(a, w), want_gelu) == 0.0);
}

TEST_CASE("autocast weight cache lives for the outermost guard only", "[autocast]") {
  const Tensor x = randn_f32({5, 12}, 51), w = randn_f32({7, 12}, 52, true);
  const Tensor b = randn_f32({7}, 53, true);
  Tensor y_cached, y_uncached;
  {
    AutocastGuard guard(true);
    CHECK(autocast_cache_size() == 0);
    y_cached = linear(x, w);
    CHECK(autocast_cache_size() == 1);  // w only: x is not a leaf that requires grad
    {
      AutocastGuard inner(true);
      const Tensor again = linear(x, w);  // the same copy: no new entry
      CHECK(autocast_cache_size() == 1);
      CHECK(autocast_operand(w).same(autocast_operand(w)));
      linear_gelu(x, w, b);  // adds b
      CHECK(autocast_cache_size() == 2);
    }
    CHECK(autocast_cache_size() == 2);  // an inner guard's exit keeps the cache
    // The same values through a non-leaf (never cached) give the same result.
    y_uncached = linear(x, mul(w, 1.0));
  }
  CHECK(autocast_cache_size() == 0);
  CHECK(max_abs_error(y_cached, y_uncached) == 0.0);
  CHECK_FALSE(autocast_operand(w).same(autocast_operand(w)));  // no guard: no cache

  // An update between guards (the optimizer's place) is seen by the next guard.
  {
    NoGradGuard no_grad;
    Tensor(w).copy_(mul(w, 0.5));
  }
  AutocastGuard guard(true);
  CHECK(rel_error(linear(x, w), linear(rounded(x), rounded(w))) <= 1e-6);
}

TEST_CASE("autocast trains a 2-layer MLP along the f32 loss curve", "[autocast]") {
  const int64_t batch = 32, in = 16, hidden = 32, out = 4, steps = 20;
  const Tensor x = randn_f32({batch, in}, 61), target = randn_f32({batch, out}, 62);
  const auto train = [&](bool bf16) {
    std::vector<Tensor> params{mul(randn_f32({hidden, in}, 63), 0.25).detach(),
                               Tensor::zeros({hidden}),
                               mul(randn_f32({out, hidden}, 64), 0.18).detach(),
                               Tensor::zeros({out})};
    for (Tensor& p : params) p.set_requires_grad(true);
    optim::AdamW opt({optim::ParamGroup{"mlp", params, 1e-2, 1e-2}});
    std::vector<double> losses;
    for (int64_t step = 0; step < steps; ++step) {
      Tensor loss;
      {
        AutocastGuard guard(bf16);
        const Tensor h = linear_gelu(x, params[0], params[1]);
        const Tensor d = sub(linear(h, params[2], params[3]), target);
        loss = mean(mul(d, d));
        loss.backward();
      }
      opt.step();  // outside the guard, on the f32 master weights
      opt.zero_grad();
      losses.push_back(loss.item());
    }
    return losses;
  };
  const std::vector<double> f32 = train(false), bf16 = train(true);
  CHECK(bf16.back() < 0.8 * bf16.front());  // it learns
  double worst = 0, total_diff = 0;
  for (int64_t i = 0; i < steps; ++i) {
    const double rel = std::abs(bf16[i] - f32[i]) / f32[i];
    worst = std::max(worst, rel);
    total_diff += rel;
  }
  INFO("worst relative loss difference " << worst);
  CHECK(worst <= 2e-2);
  CHECK(total_diff > 0);  // the bf16 run really differs
}
