// vlmc::DType and friends live in kernels/dtype.h (the lowest layer that needs
// them); this header adds the host-side type mapping core/ uses.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/dtype.h"

namespace vlmc {

struct BFloat16 { uint16_t bits; };
struct Float16 { uint16_t bits; };

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, BFloat16>) return DType::bf16;
  else if constexpr (std::is_same_v<T, Float16>) return DType::f16;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::i64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::u8;
  else static_assert(sizeof(T) == 0, "no vlmc dtype for this C++ type");
}

}  // namespace vlmc
