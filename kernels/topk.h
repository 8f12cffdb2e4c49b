// Top-k selection and row gather, the token selection of the seed's
// DynamicResolutionConnector:
//
//   _, indices = scores.topk(k, dim=1); indices = indices.sort(dim=1).values
//   selected = torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, D))
//
// topk_indices: scores [rows, n] -> out i64 [rows, k], the positions of each
// row's k largest scores in ascending position order. The ranking is a total
// order on (score, position): a higher score ranks first, equal scores rank
// the lower position first, NaN (any payload) ranks above +inf, and -0 equals
// +0. Both devices are designed to select exactly the same set (equal indices
// on tied, NaN and -0 scores in tests/cuda/test_cuda_topk.cpp, on an H200,
// 2026-12-04).
//
// gather_rows: x [rows, n, row_bytes] -> y [rows, k, row_bytes] at those
// positions; its backward writes every x row once (the gradient row that
// picked it, or zeros) through the inverse map built by invert_row_indices,
// which also validates the indices. All buffers are contiguous; the row
// kernels move bytes, so any dtype is accepted.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"

namespace vlmc::kernels {

// Order-preserving unsigned keys: a > b as ranked above <=> key(a) > key(b).
// The sign bit is flipped for positives and every bit for negatives (the
// usual radix-sort map); NaN maps to the largest key and -0 to +0's key.
VLMC_HOST_DEVICE inline uint32_t topk_key(float v) {
  if (v != v) return 0xffffffffu;
  if (v == 0.0f) v = 0.0f;
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
VLMC_HOST_DEVICE inline uint64_t topk_key(double v) {
  if (v != v) return 0xffffffffffffffffull;
  if (v == 0.0) v = 0.0;
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Error codes invert_row_indices writes into error[0] (the caller zeroes the
// three i64 slots first); error[1] = the row, error[2] = the index value.
inline constexpr int64_t kIndexOutOfRange = 1;
inline constexpr int64_t kIndexRepeated = 2;

namespace cpu {
// 1 <= k <= n.
template <typename T>
void topk_indices(int64_t* out, const T* scores, int64_t rows, int64_t n, int64_t k);

// inverse [rows, n]: inverse[r, indices[r, j]] = j, -1 where no j picks the
// position. Reports the first bad index in row-major order (out of [0, n), or
// repeated within its row); inverse is then unspecified.
void invert_row_indices(int64_t* inverse, int64_t* error, const int64_t* indices, int64_t rows,
                        int64_t n, int64_t k);
// y [rows, k, row_bytes] = x [rows, n, row_bytes] at indices [rows, k] (valid).
void gather_rows(void* y, const void* x, const int64_t* indices, int64_t rows, int64_t n, int64_t k,
                 int64_t row_bytes);
// dx [rows, n, row_bytes]: row (r, i) = g [rows, k, row_bytes] row (r, inverse[r, i]), or zeros.
void gather_rows_backward(void* dx, const void* g, const int64_t* inverse, int64_t rows, int64_t n,
                          int64_t k, int64_t row_bytes);
}  // namespace cpu

namespace cuda {
template <typename T>
void topk_indices(int64_t* out, const T* scores, int64_t rows, int64_t n, int64_t k, cudaStream_t stream);
// error: three i64 in device memory, zeroed by the caller; with several bad
// indices, which one is reported is unspecified.
void invert_row_indices(int64_t* inverse, int64_t* error, const int64_t* indices, int64_t rows,
                        int64_t n, int64_t k, cudaStream_t stream);
void gather_rows(void* y, const void* x, const int64_t* indices, int64_t rows, int64_t n, int64_t k,
                 int64_t row_bytes, cudaStream_t stream);
void gather_rows_backward(void* dx, const void* g, const int64_t* inverse, int64_t rows, int64_t n,
                          int64_t k, int64_t row_bytes, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
