// Element types and the half-precision conversions every layer shares.
//
// This is the one header below core/ that names dtypes: kernels take raw
// pointers plus a DType where they must handle several, and core/ re-exports
// everything here as vlmc::DType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define VLMC_HOST_DEVICE __host__ __device__
#else
#define VLMC_HOST_DEVICE
#endif

namespace vlmc {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

inline constexpr DType kAllDTypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::u8};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}

// ---- bf16: the top 16 bits of an IEEE f32, rounded to nearest even. ----

VLMC_HOST_DEVICE inline float bf16_bits_to_float(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

VLMC_HOST_DEVICE inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

// f rounded to bf16 (nearest even) in the form a product multiplies it: R =
// uint16_t gives the bf16 bits (for a bf16 kernel), R = float the f32 holding
// the same value (for the f32 GEMM, with no widening afterwards).
template <typename R>
VLMC_HOST_DEVICE inline R rounded_to_bf16(float f) {
  if constexpr (std::is_same_v<R, uint16_t>) {
    return float_to_bf16_bits(f);
  } else {
    return bf16_bits_to_float(float_to_bf16_bits(f));
  }
}

// ---- f16: IEEE binary16 (1 sign, 5 exponent, 10 mantissa bits). ----

VLMC_HOST_DEVICE inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    u = sign;  // signed zero
  } else {
    // Subnormal half: normalise the mantissa into an f32 normal.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    u = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

VLMC_HOST_DEVICE inline uint16_t float_to_f16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs < 0x33000001u) return sign;             // below half the smallest subnormal: zero
  const int32_t exp = static_cast<int32_t>(abs >> 23);
  uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  if (exp < 113) {
    // Result is subnormal in f16: shift the implicit-one mantissa into place.
    const int shift = 126 - exp;  // 14 .. 24
    const uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t r = mant >> shift;
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = ((static_cast<uint32_t>(exp - 112)) << 10) | ((mant >> 13) & 0x3ffu);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // may carry into the exponent: fine
  return sign | static_cast<uint16_t>(r);
}

}  // namespace vlmc
