// Warp- and block-wide reductions for the row kernels of kernels/cuda/
// (softmax, norms, cross entropy): one block per row, every thread of the
// block receives the row's total. The tree order is fixed for a given block
// size, so results are designed to be the same from run to run (not checked on
// a GPU).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vlmc::kernels::cuda {

// Math by element type (expf/exp, ...), so templates never promote f32 to f64.
__device__ inline float exp_of(float x) { return expf(x); }
__device__ inline double exp_of(double x) { return exp(x); }
__device__ inline float log_of(float x) { return logf(x); }
__device__ inline double log_of(double x) { return log(x); }
__device__ inline float rsqrt_of(float x) { return rsqrtf(x); }
__device__ inline double rsqrt_of(double x) { return rsqrt(x); }

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ inline T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// blockDim.x must be a multiple of 32 (at most 1024); scratch holds 32 values.
// Safe to call repeatedly with the same scratch: the leading barrier keeps a
// call from overwriting partials a slower warp is still reading.
template <typename T, typename Op>
__device__ inline T block_reduce(T v, T* scratch, T identity, Op warp_op) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  v = warp_op(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : identity;
  return warp_op(v);  // every warp forms the same total
}

template <typename T>
__device__ inline T block_sum(T v, T* scratch) {
  return block_reduce(v, scratch, T(0), [](T x) { return warp_sum(x); });
}

template <typename T>
__device__ inline T block_max(T v, T* scratch) {
  return block_reduce(v, scratch, T(-INFINITY), [](T x) { return warp_max(x); });
}

// Threads per block for rows of n elements: a multiple of 32, at most 256.
inline int row_block(int64_t n) {
  int threads = 32;
  while (threads < 256 && threads < n) threads *= 2;
  return threads;
}

// Blocks for one block per row with a grid-stride loop over rows.
inline unsigned row_grid(int64_t rows) {
  constexpr int64_t kCap = 65535LL * 8;
  return static_cast<unsigned>(rows < 1 ? 1 : (rows < kCap ? rows : kCap));
}

}  // namespace vlmc::kernels::cuda
