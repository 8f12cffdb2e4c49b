// CPU adaptive average pooling, channels last (see kernels/pool.h).
#include "kernels/pool.h"

#include <vector>

namespace vlmc::kernels::cpu {

template <typename T>
void adaptive_avg_pool2d(T* y, const T* x, const PoolShape& s) {
  const int64_t C = s.channels;
  // One output cell per iteration; the channel loop is contiguous in memory.
#pragma omp parallel for collapse(3) if (s.batch * s.out_h * s.out_w * C > (1 << 14))
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t oi = 0; oi < s.out_h; ++oi) {
      for (int64_t oj = 0; oj < s.out_w; ++oj) {
        const int64_t i0 = pool_start(oi, s.in_h, s.out_h), i1 = pool_end(oi, s.in_h, s.out_h);
        const int64_t j0 = pool_start(oj, s.in_w, s.out_w), j1 = pool_end(oj, s.in_w, s.out_w);
        const T scale = T(1) / static_cast<T>((i1 - i0) * (j1 - j0));
        T* out = y + ((b * s.out_h + oi) * s.out_w + oj) * C;
        for (int64_t c = 0; c < C; ++c) out[c] = T(0);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) {
            const T* in = x + ((b * s.in_h + i) * s.in_w + j) * C;
            for (int64_t c = 0; c < C; ++c) out[c] += in[c];
          }
        for (int64_t c = 0; c < C; ++c) out[c] *= scale;
      }
    }
  }
}

template <typename T>
void adaptive_avg_pool2d_backward(T* grad_x, const T* grad_y, const PoolShape& s) {
  const int64_t C = s.channels;
#pragma omp parallel for collapse(3) if (s.batch * s.in_h * s.in_w * C > (1 << 14))
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.in_h; ++i) {
      for (int64_t j = 0; j < s.in_w; ++j) {
        T* out = grad_x + ((b * s.in_h + i) * s.in_w + j) * C;
        for (int64_t c = 0; c < C; ++c) out[c] = T(0);
        // Every output window that averaged this input contributes g / area.
        const int64_t oi0 = pool_first_window(i, s.in_h, s.out_h), oi1 = pool_last_window(i, s.in_h, s.out_h);
        const int64_t oj0 = pool_first_window(j, s.in_w, s.out_w), oj1 = pool_last_window(j, s.in_w, s.out_w);
        for (int64_t oi = oi0; oi <= oi1; ++oi) {
          const int64_t rows = pool_end(oi, s.in_h, s.out_h) - pool_start(oi, s.in_h, s.out_h);
          for (int64_t oj = oj0; oj <= oj1; ++oj) {
            const int64_t cols = pool_end(oj, s.in_w, s.out_w) - pool_start(oj, s.in_w, s.out_w);
            const T scale = T(1) / static_cast<T>(rows * cols);
            const T* g = grad_y + ((b * s.out_h + oi) * s.out_w + oj) * C;
            for (int64_t c = 0; c < C; ++c) out[c] += g[c] * scale;
          }
        }
      }
    }
  }
}

template void adaptive_avg_pool2d<float>(float*, const float*, const PoolShape&);
template void adaptive_avg_pool2d<double>(double*, const double*, const PoolShape&);
template void adaptive_avg_pool2d_backward<float>(float*, const float*, const PoolShape&);
template void adaptive_avg_pool2d_backward<double>(double*, const double*, const PoolShape&);

}  // namespace vlmc::kernels::cpu
