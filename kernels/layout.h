// The strided layout kernels accept: shape and strides (in elements) of an
// operand, passed by value so that CUDA kernels receive it as an argument.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace vlmc::kernels {

inline constexpr int kMaxDims = 8;

struct Layout {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  // Element offset of the linear (row-major) index i within this layout.
  VLMC_HOST_DEVICE int64_t offset_of(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t s = shape[d];
      off += (i % s) * strides[d];
      i /= s;
    }
    return off;
  }

  VLMC_HOST_DEVICE int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }

  VLMC_HOST_DEVICE bool is_contiguous() const {
    int64_t expected = 1;
    for (int d = ndim - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      expected *= shape[d];
    }
    return true;
  }
};

}  // namespace vlmc::kernels
