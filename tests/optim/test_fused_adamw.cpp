// Fused (multi-tensor) AdamW and clip_coefficient against the unfused reference
// path and clip_grad_norm_, on the CPU, tag [fused_adamw]. The unfused path is
// golden-tested against torch in test_adamw.cpp; here both paths must agree.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/threads.h"
#include "kernels/adamw.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "tests/support/check.h"

using namespace vlmc;
using namespace vlmc::optim;

namespace {

// Shapes of every kind: a scalar, odd sizes, one element, and a tensor larger
// than one CPU work piece (so a piece spans tensors and threads split one).
const std::vector<Shape> kShapes = {{}, {3}, {4097}, {1}, {7, 13}, {300, 170}, {2, 3, 5}};

struct Model {
  std::vector<Tensor> params;
  std::vector<ParamGroup> groups;
};

// The same initial values every call; three groups with different lrs and
// weight decays (one without decay).
Model make_model() {
  Generator gen(11);
  Model m;
  for (const Shape& s : kShapes) m.params.push_back(Tensor::randn(s, gen).set_requires_grad(true));
  ParamGroup a, b, c;
  a.name = "decay";
  a.params = {m.params[0], m.params[1], m.params[2]};
  a.lr = 3e-3;
  a.weight_decay = 0.1;
  b.name = "no_decay";
  b.params = {m.params[3], m.params[4]};
  b.lr = 1e-2;
  b.weight_decay = 0.0;
  c.name = "other";
  c.params = {m.params[5], m.params[6]};
  c.lr = 5e-4;
  c.weight_decay = 0.05;
  c.betas = {0.8, 0.99};
  c.eps = 1e-6;
  m.groups = {a, b, c};
  return m;
}

// Gradients of step s (seeded by s): parameter 4 gets none on even steps.
void set_grads(Model& m, int s) {
  Generator gen(1000 + static_cast<uint64_t>(s));
  for (size_t i = 0; i < m.params.size(); ++i) {
    const Tensor g = mul(Tensor::randn(m.params[i].shape(), gen), 0.5 + 0.1 * double(i));
    m.params[i].set_grad(i == 4 && s % 2 == 0 ? Tensor() : g);
  }
}

// Relative error in the norm, ||a - b|| / ||b|| (the two paths may round a
// multiply-add differently where the compiler contracts it into an FMA).
double max_rel(const Tensor& a, const Tensor& b) { return test::rel_error(a, b); }

void check_same(const Model& a, const AdamW& oa, const Model& b, const AdamW& ob, double tol) {
  for (size_t i = 0; i < a.params.size(); ++i) {
    INFO("parameter " << i);
    CHECK(max_rel(a.params[i], b.params[i]) <= tol);
  }
  const auto sa = oa.state_dict(), sb = ob.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (const auto& [key, t] : sa) {
    INFO(key);
    REQUIRE(sb.count(key) == 1);
    if (key.size() > 4 && key.compare(key.size() - 4, 4, "step") == 0)
      CHECK(t.item() == sb.at(key).item());
    else
      CHECK(max_rel(t, sb.at(key)) <= tol);
  }
}

}  // namespace

TEST_CASE("fused AdamW equals the unfused path over 20 steps with an lr change",
          "[fused_adamw]") {
  Model a = make_model(), b = make_model();
  AdamW unfused(a.groups), fused(b.groups, true);
  REQUIRE(fused.fused());
  REQUIRE_FALSE(unfused.fused());
  for (int s = 0; s < 20; ++s) {
    if (s == 10) {
      unfused.set_lr_multiplier(0.25);
      fused.set_lr_multiplier(0.25);
    }
    set_grads(a, s);
    set_grads(b, s);
    unfused.step();
    fused.step();
  }
  CHECK(fused.step_count(1, 1) == 10);  // parameter 4: no gradient on even steps
  CHECK(fused.step_count(0, 0) == 20);
  check_same(b, fused, a, unfused, 1e-6);
}

TEST_CASE("fused step(coef) with clip_coefficient equals clip_grad_norm_ then step",
          "[fused_adamw]") {
  Model a = make_model(), b = make_model();
  AdamW unfused(a.groups), fused(b.groups, true);
  for (int s = 0; s < 8; ++s) {
    set_grads(a, s);
    set_grads(b, s);
    // Alternate a clipping and a non-clipping threshold.
    const double max_norm = s % 2 == 0 ? 1.0 : 1e4;
    const std::vector<Tensor> grads_before = [&] {
      std::vector<Tensor> g;
      for (const Tensor& p : b.params) g.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
      return g;
    }();
    const GradClip clip = clip_coefficient(b.params, max_norm);
    const double total = clip_grad_norm_(a.params, max_norm);
    REQUIRE(clip.total_norm.numel() == 1);
    REQUIRE(clip.coef.dtype() == DType::f32);
    CHECK(std::abs(clip.total_norm.item() - total) <= 1e-6 * total);
    const double expect_coef = std::min(1.0, max_norm / (total + 1e-6));
    CHECK(std::abs(clip.coef.item() - expect_coef) <= 1e-6 * expect_coef);
    // clip_coefficient leaves the gradients alone.
    for (size_t i = 0; i < b.params.size(); ++i)
      if (grads_before[i].defined())
        CHECK(b.params[i].grad().to_vector<float>() == grads_before[i].to_vector<float>());
    unfused.step();
    fused.step(clip.coef);
  }
  check_same(b, fused, a, unfused, 1e-6);
}

TEST_CASE("unfused step(grad_scale) equals fused step(grad_scale)", "[fused_adamw]") {
  Model a = make_model(), b = make_model();
  AdamW unfused(a.groups), fused(b.groups, true);
  for (int s = 0; s < 5; ++s) {
    set_grads(a, s);
    set_grads(b, s);
    const Tensor scale = Tensor::scalar(0.37 + 0.1 * s);
    unfused.step(scale);
    fused.step(scale.reshape({1}));  // any one-element shape
    unfused.step(Tensor());          // undefined scale: 1
    fused.step(Tensor());
  }
  check_same(b, fused, a, unfused, 1e-6);
  // The scaled unfused path leaves the gradient itself alone.
  set_grads(a, 1);
  const std::vector<float> g = a.params[0].grad().to_vector<float>();
  unfused.step(Tensor::scalar(0.5));
  CHECK(a.params[0].grad().to_vector<float>() == g);
}

TEST_CASE("clip_coefficient without gradients and with a tiny norm", "[fused_adamw]") {
  Model m = make_model();
  GradClip none = clip_coefficient(m.params, 1.0);
  CHECK(none.total_norm.item() == 0.0);
  CHECK(none.coef.item() == 1.0);
  set_grads(m, 1);
  GradClip big = clip_coefficient(m.params, 1e9);
  CHECK(big.coef.item() == 1.0);
  CHECK(std::abs(big.total_norm.item() - clip_grad_norm_(m.params, 1e9)) <=
        1e-6 * big.total_norm.item());
  // A non-contiguous gradient is read through a copy.
  Tensor p = Tensor::zeros({3, 2}).set_requires_grad(true);
  p.set_grad(Tensor::from_vector(std::vector<float>{3, 0, 4, 0, 0, 0}, {2, 3}).transpose(0, 1));
  GradClip nc = clip_coefficient({p}, 1.0);
  CHECK(std::abs(nc.total_norm.item() - 5.0) <= 1e-6);
  CHECK(std::abs(nc.coef.item() - 1.0 / (5.0 + 1e-6)) <= 1e-7);
  REQUIRE_THROWS_WITH(clip_coefficient({p}, 0.0), Catch::Contains("max_norm 0 must be > 0"));
  Tensor d = Tensor::zeros({2}, DType::f64).set_requires_grad(true);
  d.set_grad(Tensor::ones({2}, DType::f64));
  REQUIRE_THROWS_WITH(clip_coefficient({d}, 1.0), Catch::Contains("must be f32"));
}

TEST_CASE("fused AdamW refuses f64 and non-contiguous parameters by name", "[fused_adamw]") {
  ParamGroup g;
  g.name = "g";
  g.params = {Tensor::zeros({2, 3}, DType::f64).set_requires_grad(true)};
  REQUIRE_NOTHROW(AdamW({g}));
  REQUIRE_THROWS_WITH(AdamW({g}, true),
                      Catch::Contains("group 'g': fused AdamW needs f32 parameters, got f64 [2,3]"));
  g.params = {Tensor::zeros({2, 3}).transpose(0, 1).set_requires_grad(true)};
  REQUIRE_THROWS_WITH(AdamW({g}, true), Catch::Contains("must be contiguous"));
  g.params = {Tensor::zeros({2}).set_requires_grad(true)};
  AdamW opt({g}, true);
  g.params[0].set_grad(Tensor::ones({2}));
  REQUIRE_THROWS_WITH(opt.step(Tensor::scalar(1.0, DType::f64)),
                      Catch::Contains("must be an f32 tensor of one element"));
  REQUIRE_THROWS_WITH(opt.step(Tensor::ones({2})), Catch::Contains("of one element"));
  g.params[0].set_grad(Tensor::ones({2}, DType::f64));
  REQUIRE_THROWS_WITH(opt.step(), Catch::Contains("does not match parameter"));
}

TEST_CASE("a fused state_dict loads into the unfused optimizer and the next step agrees",
          "[fused_adamw]") {
  Model a = make_model();
  AdamW fused(a.groups, true);
  for (int s = 0; s < 5; ++s) {
    set_grads(a, s);
    fused.step();
  }
  const std::map<std::string, Tensor> state = fused.state_dict();
  // Two copies of the current parameters, one per path.
  Model b = make_model(), c = make_model();
  for (size_t i = 0; i < a.params.size(); ++i) {
    b.params[i].detach().copy_(a.params[i]);
    c.params[i].detach().copy_(a.params[i]);
  }
  AdamW unfused(b.groups), fused_again(c.groups, true);
  unfused.load_state_dict(state);
  fused_again.load_state_dict(unfused.state_dict());  // and back
  for (const auto& [key, t] : state)
    CHECK(unfused.state_dict().at(key).to_vector<double>() == t.to_vector<double>());
  set_grads(b, 5);
  set_grads(c, 5);
  unfused.step();
  fused_again.step();
  check_same(c, fused_again, b, unfused, 1e-6);
}

TEST_CASE("the CPU multi-tensor AdamW kernel: every element updated once, the same bits on 1-3 threads",
          "[fused_adamw][threads]") {
  // The stage-0 language model's tensor sizes (342K elements, pieces crossing tensors).
  const std::vector<int64_t> sizes = {6656, 16384, 16384, 16384, 16384, 32768, 32768, 32768, 128,
                                      16384, 16384, 16384, 16384, 32768, 32768, 32768, 128, 128, 6656};
  const auto run = [&](int threads, std::vector<std::vector<float>>& p, bool reference) {
    std::vector<std::vector<float>> g, m, v;
    std::vector<kernels::AdamWTensor<float>> list;
    p.clear();
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t n = static_cast<size_t>(sizes[i]);
      p.emplace_back(n);
      g.emplace_back(n);
      m.emplace_back(n, 0.01f);
      v.emplace_back(n, 0.02f);
      for (size_t k = 0; k < n; ++k) {
        p[i][k] = std::sin(0.001f * static_cast<float>(k + i));
        g[i][k] = std::cos(0.003f * static_cast<float>(k) + static_cast<float>(i));
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      kernels::AdamWTensor<float> t{};
      t.param = p[i].data();
      t.grad = g[i].data();
      t.exp_avg = m[i].data();
      t.exp_avg_sq = v[i].data();
      t.numel = sizes[i];
      t.decay_factor = 0.999f;
      t.beta1 = 0.9f;
      t.one_minus_beta1 = 0.1f;
      t.beta2 = 0.999f;
      t.one_minus_beta2 = 0.001f;
      t.neg_step_size = -1e-3f;
      t.sqrt_bc2 = 0.5f;
      t.eps = 1e-8f;
      list.push_back(t);
    }
    if (reference) {  // one element at a time, in order
      for (const auto& t : list)
        for (int64_t k = 0; k < t.numel; ++k)
          kernels::adamw_element(t.param[k], t.exp_avg[k], t.exp_avg_sq[k], t.grad[k], t);
      return;
    }
    const int saved = num_threads();
    set_num_threads(threads);
    kernels::cpu::adamw<float>(list.data(), static_cast<int64_t>(list.size()), nullptr);
    set_num_threads(saved);
  };
  std::vector<std::vector<float>> expected, got;
  run(1, expected, true);
  for (const int threads : {1, 2, 3}) {
    INFO("threads " << threads);
    run(threads, got, false);
    CHECK(got == expected);
  }
}
