#include "kernels/rotary.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements below which one thread does it all

// Calls f(r, x_row, table_row) for every row r = (b, h, l) of the contiguous
// [B, H, L, D] side: x_row is the row's offset in x (or dx), table_row its
// position's offset in cos and sin.
template <typename F>
void for_each_row(const RotaryShape& s, F f) {
  const int64_t H = s.heads, L = s.length, rows = s.batch * H * L;
#pragma omp parallel for schedule(static) if (rows * s.head_dim > kGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t l = r % L, h = (r / L) % H, b = r / (L * H);
    f(r, b * s.stride_b + h * s.stride_h + l * s.stride_l, (b * L + l) * s.head_dim);
  }
}

}  // namespace

// y1 = x1 c1 - x2 s1, y2 = x2 c2 + x1 s2 (the halves of one row).
template <typename T>
void rotary_forward(T* y, const T* x, const T* cos, const T* sin, const RotaryShape& s) {
  const int64_t D = s.head_dim, half = D / 2;
  for_each_row(s, [&](int64_t r, int64_t x_row, int64_t table_row) {
    const T* xr = x + x_row;
    const T* c = cos + table_row;
    const T* sn = sin + table_row;
    T* yr = y + r * D;
    for (int64_t j = 0; j < half; ++j) yr[j] = xr[j] * c[j] - xr[j + half] * sn[j];
    for (int64_t j = half; j < D; ++j) yr[j] = xr[j] * c[j] + xr[j - half] * sn[j];
  });
}

// dx1 = dy1 c1 + dy2 s2, dx2 = dy2 c2 - dy1 s1: the transpose of the forward's map.
template <typename T>
void rotary_backward(T* dx, const T* dy, const T* cos, const T* sin, const RotaryShape& s) {
  const int64_t D = s.head_dim, half = D / 2;
  for_each_row(s, [&](int64_t r, int64_t x_row, int64_t table_row) {
    T* dxr = dx + x_row;
    const T* c = cos + table_row;
    const T* sn = sin + table_row;
    const T* g = dy + r * D;
    for (int64_t j = 0; j < half; ++j) dxr[j] = g[j] * c[j] + g[j + half] * sn[j + half];
    for (int64_t j = half; j < D; ++j) dxr[j] = g[j] * c[j] - g[j - half] * sn[j - half];
  });
}

template void rotary_forward<float>(float*, const float*, const float*, const float*, const RotaryShape&);
template void rotary_forward<double>(double*, const double*, const double*, const double*, const RotaryShape&);
template void rotary_backward<float>(float*, const float*, const float*, const float*, const RotaryShape&);
template void rotary_backward<double>(double*, const double*, const double*, const double*, const RotaryShape&);

}  // namespace vlmc::kernels::cpu
