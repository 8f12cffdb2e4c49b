#include "kernels/rotary.h"

#include <omp.h>

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements below which one thread does it all

// Calls f(r, x_row, table_row) for every row r = (b, h, l) of the contiguous
// [B, H, L, D] side: x_row is the row's offset in x (or dx), table_row its
// position's offset in cos and sin. Each thread takes a contiguous share of the
// rows and steps (b, h, l) along it: three 64-bit divisions a row (to split r)
// cost more than the row's 32 multiply-adds, and were most of the kernel's time.
template <typename F>
void for_each_row(const RotaryShape& s, F f) {
  const int64_t H = s.heads, L = s.length, rows = s.batch * H * L;
  if (rows == 0) return;
#pragma omp parallel if (rows * s.head_dim > kGrain)
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = rows * t / threads, r1 = rows * (t + 1) / threads;
    int64_t l = r0 % L, h = (r0 / L) % H, b = r0 / (L * H);
    for (int64_t r = r0; r < r1; ++r) {
      f(r, b * s.stride_b + h * s.stride_h + l * s.stride_l, (b * L + l) * s.head_dim);
      if (++l == L) {
        l = 0;
        if (++h == H) {
          h = 0;
          ++b;
        }
      }
    }
  }
}

}  // namespace

// y1 = x1 c1 - x2 s1, y2 = x2 c2 + x1 s2 (the halves of one row).
template <typename T>
void rotary_forward(T* y, const T* x, const T* cos, const T* sin, const RotaryShape& s) {
  const int64_t D = s.head_dim, half = D / 2;
  for_each_row(s, [&](int64_t r, int64_t x_row, int64_t table_row) {
    const T* __restrict xr = x + x_row;
    const T* __restrict c = cos + table_row;
    const T* __restrict sn = sin + table_row;
    T* __restrict yr = y + r * D;
    for (int64_t j = 0; j < half; ++j) yr[j] = xr[j] * c[j] - xr[j + half] * sn[j];
    for (int64_t j = half; j < D; ++j) yr[j] = xr[j] * c[j] + xr[j - half] * sn[j];
  });
}

// dx1 = dy1 c1 + dy2 s2, dx2 = dy2 c2 - dy1 s1: the transpose of the forward's map.
template <typename T>
void rotary_backward(T* dx, const T* dy, const T* cos, const T* sin, const RotaryShape& s) {
  const int64_t D = s.head_dim, half = D / 2;
  for_each_row(s, [&](int64_t r, int64_t x_row, int64_t table_row) {
    T* __restrict dxr = dx + x_row;
    const T* __restrict c = cos + table_row;
    const T* __restrict sn = sin + table_row;
    const T* __restrict g = dy + r * D;
    for (int64_t j = 0; j < half; ++j) dxr[j] = g[j] * c[j] + g[j + half] * sn[j + half];
    for (int64_t j = half; j < D; ++j) dxr[j] = g[j] * c[j] - g[j - half] * sn[j - half];
  });
}

template void rotary_forward<float>(float*, const float*, const float*, const float*, const RotaryShape&);
template void rotary_forward<double>(double*, const double*, const double*, const double*, const RotaryShape&);
template void rotary_backward<float>(float*, const float*, const float*, const float*, const RotaryShape&);
template void rotary_backward<double>(double*, const double*, const double*, const double*, const RotaryShape&);

}  // namespace vlmc::kernels::cpu
