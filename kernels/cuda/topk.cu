// CUDA top-k selection and row gather (see kernels/topk.h).
//
// topk_indices: one block of 256 threads per row (grid-stride over rows).
//   The k-th largest key t is found by an MSD radix select over the
//   order-preserving keys of kernels/topk.h, 8 bits per pass (4 passes for
//   f32, 8 for f64): a shared-memory histogram of the keys that match the
//   digits chosen so far, then a block-wide suffix sum over the 256 digits
//   (thread d owns digit d: warp shuffles plus 8 warp totals) picks the digit
//   that holds the k-th key. After the last pass, t and `remaining` (how many
//   keys equal to t belong to the top k) are known; one pass in position order
//   writes every key > t and the first `remaining` keys == t (ballot + popc
//   prefix counts give each its output slot), which is both the lower-position
//   tie-break and the ascending output order. No sort, no atomics on output.
//   v1  keys recomputed from global memory in every pass (any n).
//   v2  the row's keys cached in dynamic shared memory (n * sizeof(key) <=
//       kCacheBytes: n <= 10240 for f32, 5120 for f64; the seed's 576 and
//       4096-token rows use it).
//   The dispatcher picks v2 when the row fits, else v1.
// invert_row_indices: inverse = -1 (memset 0xff), then one thread per index
//   does atomicExch into inverse; a previous value other than -1 is a repeat.
//   The first error found wins an atomicCAS on error[0] and fills the rest.
// gather_rows / gather_rows_backward: one block per destination row, threads
//   across the row in the widest unit (16, 8, 4, 2 or 1 bytes) that divides
//   the row size and both base addresses: float4-wide copies for f32 rows with
//   D % 4 == 0. A row whose index is outside [0, n) is written as zeros (the
//   op reports it later, through invert_row_indices' error slots). The
//   backward writes each dx row once (gradient row or zeros).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_topk
//   build/tests/vlmc_cuda_tests "[topk]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_topk --cuda-only [--quick]   # validates each version, then times it
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/row_copy.cuh"
#include "kernels/topk.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // == the number of radix digits: thread d owns digit d
constexpr int kWarps = kThreads / 32;
constexpr int64_t kCacheBytes = 40 * 1024;  // under the 48 KiB default, beside the static arrays
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
struct KeyOf;
template <>
struct KeyOf<float> {
  using type = uint32_t;
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
};

template <typename T, bool kCached>
__global__ void __launch_bounds__(kThreads)
    topk_kernel(int64_t* out, const T* scores, int64_t rows, int64_t n, int64_t k) {
  using K = typename KeyOf<T>::type;
  extern __shared__ __align__(16) unsigned char topk_smem[];
  K* cache = reinterpret_cast<K*>(topk_smem);  // v2: the row's n keys
  __shared__ int hist[kThreads];
  __shared__ int warp_total[kWarps];
  __shared__ int warp_gt[kWarps];
  __shared__ int warp_eq[kWarps];
  __shared__ K chosen_prefix;
  __shared__ int64_t chosen_remaining;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* s = scores + row * n;
    int64_t* o = out + row * k;
    if constexpr (kCached) {
      for (int64_t i = tid; i < n; i += kThreads) cache[i] = topk_key(s[i]);
      __syncthreads();
    }
    const auto key_at = [&](int64_t i) -> K {
      if constexpr (kCached) {
        return cache[i];
      } else {
        return topk_key(s[i]);
      }
    };

    // Radix select: after the pass at `shift`, prefix holds the top digits of
    // the k-th largest key and `remaining` its rank among the keys sharing them.
    K prefix = 0, mask = 0;
    int64_t remaining = k;
    for (int shift = int(sizeof(K)) * 8 - 8; shift >= 0; shift -= 8) {
      hist[tid] = 0;
      __syncthreads();
      for (int64_t i = tid; i < n; i += kThreads) {
        const K key = key_at(i);
        if ((key & mask) == prefix) atomicAdd(&hist[int((key >> shift) & K(0xff))], 1);
      }
      __syncthreads();
      // at_least = keys (matching prefix) with digit >= tid; an inclusive
      // suffix sum within the warp, then the totals of the later warps.
      const int count = hist[tid];
      int suffix = count;
      for (int offset = 1; offset < 32; offset <<= 1) {
        const int other = __shfl_down_sync(kFullMask, suffix, offset);
        if (lane + offset < 32) suffix += other;
      }
      if (lane == 0) warp_total[warp] = suffix;
      __syncthreads();
      int64_t at_least = suffix;
      for (int w = warp + 1; w < kWarps; ++w) at_least += warp_total[w];
      const int64_t above = at_least - count;
      // Exactly one digit satisfies this: at_least falls with the digit and
      // 1 <= remaining <= the number of matching keys.
      if (above < remaining && at_least >= remaining) {
        chosen_prefix = prefix | (K(tid) << shift);
        chosen_remaining = remaining - above;
      }
      __syncthreads();
      prefix = chosen_prefix;
      remaining = chosen_remaining;
      mask |= K(0xff) << shift;
      // No barrier needed here: the next writes to hist/warp_total/chosen_*
      // happen after barriers every thread passes only once it has read these.
    }

    // Compaction in position order: keys > prefix all belong to the top k
    // (there are k - remaining of them), and so do the first `remaining` keys
    // equal to it. A selected position's slot counts the selected before it.
    int64_t gt_before = 0, eq_before = 0;  // over the chunks already done
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t i = base + tid;
      const K key = i < n ? key_at(i) : K(0);
      const bool gt = i < n && key > prefix;
      const bool eq = i < n && key == prefix;
      const unsigned gt_bits = __ballot_sync(kFullMask, gt);
      const unsigned eq_bits = __ballot_sync(kFullMask, eq);
      const unsigned lower = (1u << lane) - 1u;
      if (lane == 0) {
        warp_gt[warp] = __popc(gt_bits);
        warp_eq[warp] = __popc(eq_bits);
      }
      __syncthreads();
      int64_t gt_rank = gt_before + __popc(gt_bits & lower);
      int64_t eq_rank = eq_before + __popc(eq_bits & lower);
      for (int w = 0; w < kWarps; ++w) {
        if (w < warp) {
          gt_rank += warp_gt[w];
          eq_rank += warp_eq[w];
        }
        gt_before += warp_gt[w];
        eq_before += warp_eq[w];
      }
      if (gt || (eq && eq_rank < remaining)) o[gt_rank + (eq_rank < remaining ? eq_rank : remaining)] = i;
      __syncthreads();  // warp_gt/warp_eq (and, for the next row, cache and hist) are rewritten next
    }
  }
}

__global__ void invert_kernel(int64_t* inverse, int64_t* error, const int64_t* indices, int64_t rows,
                              int64_t n, int64_t k) {
  const int64_t total = rows * k;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / k, j = e - r * k;
    const int64_t v = indices[e];
    int64_t code = 0;
    if (v < 0 || v >= n) {
      code = kIndexOutOfRange;
    } else {
      const unsigned long long previous =
          atomicExch(reinterpret_cast<unsigned long long*>(inverse + r * n + v), static_cast<unsigned long long>(j));
      if (previous != ~0ull) code = kIndexRepeated;
    }
    if (code != 0 && atomicCAS(reinterpret_cast<unsigned long long*>(error), 0ull,
                               static_cast<unsigned long long>(code)) == 0ull) {
      error[1] = r;
      error[2] = v;
    }
  }
}

// y row o = x row (o / k) * n + indices[o].
template <typename U>
__global__ void gather_rows_kernel(U* y, const U* x, const int64_t* indices, int64_t rows, int64_t n,
                                   int64_t k, int64_t units) {
  for (int64_t o = blockIdx.x; o < rows * k; o += gridDim.x) {
    const int64_t v = indices[o];
    U* dst = y + o * units;
    if (v < 0 || v >= n) {  // reported by invert_row_indices; never read through
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = U{};
      continue;
    }
    const U* src = x + ((o / k) * n + v) * units;
    for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = src[u];
  }
}

// dx row o = g row (o / n) * k + inverse[o], or zeros.
template <typename U>
__global__ void gather_rows_backward_kernel(U* dx, const U* g, const int64_t* inverse, int64_t rows,
                                            int64_t n, int64_t k, int64_t units) {
  for (int64_t o = blockIdx.x; o < rows * n; o += gridDim.x) {
    const int64_t j = inverse[o];
    U* dst = dx + o * units;
    if (j >= 0) {
      const U* src = g + ((o / n) * k + j) * units;
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = src[u];
    } else {
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = U{};
    }
  }
}

}  // namespace

template <typename T>
void topk_indices(int64_t* out, const T* scores, int64_t rows, int64_t n, int64_t k, cudaStream_t stream) {
  if (rows == 0 || k == 0) return;
  using K = typename KeyOf<T>::type;
  const unsigned grid = grid_for(rows, 1, 65535);
  const int64_t cache_bytes = n * int64_t(sizeof(K));
  if (cache_bytes <= kCacheBytes) {
    topk_kernel<T, true><<<grid, kThreads, static_cast<size_t>(cache_bytes), stream>>>(out, scores, rows, n, k);
    VLMC_CUDA_CHECK_LAUNCH();
  } else {
    topk_kernel<T, false><<<grid, kThreads, 0, stream>>>(out, scores, rows, n, k);
    VLMC_CUDA_CHECK_LAUNCH();
  }
}

void invert_row_indices(int64_t* inverse, int64_t* error, const int64_t* indices, int64_t rows,
                        int64_t n, int64_t k, cudaStream_t stream) {
  // All bits set is -1 in two's complement: "no index picks this position".
  VLMC_CUDA_CHECK(cudaMemsetAsync(inverse, 0xff, static_cast<size_t>(rows * n) * sizeof(int64_t), stream));
  const int64_t total = rows * k;
  if (total == 0) return;
  invert_kernel<<<grid_for(total, 256), 256, 0, stream>>>(inverse, error, indices, rows, n, k);
  VLMC_CUDA_CHECK_LAUNCH();
}

void gather_rows(void* y, const void* x, const int64_t* indices, int64_t rows, int64_t n, int64_t k,
                 int64_t row_bytes, cudaStream_t stream) {
  if (rows * k == 0 || row_bytes == 0) return;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(x) |
                         static_cast<uintptr_t>(row_bytes);
  with_copy_unit(bits, [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / int64_t(sizeof(U));
    gather_rows_kernel<U><<<grid_for(rows * k, 1), row_threads(units), 0, stream>>>(
        static_cast<U*>(y), static_cast<const U*>(x), indices, rows, n, k, units);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void gather_rows_backward(void* dx, const void* g, const int64_t* inverse, int64_t rows, int64_t n,
                          int64_t k, int64_t row_bytes, cudaStream_t stream) {
  if (rows * n == 0 || row_bytes == 0) return;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(dx) | reinterpret_cast<uintptr_t>(g) |
                         static_cast<uintptr_t>(row_bytes);
  with_copy_unit(bits, [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / int64_t(sizeof(U));
    gather_rows_backward_kernel<U><<<grid_for(rows * n, 1), row_threads(units), 0, stream>>>(
        static_cast<U*>(dx), static_cast<const U*>(g), inverse, rows, n, k, units);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

template void topk_indices<float>(int64_t*, const float*, int64_t, int64_t, int64_t, cudaStream_t);
template void topk_indices<double>(int64_t*, const double*, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace vlmc::kernels::cuda
