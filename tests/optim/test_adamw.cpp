// AdamW, parameter groups, gradient clipping and accumulation (optim/), tag [optim].
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;
using namespace vlmc::optim;

namespace {

Tensor param(const std::vector<double>& values, const Shape& shape) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true);
  return t;
}

Tensor param(const std::vector<float>& values, const Shape& shape) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true);
  return t;
}

// One AdamW step on a scalar, in double, from the formula in optim/adamw.h.
struct RefAdamW {
  double p, m = 0, v = 0;
  int t = 0;
  void step(double g, double lr, double wd, double b1, double b2, double eps) {
    ++t;
    p -= lr * wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double denom = std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps;
    p -= lr / (1 - std::pow(b1, t)) * m / denom;
  }
};

}  // namespace

TEST_CASE("AdamW matches the PyTorch update rule on hand-driven steps", "[optim]") {
  // f64 so the comparison with the scalar reference is tight.
  Tensor w = param(std::vector<double>{1.0, -2.0, 0.5}, {3});
  ParamGroup g;
  g.name = "all";
  g.params = {w};
  g.lr = 0.1;
  g.weight_decay = 0.2;
  g.betas = {0.8, 0.9};
  g.eps = 1e-3;  // large, so eps-after-sqrt vs inside would show
  AdamW opt({g});
  std::vector<RefAdamW> ref = {{1.0}, {-2.0}, {0.5}};
  const std::vector<std::vector<double>> grads = {{0.5, -1.0, 1e-4}, {-0.3, 2.0, 0.0}, {0.1, 0.1, -3.0}};
  for (const auto& gv : grads) {
    w.set_grad(Tensor::from_vector(gv, {3}));
    opt.step();
    for (size_t i = 0; i < 3; ++i) ref[i].step(gv[i], 0.1, 0.2, 0.8, 0.9, 1e-3);
  }
  const std::vector<double> got = w.to_vector<double>();
  for (size_t i = 0; i < 3; ++i) CHECK(got[i] == Approx(ref[i].p).epsilon(1e-13));
  CHECK(opt.step_count(0, 0) == 3);
  // First step of Adam moves each coordinate by about lr (m̂/sqrt(v̂) = sign(g)),
  // after decay: 1 - 0.1*0.2*1 = 0.98, then - 0.1 * 0.5/(0.5 + 1e-3).
  Tensor one = param(std::vector<double>{1.0}, {1});
  g.params = {one};
  AdamW single({g});
  one.set_grad(Tensor::from_vector(std::vector<double>{0.5}, {1}));
  single.step();
  CHECK(one.item() == Approx(0.98 - 0.1 * 0.5 / 0.501).epsilon(1e-14));
}

TEST_CASE("AdamW skips parameters without a gradient and zero_grad clears them", "[optim]") {
  Tensor a = param(std::vector<float>{1, 2}, {2});
  Tensor b = param(std::vector<float>{3, 4}, {2});
  ParamGroup g;
  g.params = {a, b};
  AdamW opt({g});
  a.set_grad(Tensor::from_vector(std::vector<float>{1, 1}, {2}));
  opt.step();
  CHECK(opt.step_count(0, 0) == 1);
  CHECK(opt.step_count(0, 1) == 0);
  CHECK(b.to_vector<float>() == std::vector<float>{3, 4});
  CHECK(a.to_vector<float>()[0] < 1.0f);

  opt.zero_grad(false);
  REQUIRE(a.grad().defined());
  CHECK(a.grad().to_vector<float>() == std::vector<float>{0, 0});
  CHECK_FALSE(b.grad().defined());
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  // A zero gradient is still a step (the moments decay), unlike a missing one.
  a.set_grad(Tensor::zeros({2}));
  opt.step();
  CHECK(opt.step_count(0, 0) == 2);
}

TEST_CASE("make_param_groups splits decay, no-decay and the prefix learning rate", "[optim]") {
  Tensor w1 = param(std::vector<float>(6, 1.f), {2, 3});
  Tensor b1 = param(std::vector<float>(2, 1.f), {2});
  Tensor ln = param(std::vector<float>(3, 1.f), {3});
  Tensor cw = param(std::vector<float>(6, 1.f), {3, 2});
  Tensor cb = param(std::vector<float>(3, 1.f), {3});
  Tensor frozen = Tensor::ones({4, 4});  // requires_grad false: left out
  GroupingOptions o;
  o.lr = 2e-5;
  o.weight_decay = 0.1;
  o.lr_prefix = "connector.";
  o.prefix_lr = 1e-3;
  const auto groups = make_param_groups({{"llm.w", w1}, {"llm.bias", b1}, {"llm.norm.weight", ln},
                                         {"connector.0.weight", cw}, {"connector.0.bias", cb},
                                         {"vision.w", frozen}},
                                        o);
  REQUIRE(groups.size() == 4);
  CHECK(groups[0].name == "decay");
  CHECK(groups[1].name == "no_decay");
  CHECK(groups[2].name == "connector.decay");
  CHECK(groups[3].name == "connector.no_decay");
  CHECK((groups[0].params.size() == 1 && groups[0].params[0].same(w1)));
  CHECK((groups[1].params.size() == 2 && groups[1].params[0].same(b1) && groups[1].params[1].same(ln)));
  CHECK((groups[2].params.size() == 1 && groups[2].params[0].same(cw)));
  CHECK((groups[3].params.size() == 1 && groups[3].params[0].same(cb)));
  CHECK(groups[0].weight_decay == 0.1);
  CHECK(groups[1].weight_decay == 0.0);
  CHECK(groups[2].weight_decay == 0.1);
  CHECK(groups[3].weight_decay == 0.0);
  CHECK(groups[0].lr == 2e-5);
  CHECK(groups[2].lr == 1e-3);
  // Without a prefix, empty groups are dropped.
  const auto plain = make_param_groups({{"w", w1}}, GroupingOptions{});
  REQUIRE(plain.size() == 1);
  CHECK(plain[0].name == "decay");
  CHECK(is_no_decay("bias", w1));
  CHECK_FALSE(is_no_decay("unbiased.weight", w1));
}

TEST_CASE("AdamW refuses bad groups with a message", "[optim]") {
  Tensor p = param(std::vector<float>{1}, {1});
  ParamGroup g;
  g.name = "g";
  g.params = {p};
  g.lr = -1;
  REQUIRE_THROWS_WITH(AdamW({g}), Catch::Contains("AdamW: group 'g': lr -1"));
  g.lr = 1e-3;
  g.betas = {0.9, 1.0};
  REQUIRE_THROWS_WITH(AdamW({g}), Catch::Contains("betas"));
  g.betas = {0.9, 0.999};
  g.params = {p, p};
  REQUIRE_THROWS_WITH(AdamW({g}), Catch::Contains("more than once"));
  g.params = {Tensor::from_vector(std::vector<int64_t>{1}, {1})};
  REQUIRE_THROWS_WITH(AdamW({g}), Catch::Contains("must be f32 or f64"));
  g.params = {p};
  AdamW opt({g});
  p.set_grad(Tensor::zeros({1}, DType::f64));
  REQUIRE_THROWS_WITH(opt.step(), Catch::Contains("AdamW: gradient f64 [1]"));
}

TEST_CASE("AdamW state_dict round-trips and resumes identically", "[optim]") {
  Generator gen(7);
  auto make = [&] {
    std::vector<Tensor> ps = {Tensor::randn({3, 2}, gen), Tensor::randn({2}, gen)};
    return ps;
  };
  const std::vector<Tensor> init = make();
  std::vector<std::vector<Tensor>> grads;
  for (int s = 0; s < 5; ++s) grads.push_back(make());
  auto fresh = [&] {
    std::vector<Tensor> ps;
    for (const Tensor& t : init) ps.push_back(t.clone().set_requires_grad(true));
    return ps;
  };
  auto group = [](const std::vector<Tensor>& ps) {
    ParamGroup g;
    g.params = ps;
    g.lr = 0.05;
    return std::vector<ParamGroup>{g};
  };
  auto run = [&](AdamW& opt, std::vector<Tensor>& ps, int from, int to) {
    for (int s = from; s < to; ++s) {
      // Parameter 1 gets no gradient at step 1: its step count lags.
      for (size_t i = 0; i < ps.size(); ++i)
        ps[i].set_grad(s == 1 && i == 1 ? Tensor() : grads[s][i]);
      opt.step();
    }
  };
  std::vector<Tensor> a = fresh();
  AdamW opt_a(group(a));
  run(opt_a, a, 0, 5);

  std::vector<Tensor> b = fresh();
  AdamW opt_b(group(b));
  run(opt_b, b, 0, 3);
  const auto state = opt_b.state_dict();
  CHECK(state.size() == 6);
  CHECK(state.at("state.1.step").item() == 2);
  std::vector<Tensor> c;
  for (const Tensor& t : b) c.push_back(t.detach().clone().set_requires_grad(true));
  AdamW opt_c(group(c));
  opt_c.load_state_dict(state);
  CHECK(opt_c.step_count(0, 0) == 3);
  run(opt_c, c, 3, 5);
  // Same ops in the same order: bit-identical.
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].to_vector<float>() == c[i].to_vector<float>());
  auto bad = state;
  bad["state.0.exp_avg"] = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(opt_c.load_state_dict(bad), Catch::Contains("does not match parameter"));
  bad = state;
  bad["state.9.step"] = Tensor::from_vector(std::vector<int64_t>{1}, {});
  REQUIRE_THROWS_WITH(opt_c.load_state_dict(bad), Catch::Contains("name no parameter"));
}

TEST_CASE("clip_grad_norm_ scales by max_norm / (total + 1e-6) above the threshold", "[optim]") {
  Tensor a = param(std::vector<double>{0, 0}, {2});
  Tensor b = param(std::vector<double>{0}, {1});
  Tensor c = param(std::vector<double>{0}, {1});  // no gradient: ignored
  a.set_grad(Tensor::from_vector(std::vector<double>{3, 4}, {2}));
  b.set_grad(Tensor::from_vector(std::vector<double>{12}, {1}));
  CHECK(clip_grad_norm_({a, b, c}, 1.0) == Approx(13.0).epsilon(1e-15));
  const double coef = 1.0 / (13.0 + 1e-6);
  const std::vector<double> ga = a.grad().to_vector<double>();
  CHECK(ga[0] == Approx(3 * coef).epsilon(1e-15));
  CHECK(ga[1] == Approx(4 * coef).epsilon(1e-15));
  CHECK(b.grad().item() == Approx(12 * coef).epsilon(1e-15));
  CHECK_FALSE(c.grad().defined());
  // Below the threshold nothing changes; the norm is still returned.
  a.set_grad(Tensor::from_vector(std::vector<double>{0.3, 0.4}, {2}));
  CHECK(clip_grad_norm_({a}, 1.0) == Approx(0.5).epsilon(1e-15));
  CHECK(a.grad().to_vector<double>() == std::vector<double>{0.3, 0.4});
  // A non-contiguous gradient is replaced rather than scaled in place.
  Tensor m = param(std::vector<double>(6, 0.0), {2, 3});
  m.set_grad(Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1));
  const double total = std::sqrt(91.0);
  CHECK(clip_grad_norm_({m}, 2.0) == Approx(total).epsilon(1e-15));
  CHECK(m.grad().to_vector<double>()[1] == Approx(3 * 2.0 / (total + 1e-6)).epsilon(1e-15));
  CHECK(clip_grad_norm_({c}, 1.0) == 0.0);
  REQUIRE_THROWS_WITH(clip_grad_norm_({a}, 0.0), Catch::Contains("clip_grad_norm_: max_norm 0"));
}

TEST_CASE("K accumulated micro-batches with loss / K give the big batch's gradient", "[optim]") {
  // y = linear(x, W, b), loss = mean((y - t)^2) over a batch of 8 rows.
  Generator gen(11);
  const Tensor x = Tensor::randn({8, 5}, gen, DType::f64);
  const Tensor target = Tensor::randn({8, 3}, gen, DType::f64);
  const Tensor w0 = Tensor::randn({3, 5}, gen, DType::f64);
  const Tensor b0 = Tensor::randn({3}, gen, DType::f64);
  auto loss_of = [](const Tensor& xs, const Tensor& ts, const Tensor& w, const Tensor& b) {
    const Tensor d = linear(xs, w, b) - ts;
    return mean(d * d);
  };
  Tensor w_big = w0.clone().set_requires_grad(true), b_big = b0.clone().set_requires_grad(true);
  loss_of(x, target, w_big, b_big).backward();

  const int64_t k = 4;
  Tensor w_acc = w0.clone().set_requires_grad(true), b_acc = b0.clone().set_requires_grad(true);
  for (int64_t i = 0; i < k; ++i) {
    const Tensor loss = loss_of(x.narrow(0, 2 * i, 2), target.narrow(0, 2 * i, 2), w_acc, b_acc);
    (loss / static_cast<double>(k)).backward();
  }
  CHECK_REL(w_acc.grad(), w_big.grad(), 1e-13);
  CHECK_REL(b_acc.grad(), b_big.grad(), 1e-13);
}

TEST_CASE("AdamW + cosine schedule + clipping replay torch.optim.AdamW", "[optim][golden]") {
  const test::GoldenFile golden = test::load_golden("optim");
  const auto& tensors = golden.tensors;
  int cases = 0;
  for (const auto& [name, args] : golden.cases) {
    INFO("case " << name);
    ++cases;
    const int64_t steps = args.at("steps");
    const CosineWithWarmup sched = CosineWithWarmup::from_ratio(
        steps, args.at("warmup_ratio").get<double>(), args.at("min_lr_ratio").get<double>());
    CHECK(sched.warmup_steps == args.at("warmup_steps").get<int64_t>());

    std::map<std::string, Tensor> params;
    std::vector<Tensor> all;
    std::vector<NamedTensor> named;
    std::vector<ParamGroup> groups;
    for (const auto& jg : args.at("groups")) {
      ParamGroup g;
      g.name = jg.at("name");
      g.lr = jg.at("lr");
      g.weight_decay = jg.at("weight_decay");
      g.betas = {jg.at("betas")[0].get<double>(), jg.at("betas")[1].get<double>()};
      g.eps = jg.at("eps");
      for (const auto& jp : jg.at("params")) {
        const std::string pname = jp;
        Tensor p = tensors.at(name + ".init." + pname).clone();
        p.set_requires_grad(true);
        params[pname] = p;
        all.push_back(p);
        named.push_back({pname, p});
        g.params.push_back(p);
      }
      groups.push_back(g);
    }
    // make_param_groups puts each parameter where the script did.
    GroupingOptions o;
    o.lr_prefix = "connector.";
    const auto split = make_param_groups(named, o);
    REQUIRE(split.size() == groups.size());
    for (size_t i = 0; i < split.size(); ++i) {
      CHECK(split[i].name == groups[i].name);
      REQUIRE(split[i].params.size() == groups[i].params.size());
      for (size_t j = 0; j < split[i].params.size(); ++j) CHECK(split[i].params[j].same(groups[i].params[j]));
    }

    AdamW opt(groups);
    const double max_norm = args.at("max_norm");
    for (int64_t s = 0; s < steps; ++s) {
      opt.zero_grad();
      for (auto& [pname, p] : params) {
        const auto& has = args.at("has_grad").at(pname);
        if (std::find(has.begin(), has.end(), s) != has.end())
          p.set_grad(tensors.at(name + ".grad." + pname).select(0, s).clone());
      }
      const double norm = clip_grad_norm_(all, max_norm);
      CHECK(norm == Approx(args.at("norms")[s].get<double>()).epsilon(1e-5));
      opt.set_lr_multiplier(sched.multiplier(s));
      for (size_t g = 0; g < groups.size(); ++g) {
        const double want = args.at("lrs")[s][g];
        CHECK(std::abs(opt.groups()[g].lr - want) <= 1e-7 * std::abs(want));
      }
      opt.step();
    }
    for (const auto& [pname, p] : params) {
      INFO("parameter " << pname);
      CHECK_REL(p.detach(), tensors.at(name + ".final." + pname), 1e-5);
    }
  }
  CHECK(cases == 3);
}
