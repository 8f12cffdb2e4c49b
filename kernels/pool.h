// 2D adaptive average pooling over channels-last token grids, the layout
// connectors hold: x [B, H, W, C] -> y [B, h, w, C], with PyTorch's windows
// rows [floor(i*H/h), ceil((i+1)*H/h)) and the same for columns, for any H, W,
// h, w (also non-divisible ones and h > H).
//
// Both directions are gathers: each output (forward) or input (backward)
// element is written by exactly one thread, so there are no atomics and the
// result does not depend on the thread count.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

VLMC_HOST_DEVICE inline int64_t pool_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
VLMC_HOST_DEVICE inline int64_t pool_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}
// The output windows that contain input index i: [first, last].
VLMC_HOST_DEVICE inline int64_t pool_first_window(int64_t i, int64_t in, int64_t out) {
  return (i * out) / in;
}
VLMC_HOST_DEVICE inline int64_t pool_last_window(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * out + in - 1) / in - 1;
}

struct PoolShape {
  int64_t batch, in_h, in_w, out_h, out_w, channels;
};

namespace cpu {
template <typename T>
void adaptive_avg_pool2d(T* y, const T* x, const PoolShape& s);
template <typename T>
void adaptive_avg_pool2d_backward(T* grad_x, const T* grad_y, const PoolShape& s);
}  // namespace cpu

namespace cuda {
template <typename T>
void adaptive_avg_pool2d(T* y, const T* x, const PoolShape& s, cudaStream_t stream);
template <typename T>
void adaptive_avg_pool2d_backward(T* grad_x, const T* grad_y, const PoolShape& s, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
