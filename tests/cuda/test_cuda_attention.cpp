// CUDA scaled_dot_product_attention against the CPU oracle: the v1 kernels called directly
// with every output poisoned (NaN) first, so an element a kernel fails to write fails the
// comparison; then the op, forward and backward. f32 at relative error (in norm) 1e-5.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <vector>

#include "core/autocast.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/attention.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const Device kGpu = Device::cuda(0);

[[maybe_unused]] Tensor poisoned(const Shape& shape) { return Tensor::full(shape, NAN, DType::f32, kGpu); }

struct Case {
  int64_t b, hq, hkv, t, s, dh;
  bool causal, mask;
};

// {B, Hq, Hkv, T, S, Dh, causal, padding mask}: odd sizes, 1 element, S > T and S < T,
// grouped heads, Dh = 1, 33, 128, a key tile boundary (S = 32, 33) and > 64K outputs;
// no keys at all (S = 0: lse = -inf, as the CPU writes) and empty rows (Dh = 0: lse =
// log of the visible keys, -inf where the mask hides them all).
const std::vector<Case> kCases = {
    {1, 1, 1, 1, 1, 1, false, false},   {1, 2, 2, 5, 7, 3, false, false},  {2, 4, 2, 5, 7, 3, true, true},
    {2, 2, 1, 7, 4, 33, true, false},   {1, 3, 3, 33, 33, 16, true, true}, {2, 2, 2, 32, 65, 64, false, true},
    {1, 4, 1, 17, 40, 128, true, false}, {2, 8, 4, 70, 90, 64, true, true}, {1, 2, 1, 3, 0, 4, false, false},
    {2, 2, 2, 5, 6, 0, true, true},
};

Tensor padding_mask(const Case& c, Generator& gen) {
  // About a quarter of the keys hidden; sample 0 hides all of them when S < 8, which gives
  // fully masked rows.
  std::vector<uint8_t> m(static_cast<size_t>(c.b * c.s));
  const std::vector<float> r = Tensor::rand({c.b * c.s}, gen).to_vector<float>();
  for (size_t e = 0; e < m.size(); ++e) m[e] = r[e] < 0.25f ? 0 : 1;
  if (c.s < 8)
    for (int64_t j = 0; j < c.s; ++j) m[static_cast<size_t>(j)] = 0;
  return Tensor::from_vector(m, {c.b, c.s});
}

}  // namespace

#if VLMC_WITH_CUDA  // calls kernels::cuda directly: CUDA builds only
TEST_CASE("cuda attention v1 kernels write every output and match the CPU", "[cuda][attention]") {
  uint64_t seed = 300;
  for (const Case& c : kCases) {
    INFO(c.b << "x" << c.hq << "/" << c.hkv << " T=" << c.t << " S=" << c.s << " Dh=" << c.dh
              << " causal=" << c.causal << " mask=" << c.mask);
    Generator gen(seed++);
    const kernels::AttentionShape s{c.b, c.hq, c.hkv, c.t, c.s, c.dh};
    const Tensor q = Tensor::randn({c.b, c.hq, c.t, c.dh}, gen), k = Tensor::randn({c.b, c.hkv, c.s, c.dh}, gen),
                 v = Tensor::randn({c.b, c.hkv, c.s, c.dh}, gen), g = Tensor::randn(q.shape(), gen);
    const Tensor mask = c.mask ? padding_mask(c, gen).to(DType::i64) : Tensor();
    const double scale = 0.3;
    // CPU oracle.
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({c.b, c.hq, c.t}), delta = Tensor::empty(lse.shape());
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    const int64_t* mp = mask.defined() ? mask.data<int64_t>() : nullptr;
    kernels::cpu::attention_forward<float>(out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(),
                                           v.data<float>(), mp, c.causal, scale, s,
                                           kernels::AttentionStrides::contiguous(s));
    kernels::cpu::attention_backward<float>(dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                            delta.data<float>(), g.data<float>(), q.data<float>(), k.data<float>(),
                                            v.data<float>(), lse.data<float>(), mp, c.causal, scale, s,
                                            kernels::AttentionStrides::contiguous(s));
    // GPU, outputs poisoned.
    const Tensor qg = q.to(kGpu), kg = k.to(kGpu), vg = v.to(kGpu), gg = g.to(kGpu);
    const Tensor maskg = mask.defined() ? mask.to(kGpu) : Tensor();
    const int64_t* mpg = maskg.defined() ? maskg.data<int64_t>() : nullptr;
    Tensor out_g = poisoned(q.shape()), lse_g = poisoned(lse.shape()), delta_g = poisoned(lse.shape());
    Tensor dq_g = poisoned(q.shape()), dk_g = poisoned(k.shape()), dv_g = poisoned(v.shape());
    kernels::cuda::attention_forward<float>(out_g.data<float>(), lse_g.data<float>(), qg.data<float>(),
                                            kg.data<float>(), vg.data<float>(), mpg, c.causal, scale, s,
                                            cuda::stream(0));
    kernels::cuda::attention_backward<float>(dq_g.data<float>(), dk_g.data<float>(), dv_g.data<float>(),
                                             delta_g.data<float>(), gg.data<float>(), qg.data<float>(),
                                             kg.data<float>(), vg.data<float>(), lse_g.data<float>(), mpg,
                                             c.causal, scale, s, cuda::stream(0));
    CHECK_REL(out_g.to(Device::cpu()), out, 1e-5);
    // lse holds -inf on fully masked rows: compare them exactly, the rest by norm.
    const std::vector<float> l_cpu = lse.to_vector<float>(), l_gpu = lse_g.to(Device::cpu()).to_vector<float>();
    for (size_t e = 0; e < l_cpu.size(); ++e) {
      if (std::isinf(l_cpu[e])) {
        CHECK(l_gpu[e] == l_cpu[e]);
      } else {
        CHECK(std::fabs(l_gpu[e] - l_cpu[e]) <= 1e-5f * (1 + std::fabs(l_cpu[e])));
      }
    }
    // With one visible key dq and dk are exactly 0 (softmax of one score is 1
    // whatever the score): judged against the norm of dv, their size without
    // that cancellation (inputs are N(0, 1)).
    const double floor = std::sqrt(static_cast<double>(dq.numel())) * test::rms(dv);
    CHECK_REL_FLOOR(dq_g.to(Device::cpu()), dq, floor, 1e-5);
    CHECK_REL_FLOOR(dk_g.to(Device::cpu()), dk, floor, 1e-5);
    CHECK_REL(dv_g.to(Device::cpu()), dv, 1e-5);
  }
}
#endif

namespace {

// The op on the CPU and on CUDA (inside an AutocastGuard(autocast) both),
// forward and the three input gradients.
void check_op_against_cpu(const Case& c, uint64_t seed, bool autocast, double tol) {
  INFO(c.b << "x" << c.hq << "/" << c.hkv << " T=" << c.t << " S=" << c.s << " Dh=" << c.dh
            << " causal=" << c.causal << " mask=" << c.mask << " autocast=" << autocast);
  Generator gen(seed);
  Tensor q = Tensor::randn({c.b, c.hq, c.t, c.dh}, gen), k = Tensor::randn({c.b, c.hkv, c.s, c.dh}, gen),
         v = Tensor::randn({c.b, c.hkv, c.s, c.dh}, gen);
  const Tensor mask = c.mask ? padding_mask(c, gen) : Tensor();
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  Tensor qg = q.detach().to(kGpu), kg = k.detach().to(kGpu), vg = v.detach().to(kGpu);
  for (Tensor* t : {&qg, &kg, &vg}) t->set_requires_grad(true);
  Tensor y, yg;
  {
    AutocastGuard guard(autocast);
    y = scaled_dot_product_attention(q, k, v, mask, c.causal);
    yg = scaled_dot_product_attention(qg, kg, vg, mask.defined() ? mask.to(kGpu) : Tensor(), c.causal);
  }
  CHECK_REL(yg.to(Device::cpu()), y, tol);
  const Tensor g = Tensor::randn(y.shape(), gen);
  y.backward(g);
  yg.backward(g.to(kGpu));
  const double floor = std::sqrt(static_cast<double>(q.numel())) * test::rms(v.grad());
  CHECK_REL_FLOOR(qg.grad().to(Device::cpu()), q.grad(), floor, tol);  // 0 with one key: see above
  CHECK_REL_FLOOR(kg.grad().to(Device::cpu()), k.grad(), floor, tol);
  CHECK_REL(vg.grad().to(Device::cpu()), v.grad(), tol);
}

// Long enough for CUDA's product form (core/ops/attention.cpp: T·S >= 64·64),
// grouped heads among them, key masks (rows that see no key: the masked
// branch) and causal with T > S; the CPU runs its fused kernel outside
// autocast and the product form inside.
const std::vector<Case> kProductCases = {
    {2, 4, 2, 80, 80, 32, true, false},  {1, 4, 4, 64, 100, 64, true, false}, {2, 2, 1, 70, 70, 16, false, false},
    {1, 8, 2, 128, 128, 64, true, false}, {1, 2, 2, 100, 60, 32, true, false}, {2, 4, 2, 80, 80, 32, true, true},
    {2, 2, 2, 64, 96, 16, false, true},
};

}  // namespace

TEST_CASE("cuda scaled_dot_product_attention matches the CPU forward and backward", "[cuda][attention]") {
  uint64_t seed = 400;
  for (const Case& c : kCases) check_op_against_cpu(c, seed++, false, 1e-5);
}

TEST_CASE("cuda scaled_dot_product_attention's product form matches the CPU, in f32 and under autocast",
          "[cuda][attention]") {
  uint64_t seed = 450;
  for (const Case& c : kProductCases) check_op_against_cpu(c, seed++, false, 1e-5);
  // Under autocast both devices run the product form, whatever the length
  // (rows that see no key among kCases), rounding the same operands to bf16
  // and accumulating in f32 in their own orders.
  for (const Case& c : kProductCases) check_op_against_cpu(c, seed++, true, 1e-4);
  for (const Case& c : kCases) check_op_against_cpu(c, seed++, true, 1e-4);
}

TEST_CASE("cuda scaled_dot_product_attention rejects head dims over 128", "[cuda][attention]") {
  const Tensor q = Tensor::zeros({1, 1, 2, 129}, DType::f32, kGpu);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, q, q),
                      Catch::Contains("head dim 129 exceeds the CUDA kernels' maximum of 128"));
}
