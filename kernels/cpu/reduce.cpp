// CPU reductions over the middle dim of [outer, r, inner] (see kernels/reduce.h).
//
// Work is split into fixed pieces (rows of the output, fixed-size chunks of r,
// fixed-size tiles of inner) whose results are combined in a fixed order, so
// the answer does not depend on the number of threads. f32 sums accumulate in
// double, so even sums of millions of elements stay well within 1e-6 relative.
#include "kernels/reduce.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <omp.h>

#include "kernels/cpu/lanes.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // elements read below which one thread is faster
constexpr int64_t kChunk = 1 << 14;          // piece of r one task reduces when inner == 1
constexpr int64_t kTile = 64;                // piece of inner one task reduces when inner > 1 (at least)
constexpr int64_t kMaxTile = 512;            // ... and at most

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The tile of inner one task sums down r: a quarter of inner, a power of two
// in [kTile, kMaxTile]. Wide tiles read long runs of each row (a 4096-wide
// bias gradient: 2 KB per row rather than 256 bytes, which the prefetcher
// follows and which touch a page per row far less often); each column's sum
// still runs down r in row order, so the width never changes a result.
int64_t tile_width(int64_t inner) {
  int64_t width = kTile;
  while (width < kMaxTile && width * 2 * 4 <= inner) width *= 2;
  return width;
}

// x[k0, k1) summed in double, in independent lanes (kernels/cpu/lanes.h).
template <typename T>
double sum_chunk(const T* x, int64_t k0, int64_t k1) {
  return sum_in_lanes(k0, k1, [x](int64_t k) { return static_cast<double>(x[k]); });
}

// The inner > 1 sums: x [outer, r, inner]. visit(index, value) sees every
// element as it is read, for work fused into the same pass
// (round_bf16_with_column_sums). Each column is summed down r in row order,
// in double, whichever task owns it, so no split changes a result.
//
// outer == 1 (a bias gradient: sum over the rows of [r, inner]): each thread
// owns a contiguous share of the columns and walks every row through it, the
// longest contiguous reads a column split allows. Tiles of at most 512 columns
// handed out by `omp for` took 1.3-1.9x longer (AMD EPYC, [2304, 4096], best
// of 60: 4.7-5.0 against 3.1-3.2 ms on 1 thread, 2.7 against 1.9-2.2 ms on
// 2; with the bf16 rounding fused, 5.2-5.4 against 3.7-4.1 ms on 2).
// Otherwise each task owns a tile of inner columns of one outer row and walks
// down r, so reads are contiguous along the tile.
template <typename T, typename Visit>
void sum_columns(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale, const Visit& visit) {
  if (outer == 1) {
#pragma omp parallel if (r * inner > kParallelGrain)
    {
      const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t share = ceil_div(inner, threads);
      const int64_t c0 = std::min(inner, t * share), c1 = std::min(inner, c0 + share);
      std::vector<double> acc(static_cast<size_t>(c1 - c0));
      double* a = acc.data();
      for (int64_t k = 0; k < r; ++k) {
        const T* row = x + k * inner;
        for (int64_t j = c0; j < c1; ++j) {
          a[j - c0] += static_cast<double>(row[j]);
          visit(k * inner + j, row[j]);
        }
      }
      for (int64_t j = c0; j < c1; ++j) out[j] = static_cast<T>(a[j - c0] * scale);
    }
    return;
  }
  const int64_t tile = tile_width(inner);
  const int64_t tiles = ceil_div(inner, tile);
#pragma omp parallel for if (outer * r * inner > kParallelGrain)
  for (int64_t t = 0; t < outer * tiles; ++t) {
    const int64_t o = t / tiles, j0 = (t % tiles) * tile, width = std::min(tile, inner - j0);
    double acc[kMaxTile] = {};
    for (int64_t k = 0; k < r; ++k) {
      const int64_t first = (o * r + k) * inner + j0;
      const T* row = x + first;
      for (int64_t j = 0; j < width; ++j) {
        acc[j] += static_cast<double>(row[j]);
        visit(first + j, row[j]);
      }
    }
    for (int64_t j = 0; j < width; ++j) out[o * inner + j0 + j] = static_cast<T>(acc[j] * scale);
  }
}

template <typename T>
void sum_impl(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale) {
  const int64_t total = outer * r * inner;
  if (inner == 1) {
    // x: [outer, r]. Each (row, chunk) task sums one chunk; chunk sums are added in order.
    const int64_t chunks = std::max<int64_t>(1, ceil_div(r, kChunk));
    std::vector<double> partial(static_cast<size_t>(outer * chunks));
#pragma omp parallel for if (total > kParallelGrain)
    for (int64_t t = 0; t < outer * chunks; ++t) {
      const int64_t o = t / chunks, c = t % chunks;
      const int64_t k0 = c * kChunk, k1 = std::min(r, k0 + kChunk);
      partial[static_cast<size_t>(t)] = sum_chunk(x + o * r, k0, k1);
    }
    for (int64_t o = 0; o < outer; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < chunks; ++c) acc += partial[static_cast<size_t>(o * chunks + c)];
      out[o] = static_cast<T>(acc * scale);
    }
    return;
  }
  sum_columns(out, x, outer, r, inner, scale, [](int64_t, T) {});
}

template <typename T>
void max_impl(T* values, int64_t* indices, const T* x, int64_t outer, int64_t r, int64_t inner) {
  const int64_t total = outer * r * inner;
  if (inner == 1) {
    const int64_t chunks = std::max<int64_t>(1, ceil_div(r, kChunk));
    std::vector<T> pv(static_cast<size_t>(outer * chunks));
    std::vector<int64_t> pi(static_cast<size_t>(outer * chunks));
#pragma omp parallel for if (total > kParallelGrain)
    for (int64_t t = 0; t < outer * chunks; ++t) {
      const int64_t o = t / chunks, c = t % chunks;
      const int64_t k0 = c * kChunk, k1 = std::min(r, k0 + kChunk);
      const T* row = x + o * r;
      T best = row[k0];
      int64_t bi = k0;
      for (int64_t k = k0 + 1; k < k1; ++k)
        if (max_better(row[k], k, best, bi)) {
          best = row[k];
          bi = k;
        }
      pv[static_cast<size_t>(t)] = best;
      pi[static_cast<size_t>(t)] = bi;
    }
    for (int64_t o = 0; o < outer; ++o) {
      T best = pv[static_cast<size_t>(o * chunks)];
      int64_t bi = pi[static_cast<size_t>(o * chunks)];
      for (int64_t c = 1; c < chunks; ++c) {
        const size_t p = static_cast<size_t>(o * chunks + c);
        if (max_better(pv[p], pi[p], best, bi)) {
          best = pv[p];
          bi = pi[p];
        }
      }
      values[o] = best;
      if (indices) indices[o] = bi;
    }
    return;
  }
  const int64_t tiles = ceil_div(inner, kTile);
#pragma omp parallel for if (total > kParallelGrain)
  for (int64_t t = 0; t < outer * tiles; ++t) {
    const int64_t o = t / tiles, j0 = (t % tiles) * kTile, width = std::min(kTile, inner - j0);
    T best[kTile];
    int64_t bi[kTile];
    const T* first = x + o * r * inner + j0;
    for (int64_t j = 0; j < width; ++j) {
      best[j] = first[j];
      bi[j] = 0;
    }
    for (int64_t k = 1; k < r; ++k) {
      const T* row = x + (o * r + k) * inner + j0;
      for (int64_t j = 0; j < width; ++j)
        if (max_better(row[j], k, best[j], bi[j])) {
          best[j] = row[j];
          bi[j] = k;
        }
    }
    for (int64_t j = 0; j < width; ++j) {
      values[o * inner + j0 + j] = best[j];
      if (indices) indices[o * inner + j0 + j] = bi[j];
    }
  }
}

template <typename T>
void scatter_impl(T* grad_x, const T* grad, const int64_t* indices, int64_t outer, int64_t r,
                  int64_t inner) {
  const int64_t n = outer * r * inner;
  std::memset(grad_x, 0, static_cast<size_t>(n) * sizeof(T));
#pragma omp parallel for if (outer * inner > kParallelGrain)
  for (int64_t t = 0; t < outer * inner; ++t) {
    const int64_t o = t / inner, j = t % inner;
    grad_x[(o * r + indices[t]) * inner + j] = grad[t];
  }
}

}  // namespace

template <typename T>
void sum(T* out, const T* x, int64_t outer, int64_t r, int64_t inner, double scale) {
  if (outer * inner == 0) return;
  sum_impl(out, x, outer, r, inner, scale);
}

template <typename T>
void max(T* values, int64_t* indices, const T* x, int64_t outer, int64_t r, int64_t inner) {
  if (outer * inner == 0 || r == 0) return;
  max_impl(values, indices, x, outer, r, inner);
}

template <typename T>
void scatter_reduced(T* grad_x, const T* grad, const int64_t* indices, int64_t outer, int64_t r,
                     int64_t inner) {
  if (outer * r * inner == 0) return;
  scatter_impl(grad_x, grad, indices, outer, r, inner);
}

template <typename R>
void round_bf16_with_column_sums(R* rounded, float* col_sums, const float* g, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  if (cols == 1) {  // sum's own path for a single column (chunks of lanes)
#pragma omp parallel for simd if (rows > kParallelGrain)
    for (int64_t k = 0; k < rows; ++k) rounded[k] = rounded_to_bf16<R>(g[k]);
    sum_impl(col_sums, g, 1, rows, 1, 1.0);
    return;
  }
  // sum(g, {0})'s own pass, rounding each element as it reads it.
  sum_columns(col_sums, g, 1, rows, cols, 1.0,
              [rounded](int64_t index, float v) { rounded[index] = rounded_to_bf16<R>(v); });
}
template void round_bf16_with_column_sums<uint16_t>(uint16_t*, float*, const float*, int64_t, int64_t);
template void round_bf16_with_column_sums<float>(float*, float*, const float*, int64_t, int64_t);

template <typename T>
void column_sums(T* out, const T* x, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  sum_columns(out, x, 1, rows, cols, 1.0, [](int64_t, T) {});
}

#define VLMC_INSTANTIATE(T)                                                          \
  template void sum<T>(T*, const T*, int64_t, int64_t, int64_t, double);             \
  template void column_sums<T>(T*, const T*, int64_t, int64_t);                      \
  template void max<T>(T*, int64_t*, const T*, int64_t, int64_t, int64_t);           \
  template void scatter_reduced<T>(T*, const T*, const int64_t*, int64_t, int64_t, int64_t);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cpu
