// Fast f32 erf, exp and GELU for CPU kernels: branch-free polynomials on
// std::fma that GCC vectorizes with AVX2 (8 lanes). std::erf is a call of
// ~7 ns per element, which would dominate any GELU pass; these cost about two
// cycles per element. Largest error against the exact functions: erf 9e-8
// (absolute), exp 9e-8 (relative), tested over dense sweeps in
// tests/kernels/test_fused_linear.cpp. f64 code keeps std::erf/std::exp.
//
// Used by the fused linear+GELU epilogue and by the f32 gelu, silu and
// sigmoid ops.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "kernels/elementwise.h"

namespace vlmc::kernels::cpu::fast {

// ---- f32 erf and exp -----------------------------------------------------------
//
// erf: two polynomials, both evaluated for every lane and one selected (no
// branch, so the loop vectorizes). Coefficients are minimax fits (Lawson's
// iteration on a Chebyshev basis, double precision, rounded to f32); the
// derivation is in docs/kernels/fused_linear.md. With f32 arithmetic on fma
// the largest error against the exact erf is 9e-8 (tested in
// tests/kernels/test_fused_linear.cpp over a dense sweep).
//   |x| < 1.1:   erf(x) = x·(c0 + R(x²)), c0 split as kErfC0 + R's constant
//                term so that the leading product is rounded once (fma).
//   1.1..3.92:   erf(x) = P(|x| - 2.51), degree 12.
//   >= 3.92:     1 - erf(3.92) = 3e-8 rounds to 1 in f32: |x| is clamped.
constexpr float kErfSplit = 1.1f;
constexpr float kErfClamp = 3.92f;
constexpr float kErfMid = 2.51f;
constexpr float kErfC0 = 1.12837911f;  // 2/√π rounded to f32; R[0] carries the rest
constexpr float kErfR[7] = {5.64938105e-08f,  -0.376126051f,    0.112833343f,     -0.0268429201f,
                            0.00516718952f,   -0.000782270683f, 7.23421035e-05f};
constexpr float kErfP[13] = {0.999614298f,     0.00207163976f,   -0.00520107197f,  0.00801441539f,
                             -0.00831494108f,  0.00593622494f,   -0.00277617294f,  0.000591149961f,
                             0.000260390516f,  -0.000271940138f, 6.47331835e-05f,  1.98102516e-05f,
                             -9.22491017e-06f};

// c[0] + t·(c[1] + t·(...)), written out at compile time: a loop here would
// leave an inner loop in the caller's loop body and stop GCC vectorizing it.
template <int I = 0, int N>
inline float horner(const float (&c)[N], float t) {
  if constexpr (I == N - 1) {
    return c[I];
  } else {
    return std::fma(horner<I + 1>(c, t), t, c[I]);
  }
}

// c ? a : b on the bits. Both operands are computed anyway; a plain ?: on a
// float comparison is kept as a branch (GCC will not speculate floating-point
// operations that might trap), which stops the loop from vectorizing.
inline float select(bool c, float a, float b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & mask) |
                              (std::bit_cast<uint32_t>(b) & ~mask));
}

inline float erf_f32(float x) {
  const float a = std::fabs(x);
  const float t = a * a;
  const float small = std::fma(a, kErfC0, a * horner(kErfR, t));
  // The clamps are selects too (std::min here also blocks vectorization); a
  // NaN fails every comparison and so passes through.
  const float p = horner(kErfP, select(a > kErfClamp, kErfClamp, a) - kErfMid);
  const float large = select(p > 1.0f, 1.0f, p);
  return std::copysign(select(a < kErfSplit, small, large), x);
}

// exp: y = n·ln2 + r with |r| <= ln2/2 (n by the round-to-nearest magic
// constant, ln2 split in two so n·ln2_hi is exact), exp(r) by a degree-6
// minimax polynomial, 2^n put into the exponent bits. Inputs are clamped to
// [-87.3, 88.3] so that 2^n stays a normal f32 (n in [-126, 127]).
constexpr float kExpP[7] = {1.0f,          1.0f,         0.5f,         0.166664153f,
                            0.041666083f,  0.00837512873f, 0.00139560469f};
constexpr float kLog2e = 1.44269504f;
constexpr float kLn2Hi = 0.693145751953125f;  // 16 significant bits
constexpr float kLn2Lo = 1.42860682e-06f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer

inline float exp_f32(float y) {
  // The clamp by selects (std::min/std::max would keep loops over exp_f32
  // from vectorizing); NaN passes through both, as through std::min/max.
  y = select(y < -87.3f, -87.3f, y);
  y = select(y > 88.3f, 88.3f, y);
  const float n = std::fma(y, kLog2e, kRoundMagic) - kRoundMagic;
  float r = std::fma(-n, kLn2Hi, y);
  r = std::fma(-n, kLn2Lo, r);
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return horner(kExpP, r) * scale;
}

// exp_f32, and 0 where exp(y) is below f32's normal range (y < -87.3, where exp_f32
// clamps to 1.2e-38): softmax([-1000, 0]) gives the exact 0 that libm's expf, and
// PyTorch, give. For normalised exps (softmax, cross entropy).
inline float exp_f32_or_zero(float y) { return select(y < -87.3f, 0.0f, exp_f32(y)); }

// sigmoid by the exp of -|x|, which never overflows: e = exp(-|x|) in [0, 1],
// 1/(1+e) for x >= 0 and e/(1+e) below. Beyond |x| = 87.3, where exp_f32
// would clamp, e is 0 (sigmoid(-1000) = 0 exactly, as in f32 libm). NaN in,
// NaN out.
// Branch-free (selects), so that loops over it vectorize.
inline float sigmoid_f32(float x) {
  const float a = std::fabs(x);
  const float e = select(a > 87.3f, 0.0f, exp_f32(-a));  // exp(-|x|)
  const float inv = 1.0f / (1.0f + e);
  return select(x >= 0.0f, inv, e * inv);
}

constexpr float kSqrt1_2f = static_cast<float>(kSqrt1_2);
constexpr float kInvSqrt2Pif = static_cast<float>(kInvSqrt2Pi);
constexpr float kTwoSqrt2OverPif = static_cast<float>(2 * kSqrt2OverPi);
constexpr float kGeluCubicf = static_cast<float>(kGeluCubic);

// ---- GELU and its derivative ---------------------------------------------------------
//
// f32, exact:  0.5·z·(1 + erf(z/√2)),  GELU' = Φ(z) + z·φ(z).
// f32, tanh:   0.5·z·(1 + tanh(u)) = z·sigmoid(2u) = z / (1 + exp(-2u)),
//              u = √(2/π)·(z + 0.044715·z³): one exp instead of a tanh, and no
//              cancellation in 1 + tanh(u) for negative z.
//              GELU' = s + z·s·(1 - s)·2u', s = sigmoid(2u), 1 - s = s·exp(-2u).
template <bool kTanh>
inline float gelu_value(float z) {
  if constexpr (!kTanh) {
    return 0.5f * z * (1.0f + erf_f32(z * kSqrt1_2f));
  } else {
    const float v = kTwoSqrt2OverPif * std::fma(kGeluCubicf * z, z * z, z);
    return z / (1.0f + exp_f32(-v));
  }
}

template <bool kTanh>
inline float gelu_grad(float z) {
  if constexpr (!kTanh) {
    const float cdf = 0.5f * (1.0f + erf_f32(z * kSqrt1_2f));
    const float pdf = kInvSqrt2Pif * exp_f32(-0.5f * z * z);
    return std::fma(z, pdf, cdf);
  } else {
    const float z2 = z * z;
    const float v = kTwoSqrt2OverPif * std::fma(kGeluCubicf * z, z2, z);
    const float dv = kTwoSqrt2OverPif * std::fma(3.0f * kGeluCubicf, z2, 1.0f);
    const float e = exp_f32(-v);
    const float s = 1.0f / (1.0f + e);
    return std::fma(z * s * (s * e), dv, s);
  }
}

}  // namespace vlmc::kernels::cpu::fast
