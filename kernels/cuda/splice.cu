// CUDA splice kernels (see kernels/splice.h); the plan comes from the host.
//
// splice_rows (v1, the only version): one launch fills the whole output. One
//   block per output row (grid-stride over rows), its threads across the row
//   in the widest unit (16, 8, 4, 2 or 1 bytes) dividing the row size and the
//   three base addresses, so f32 rows with D % 4 == 0 move as 16-byte vectors.
//   Each row reads its source index once (a broadcast load) and copies the
//   table row, the visual row, or writes zeros (padding).
// rows_from_map: the same scheme for the visual tokens' gradient: each visual
//   row copies the gradient row it was placed at, or zeros if it was cut.
// splice_table_backward: cudaMemsetAsync(dtable, 0), then one block per
//   distinct token id (grid-stride), threads across D, each summing that id's
//   gradient rows in the host's order (ascending output row): no atomics, the
//   same order as the CPU, so the table gradient is deterministic and equal
//   to the CPU's bit for bit.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_splice
//   build/tests/vlmc_cuda_tests "[splice]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_splice --cuda-only [--quick]   # validates each version, then times it
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/row_copy.cuh"
#include "kernels/splice.h"

namespace vlmc::kernels::cuda {
namespace {

template <typename U>
__global__ void splice_rows_kernel(U* out, const U* table, const U* visual, const int64_t* row_source,
                                   int64_t rows, int64_t vocab, int64_t units) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t s = row_source[r];
    U* dst = out + r * units;
    if (s < 0) {
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = U{};
    } else {
      const U* src = s < vocab ? table + s * units : visual + (s - vocab) * units;
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) dst[u] = src[u];
    }
  }
}

template <typename U>
__global__ void rows_from_map_kernel(U* dst, const U* src, const int64_t* map, int64_t rows, int64_t units) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t s = map[r];
    U* d = dst + r * units;
    if (s < 0) {
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) d[u] = U{};
    } else {
      const U* from = src + s * units;
      for (int64_t u = threadIdx.x; u < units; u += blockDim.x) d[u] = from[u];
    }
  }
}

template <typename T>
__global__ void table_backward_kernel(T* dtable, const T* grad, const int64_t* table_ids,
                                      const int64_t* group_offsets, const int64_t* group_rows, int64_t groups,
                                      int64_t d) {
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t begin = group_offsets[g], end = group_offsets[g + 1];
    T* dst = dtable + table_ids[g] * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      T acc = T(0);
      for (int64_t p = begin; p < end; ++p) acc += grad[group_rows[p] * d + j];
      dst[j] = acc;
    }
  }
}

}  // namespace

void splice_rows(void* out, const void* table, const void* visual, const int64_t* row_source,
                 int64_t rows, int64_t vocab, int64_t row_bytes, cudaStream_t stream) {
  if (rows == 0 || row_bytes == 0) return;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(table) |
                         reinterpret_cast<uintptr_t>(visual) | static_cast<uintptr_t>(row_bytes);
  with_copy_unit(bits, [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / int64_t(sizeof(U));
    splice_rows_kernel<U><<<grid_for(rows, 1), row_threads(units), 0, stream>>>(
        static_cast<U*>(out), static_cast<const U*>(table), static_cast<const U*>(visual), row_source, rows,
        vocab, units);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void rows_from_map(void* dst, const void* src, const int64_t* map, int64_t rows, int64_t row_bytes,
                   cudaStream_t stream) {
  if (rows == 0 || row_bytes == 0) return;
  const uintptr_t bits =
      reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | static_cast<uintptr_t>(row_bytes);
  with_copy_unit(bits, [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / int64_t(sizeof(U));
    rows_from_map_kernel<U><<<grid_for(rows, 1), row_threads(units), 0, stream>>>(
        static_cast<U*>(dst), static_cast<const U*>(src), map, rows, units);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void splice_table_backward(T* dtable, const T* grad, const int64_t* table_ids, const int64_t* group_offsets,
                           const int64_t* group_rows, int64_t groups, int64_t vocab, int64_t d,
                           cudaStream_t stream) {
  VLMC_CUDA_CHECK(cudaMemsetAsync(dtable, 0, static_cast<size_t>(vocab * d) * sizeof(T), stream));
  if (groups == 0 || d == 0) return;
  const int threads = d >= 256 ? 256 : static_cast<int>((d + 31) / 32 * 32);
  table_backward_kernel<T><<<grid_for(groups, 1), threads, 0, stream>>>(dtable, grad, table_ids, group_offsets,
                                                                         group_rows, groups, d);
  VLMC_CUDA_CHECK_LAUNCH();
}

template void splice_table_backward<float>(float*, const float*, const int64_t*, const int64_t*, const int64_t*,
                                           int64_t, int64_t, int64_t, cudaStream_t);
template void splice_table_backward<double>(double*, const double*, const int64_t*, const int64_t*,
                                            const int64_t*, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace vlmc::kernels::cuda
