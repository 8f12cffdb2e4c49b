// CUDA linear_gelu against the CPU oracle: every kernel version at many shapes
// with its outputs poisoned (NaN) before the run, so an element a kernel fails
// to write fails the comparison; then the op, forward and backward.
//
// Tolerances. v1 (exact f32 SIMT): relative error in norm 1e-5 against the
// CPU, like every f32 op. The tensor-core versions round their inputs, so
// they are held to bounds that follow from the input precision, measured per
// element against the magnitude the sum is made of,
//   e = max_ij |got_ij - want_ij| / mag_ij,   mag_ij = Σ_k |x_ik·w_jk| + |b_j|,
// which stays meaningful where z_ij happens to be near 0:
//   * the same inputs on the CPU (rounded to TF32 as __float_to_tf32 does, or
//     the bf16 values themselves): only the f32 accumulation order differs,
//     e <= 2e-4 (1e-4 for bf16; TF32 allows for a tie rounded the other way);
//   * the exact f32 product: rounding x and w to p-bit significands (unit
//     roundoff u = 2^-p: TF32 p = 11, u = 4.9e-4; bf16 p = 8, u = 3.9e-3)
//     changes each product by at most 2u relative, so |Δz| <= 2u·mag, and
//     |Δy| <= 1.13·|Δz| (max |GELU'| = 1.13), plus u·|y| when y is stored in
//     bf16: e <= 1.5e-3 (z) and 2e-3 (y) for TF32, 1.5e-2 for bf16 y.
#include <catch2/catch.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/fused_linear.h"
#include "tests/support/check.h"

using namespace vlmc;
using kernels::GeluKind;
#if VLMC_WITH_CUDA  // the kernel-level cases call kernels::cuda directly: CUDA builds only
using kernels::cuda::LinearGeluVersion;
#endif

namespace {

const Device kGpu = Device::cuda(0);

Tensor poisoned(const Shape& shape, DType dtype = DType::f32) {
  return Tensor::full(shape, NAN, dtype, kGpu);
}

// f32 rounded to TF32 as the tensor cores take it: 10 mantissa bits, ties away from zero.
[[maybe_unused]] float round_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u = std::bit_cast<uint32_t>(v);
  u = (u + 0x1000u) & ~0x1fffu;
  return std::bit_cast<float>(u);
}

[[maybe_unused]] Tensor map_f32(const Tensor& t, float (*f)(float)) {
  std::vector<float> v = t.to_vector<float>();
  for (float& e : v) e = f(e);
  return Tensor::from_vector(v, t.shape());
}

// Σ_k |x_ik·w_jk| + |b_j|, in double: the per-element scale of CHECK_SCALED
// (tests/support/check.h), which fails on any non-finite value (a NaN the
// kernel left unwritten).
Tensor magnitude(const Tensor& x, const Tensor& w, const Tensor& b) {
  const auto a = [](const Tensor& t) { return t.defined() ? abs(t.to(DType::f64)) : Tensor(); };
  return linear(a(x), a(w), a(b));
}

struct Shape3 {
  int64_t m, k, n;
};

// Odd sizes on every axis, 1-sized axes, exact tile multiples, K that allows
// and that forbids 16-byte loads, and the benchmark's shape.
// (M = 1 and N = 1 come with enough outputs on the other axis for a norm;
// K = 1 is exact on both devices.)
const std::vector<Shape3> kShapes = {
    {1, 1, 1},      {3, 1, 7},      {1, 1024, 300}, {300, 1024, 1}, {1, 8, 4096},
    {7, 13, 9},     {127, 33, 129}, {128, 32, 128}, {129, 31, 257}, {300, 64, 520},
    {1000, 1000, 3}, {2304, 1024, 4096},
};

struct Inputs {
  Tensor x, w, b;  // f32 on the CPU
};

[[maybe_unused]] Inputs make_inputs(const Shape3& s, bool bias, uint64_t seed) {
  Generator gen(seed);
  Inputs in;
  in.x = Tensor::randn({s.m, s.k}, gen);
  // Scaled so that z has unit variance: GELU sees both its curved middle and its tails.
  in.w = Tensor::randn({s.n, s.k}, gen) * (1.0 / std::sqrt(static_cast<double>(s.k)));
  if (bias) in.b = Tensor::randn({s.n}, gen);
  return in;
}

struct Result {
  Tensor y, z;  // on the CPU, f32
};

[[maybe_unused]] Result cpu_oracle(const Inputs& in, GeluKind kind) {
  const int64_t m = in.x.size(0), k = in.x.size(1), n = in.w.size(0);
  Tensor y = Tensor::empty({m, n}), z = Tensor::empty({m, n});
  kernels::cpu::linear_gelu<float>(y.data<float>(), z.data<float>(), in.x.data<float>(),
                                   in.w.data<float>(), in.b.defined() ? in.b.data<float>() : nullptr,
                                   m, n, k, kind);
  return {y, z};
}

#if VLMC_WITH_CUDA
Result run_f32(LinearGeluVersion version, const Inputs& in, GeluKind kind) {
  const int64_t m = in.x.size(0), k = in.x.size(1), n = in.w.size(0);
  const Tensor x = in.x.to(kGpu), w = in.w.to(kGpu);
  const Tensor b = in.b.defined() ? in.b.to(kGpu) : Tensor();
  Tensor y = poisoned({m, n}), z = poisoned({m, n});
  kernels::cuda::linear_gelu_f32(version, y.data<float>(), z.data<float>(), x.data<float>(),
                                 w.data<float>(), b.defined() ? b.data<float>() : nullptr, m, n, k,
                                 kind, cuda::stream(0));
  return {y.to(Device::cpu()), z.to(Device::cpu())};
}

const uint16_t* bits(const Tensor& t) {
  return t.defined() ? static_cast<const uint16_t*>(t.data_ptr()) : nullptr;
}

// v3 on the inputs rounded to bf16; y in y_dtype, both returned as f32.
Result run_bf16(const Inputs& in, GeluKind kind, DType y_dtype) {
  const int64_t m = in.x.size(0), k = in.x.size(1), n = in.w.size(0);
  const Tensor x = in.x.to(kGpu, DType::bf16), w = in.w.to(kGpu, DType::bf16);
  const Tensor b = in.b.defined() ? in.b.to(kGpu, DType::bf16) : Tensor();
  Tensor y = poisoned({m, n}, y_dtype), z = poisoned({m, n});
  kernels::cuda::linear_gelu_bf16(y.data_ptr(), y_dtype, z.data<float>(), bits(x), bits(w), bits(b),
                                  m, n, k, kind, cuda::stream(0));
  return {y.to(Device::cpu(), DType::f32), z.to(Device::cpu())};
}

Inputs rounded_to_bf16(const Inputs& in) {
  auto round = [](const Tensor& t) { return t.defined() ? t.to(DType::bf16).to(DType::f32) : Tensor(); };
  return {round(in.x), round(in.w), round(in.b)};
}

#endif  // VLMC_WITH_CUDA
}  // namespace

#if VLMC_WITH_CUDA  // kernel-level cases; the op-level cases below run in any build
TEST_CASE("cuda linear_gelu v1 (SIMT f32) writes every output and matches the CPU", "[cuda][fused_linear]") {
  uint64_t seed = 1;
  for (const Shape3& s : kShapes) {
    for (GeluKind kind : {GeluKind::erf, GeluKind::tanh}) {
      for (bool bias : {true, false}) {
        INFO("M=" << s.m << " K=" << s.k << " N=" << s.n << " kind=" << int(kind) << " bias=" << bias);
        const Inputs in = make_inputs(s, bias, seed++);
        const Result want = cpu_oracle(in, kind);
        const Result got = run_f32(LinearGeluVersion::v1_simt, in, kind);
        CHECK_REL(got.z, want.z, 1e-5);
        CHECK_REL(got.y, want.y, 1e-5);
      }
    }
  }
}

TEST_CASE("cuda linear_gelu v2 (TF32 tensor cores) writes every output and matches the CPU", "[cuda][fused_linear]") {
  uint64_t seed = 100;
  for (const Shape3& s : kShapes) {
    for (GeluKind kind : {GeluKind::erf, GeluKind::tanh}) {
      INFO("M=" << s.m << " K=" << s.k << " N=" << s.n << " kind=" << int(kind));
      const Inputs in = make_inputs(s, true, seed++);
      const Result got = run_f32(LinearGeluVersion::v2_tf32, in, kind);
      const Tensor mag = magnitude(in.x, in.w, in.b);
      // Against the CPU on TF32-rounded inputs: only the accumulation differs.
      const Inputs tf32{map_f32(in.x, round_tf32), map_f32(in.w, round_tf32), in.b};
      const Result same_inputs = cpu_oracle(tf32, kind);
      CHECK_SCALED(got.z, same_inputs.z, mag, 2e-4);
      CHECK_SCALED(got.y, same_inputs.y, mag, 2e-4);
      // Against the exact f32 product: TF32's input rounding.
      const Result exact = cpu_oracle(in, kind);
      CHECK_SCALED(got.z, exact.z, mag, 1.5e-3);
      CHECK_SCALED(got.y, exact.y, mag, 2e-3);
    }
  }
}

TEST_CASE("cuda linear_gelu v3 (bf16 tensor cores) writes every output and matches the CPU", "[cuda][fused_linear]") {
  uint64_t seed = 200;
  for (const Shape3& s : kShapes) {
    for (GeluKind kind : {GeluKind::erf, GeluKind::tanh}) {
      for (bool bias : {true, false}) {
        INFO("M=" << s.m << " K=" << s.k << " N=" << s.n << " kind=" << int(kind) << " bias=" << bias);
        const Inputs in = make_inputs(s, bias, seed++);
        const Tensor mag = magnitude(in.x, in.w, in.b);
        const Result same_inputs = cpu_oracle(rounded_to_bf16(in), kind);
        const Result f32_out = run_bf16(in, kind, DType::f32);
        CHECK_SCALED(f32_out.z, same_inputs.z, mag, 1e-4);
        CHECK_SCALED(f32_out.y, same_inputs.y, mag, 1e-4);
        // y rounded to bf16 on the way out: u = 2^-8 of |y| <= mag more.
        const Result bf16_out = run_bf16(in, kind, DType::bf16);
        CHECK_SCALED(bf16_out.z, same_inputs.z, mag, 1e-4);
        CHECK_SCALED(bf16_out.y, same_inputs.y, mag, 4.5e-3);
        const Result exact = cpu_oracle(in, kind);
        CHECK_SCALED(bf16_out.y, exact.y, mag, 1.5e-2);
      }
    }
  }
}

TEST_CASE("cuda linear_gelu tensor-core versions take unaligned rows (scalar loads)", "[cuda][fused_linear]") {
  // K = 64 would allow 16-byte loads, but x starts one element into its buffer.
  const Shape3 s{70, 64, 90};
  const Inputs in = make_inputs(s, true, 300);
  const Result want = cpu_oracle(in, GeluKind::erf);
  const Tensor mag = magnitude(in.x, in.w, in.b);
  const Tensor padded = cat({Tensor::zeros({1}), in.x.reshape({-1})}, 0).to(kGpu);
  const Tensor w = in.w.to(kGpu), b = in.b.to(kGpu);
  Tensor y = poisoned({s.m, s.n});
  kernels::cuda::linear_gelu_f32(LinearGeluVersion::v2_tf32, y.data<float>(), nullptr,
                                 padded.data<float>() + 1, w.data<float>(), b.data<float>(), s.m, s.n,
                                 s.k, GeluKind::erf, cuda::stream(0));
  CHECK_SCALED(y.to(Device::cpu()), want.y, mag, 2e-3);
  const Tensor padded16 = cat({Tensor::zeros({1}), in.x.reshape({-1})}, 0).to(kGpu, DType::bf16);
  const Tensor w16 = in.w.to(kGpu, DType::bf16), b16 = in.b.to(kGpu, DType::bf16);
  Tensor y32 = poisoned({s.m, s.n});
  kernels::cuda::linear_gelu_bf16(y32.data_ptr(), DType::f32, nullptr, bits(padded16) + 1, bits(w16),
                                  bits(b16), s.m, s.n, s.k, GeluKind::erf, cuda::stream(0));
  CHECK_SCALED(y32.to(Device::cpu()), cpu_oracle(rounded_to_bf16(in), GeluKind::erf).y, mag, 1e-4);
}

TEST_CASE("cuda linear_gelu backward kernel writes dz and db and matches the CPU", "[cuda][fused_linear]") {
  uint64_t seed = 400;
  for (auto [m, n] : std::vector<std::array<int64_t, 2>>{{1, 1}, {1, 4096}, {5000, 1}, {7, 9}, {33, 65}, {2304, 4096}, {0, 17}}) {
    for (GeluKind kind : {GeluKind::erf, GeluKind::tanh}) {
      INFO("M=" << m << " N=" << n << " kind=" << int(kind));
      Generator gen(seed++);
      const Tensor dy = Tensor::randn({m, n}, gen), z = Tensor::randn({m, n}, gen) * 3.0;
      Tensor dz_cpu = Tensor::empty({m, n}), db_cpu = Tensor::empty({n});
      kernels::cpu::linear_gelu_backward<float>(dz_cpu.data<float>(), db_cpu.data<float>(), dy.data<float>(),
                                                z.data<float>(), m, n, kind);
      const Tensor dy_d = dy.to(kGpu), z_d = z.to(kGpu);
      Tensor dz = poisoned({m, n}), db = poisoned({n});
      kernels::cuda::linear_gelu_backward<float>(dz.data<float>(), db.data<float>(), dy_d.data<float>(),
                                                 z_d.data<float>(), m, n, kind, cuda::stream(0));
      CHECK_REL(dz.to(Device::cpu()), dz_cpu, 1e-5);
      CHECK_REL(db.to(Device::cpu()), db_cpu, 1e-5);
      // Without the bias gradient (the elementwise kernel).
      Tensor dz_only = poisoned({m, n});
      kernels::cuda::linear_gelu_backward<float>(dz_only.data<float>(), nullptr, dy_d.data<float>(),
                                                 z_d.data<float>(), m, n, kind, cuda::stream(0));
      CHECK_REL(dz_only.to(Device::cpu()), dz_cpu, 1e-5);
    }
  }
}

#endif  // VLMC_WITH_CUDA

TEST_CASE("cuda linear_gelu op forward and backward match the CPU", "[cuda][fused_linear]") {
  uint64_t seed = 500;
  for (const Shape& x_shape : {Shape{1, 1}, Shape{7, 13}, Shape{2, 3, 10}, Shape{4, 576, 64}, Shape{129, 257}}) {
    for (GeluApprox approx : {GeluApprox::none, GeluApprox::tanh}) {
      INFO("x " << shape_str(x_shape) << " approx=" << int(approx));
      const int64_t k = x_shape.back(), n = 33;
      Generator gen(seed++);
      Tensor x = Tensor::randn(x_shape, gen), w = Tensor::randn({n, k}, gen) * 0.3, b = Tensor::randn({n}, gen);
      Tensor xg = x.to(kGpu), wg = w.to(kGpu), bg = b.to(kGpu);
      for (Tensor* t : {&x, &w, &b, &xg, &wg, &bg}) t->set_requires_grad(true);
      const Tensor y = linear_gelu(x, w, b, approx);
      {  // freed NaN blocks are what the caching allocator hands out next
        const Tensor p1 = poisoned(y.shape()), p2 = poisoned(y.shape());
      }
      const Tensor yg = linear_gelu(xg, wg, bg, approx);
      CHECK_REL(yg.to(Device::cpu()), y, 1e-5);
      const Tensor g = Tensor::randn(y.shape(), gen);
      y.backward(g);
      yg.backward(g.to(kGpu));
      CHECK_REL(xg.grad().to(Device::cpu()), x.grad(), 1e-5);
      CHECK_REL(wg.grad().to(Device::cpu()), w.grad(), 1e-5);
      CHECK_REL(bg.grad().to(Device::cpu()), b.grad(), 1e-5);
    }
  }
}

TEST_CASE("cuda linear_gelu op in f64 and in bf16 (forward only)", "[cuda][fused_linear]") {
  Generator gen(600);
  const Tensor x = Tensor::randn({37, 45}, gen, DType::f64), w = Tensor::randn({21, 45}, gen, DType::f64);
  const Tensor b = Tensor::randn({21}, gen, DType::f64);
  CHECK_REL(linear_gelu(x.to(kGpu), w.to(kGpu), b.to(kGpu)).to(Device::cpu()), linear_gelu(x, w, b), 1e-12);
  // bf16: y is bf16, against the CPU on the same bf16 values in f32.
  const Tensor x16 = x.to(kGpu, DType::bf16), w16 = w.to(kGpu, DType::bf16), b16 = b.to(kGpu, DType::bf16);
  const Tensor y16 = linear_gelu(x16, w16, b16);
  CHECK(y16.dtype() == DType::bf16);
  const Tensor want = linear_gelu(x16.to(Device::cpu(), DType::f32), w16.to(Device::cpu(), DType::f32),
                                  b16.to(Device::cpu(), DType::f32));
  CHECK_SCALED(y16.to(Device::cpu(), DType::f32), want, magnitude(x, w, b), 4.5e-3);
  Tensor w_train = w16.clone();
  w_train.set_requires_grad(true);
  REQUIRE_THROWS_WITH(linear_gelu(x16, w_train, b16), Catch::Contains("bf16 has no backward"));
}
