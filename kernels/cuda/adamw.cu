// CUDA multi-tensor AdamW and gradient norm (see kernels/adamw.h).
//
// Multi-tensor apply, as PyTorch's _foreach kernels and apex do it: the host
// packs the metadata of up to N tensors (pointers, sizes, per-tensor scalars)
// into a struct passed BY VALUE as a kernel argument, together with the prefix
// sums of the tensors' chunk counts. Each tensor is cut into chunks of kChunk
// elements; a block takes chunks in a grid-stride loop, finds the chunk's
// tensor in the prefix sums, and its threads stride over the chunk. A list
// longer than N tensors takes several launches. No allocation (the metadata
// travels in the launch itself), no synchronisation.
//
// The norm: each of a fixed kSquareSumBlocks blocks per launch accumulates its
// chunks in double, reduces its threads by a fixed shared-memory tree and
// writes one partial into the caller's scratch; a one-block kernel then adds
// the partials in a fixed order. The partition never depends on the device, so
// the result is designed to have the same bits on every run (no atomics; on an
// H200, 2026-12-04, a second call on the same inputs gave the same bits,
// tests/cuda/test_cuda_optim.cpp; separate runs not compared).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests
//   build/tests/vlmc_cuda_tests "[optim]"          # this family against the CPU; also "[op_cases]"
#include <algorithm>

#include "kernels/adamw.h"
#include "kernels/cuda/check.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int64_t kChunk = 1 << 16;  // elements of one block work item
constexpr int kBlock = 256;          // threads per block (a power of two: the tree below)
constexpr unsigned kMaxAdamWBlocks = 4096;

template <typename Item, int N>
struct TensorList {
  Item t[N];
  int64_t chunk_start[N + 1];  // chunk_start[i]: first chunk of tensor i; [count]: the total
  int count;
};

using AdamWList = TensorList<AdamWTensor<float>, kAdamWTensorsPerLaunch>;
using SquareSumList = TensorList<SquareSumTensor<float>, kSquareSumTensorsPerLaunch>;

int64_t chunks_of(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

// Index of the tensor chunk c belongs to (c < chunk_start[count]).
template <typename List>
__device__ int tensor_of(const List& list, int64_t c) {
  int i = 0;
  while (c >= list.chunk_start[i + 1]) ++i;
  return i;
}

// __grid_constant__: the list is read in place from the argument space, not
// copied per thread.
__global__ void adamw_kernel(const __grid_constant__ AdamWList list, const float* grad_scale) {
  const bool scaled = grad_scale != nullptr;
  const float scale = scaled ? *grad_scale : 1.0f;
  const int64_t chunks = list.chunk_start[list.count];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int i = tensor_of(list, c);
    const AdamWTensor<float>& t = list.t[i];
    const int64_t begin = (c - list.chunk_start[i]) * kChunk;
    const int64_t end = min(begin + kChunk, t.numel);
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      float p = t.param[k], m = t.exp_avg[k], v = t.exp_avg_sq[k];
      const float g = scaled ? t.grad[k] * scale : t.grad[k];
      adamw_element(p, m, v, g, t);
      t.param[k] = p;
      t.exp_avg[k] = m;
      t.exp_avg_sq[k] = v;
    }
  }
}

// Sums kBlock doubles of shared memory into s[0] by a fixed tree.
__device__ void block_tree_sum(double* s) {
  for (int width = kBlock / 2; width > 0; width /= 2) {
    __syncthreads();
    if (threadIdx.x < width) s[threadIdx.x] += s[threadIdx.x + width];
  }
  __syncthreads();
}

// One partial per block: partials[blockIdx.x] (gridDim.x == kSquareSumBlocks).
__global__ void sum_squares_kernel(const __grid_constant__ SquareSumList list, double* partials) {
  __shared__ double s[kBlock];
  const int64_t chunks = list.chunk_start[list.count];
  double acc = 0;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int i = tensor_of(list, c);
    const SquareSumTensor<float>& t = list.t[i];
    const int64_t begin = (c - list.chunk_start[i]) * kChunk;
    const int64_t end = min(begin + kChunk, t.numel);
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const double x = static_cast<double>(t.data[k]);
      acc += x * x;
    }
  }
  s[threadIdx.x] = acc;
  block_tree_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}

// One block: total_sq = the sum of n partials, each thread adding a fixed strided set.
__global__ void sum_partials_kernel(float* total_sq, const double* partials, int64_t n) {
  __shared__ double s[kBlock];
  double acc = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) acc += partials[k];
  s[threadIdx.x] = acc;
  block_tree_sum(s);
  if (threadIdx.x == 0) *total_sq = static_cast<float>(s[0]);
}

__global__ void clip_coefficient_kernel(float* norm, float* coef, const float* total_sq,
                                        double max_norm) {
  const double total = sqrt(static_cast<double>(*total_sq));
  const double c = max_norm / (total + 1e-6);
  *norm = static_cast<float>(total);
  *coef = c >= 1.0 ? 1.0f : static_cast<float>(c);  // NaN stays NaN
}

}  // namespace

void adamw(const AdamWTensor<float>* tensors, int64_t count, const float* grad_scale,
           cudaStream_t stream) {
  AdamWList list{};
  auto flush = [&] {
    if (list.count == 0) return;
    const int64_t chunks = list.chunk_start[list.count];
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(chunks, kMaxAdamWBlocks));
    adamw_kernel<<<grid, kBlock, 0, stream>>>(list, grad_scale);
    VLMC_CUDA_CHECK_LAUNCH();
    list = AdamWList{};
  };
  for (int64_t i = 0; i < count; ++i) {
    if (tensors[i].numel == 0) continue;
    list.t[list.count] = tensors[i];
    list.chunk_start[list.count + 1] = list.chunk_start[list.count] + chunks_of(tensors[i].numel);
    if (++list.count == kAdamWTensorsPerLaunch) flush();
  }
  flush();
}

void sum_squares(float* total_sq, const SquareSumTensor<float>* tensors, int64_t count,
                 double* scratch, cudaStream_t stream) {
  // Launch l covers tensors [l * N, (l + 1) * N) and writes partials
  // scratch[l * kSquareSumBlocks, ...): the layout is fixed by count alone.
  const int64_t launches =
      (count + kSquareSumTensorsPerLaunch - 1) / kSquareSumTensorsPerLaunch;
  for (int64_t l = 0; l < launches; ++l) {
    SquareSumList list{};
    const int64_t first = l * kSquareSumTensorsPerLaunch;
    list.count = static_cast<int>(std::min<int64_t>(kSquareSumTensorsPerLaunch, count - first));
    for (int j = 0; j < list.count; ++j) {
      list.t[j] = tensors[first + j];
      list.chunk_start[j + 1] = list.chunk_start[j] + chunks_of(list.t[j].numel);
    }
    sum_squares_kernel<<<kSquareSumBlocks, kBlock, 0, stream>>>(list,
                                                                scratch + l * kSquareSumBlocks);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  sum_partials_kernel<<<1, kBlock, 0, stream>>>(total_sq, scratch, launches * kSquareSumBlocks);
  VLMC_CUDA_CHECK_LAUNCH();
}

void clip_coefficient(float* norm, float* coef, const float* total_sq, double max_norm,
                      cudaStream_t stream) {
  clip_coefficient_kernel<<<1, 1, 0, stream>>>(norm, coef, total_sq, max_norm);
  VLMC_CUDA_CHECK_LAUNCH();
}

}  // namespace vlmc::kernels::cuda
