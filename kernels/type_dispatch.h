// Dtype dispatch for dtype-generic kernels (host side, CPU and CUDA files).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"

namespace vlmc::kernels {

// Calls f(U{}) with an unsigned integer U of the dtype's width: for kernels
// that only move elements (gather, select, copy), one instantiation per width.
template <typename F>
void by_width(DType dtype, F&& f) {
  switch (dtype_size(dtype)) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    case 8: f(uint64_t{}); return;
  }
  throw std::invalid_argument("kernels: unsupported element width");
}

// Calls f(T{}) with T = float or double.
template <typename F>
void by_float(const char* op, DType dtype, F&& f) {
  if (dtype == DType::f32) return f(float{});
  if (dtype == DType::f64) return f(double{});
  throw std::invalid_argument(std::string(op) + ": dtype " + dtype_name(dtype) +
                              " is not supported (f32 or f64)");
}

}  // namespace vlmc::kernels
