// CPU copy, fill and random-fill kernels (see kernels/copy.h).
#include "kernels/copy.h"

#include <cstring>

#include "kernels/element.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // below this, threads cost more than they save

void copy_same_dtype(char* dst, const Layout& dl, const char* src, const Layout& sl, size_t elem) {
  const int64_t n = dl.numel();
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(dst + dl.offset_of(i) * elem, src + sl.offset_of(i) * elem, elem);
}

}  // namespace

void copy(void* dst, DType dst_dtype, const Layout& dst_layout, const void* src, DType src_dtype,
          const Layout& src_layout) {
  const int64_t n = dst_layout.numel();
  if (n == 0) return;
  const bool contiguous = dst_layout.is_contiguous() && src_layout.is_contiguous();
  if (dst_dtype == src_dtype) {
    const size_t elem = dtype_size(dst_dtype);
    if (contiguous) {
      std::memcpy(dst, src, static_cast<size_t>(n) * elem);
    } else {
      copy_same_dtype(static_cast<char*>(dst), dst_layout, static_cast<const char*>(src), src_layout,
                      elem);
    }
    return;
  }
  if (contiguous) {
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i)
      store_from_double(dst, dst_dtype, i, load_as_double(src, src_dtype, i));
    return;
  }
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    store_from_double(dst, dst_dtype, dst_layout.offset_of(i),
                      load_as_double(src, src_dtype, src_layout.offset_of(i)));
}

void fill(void* dst, DType dtype, const Layout& layout, double value) {
  const int64_t n = layout.numel();
  if (layout.is_contiguous() && dtype == DType::f32) {
    float* p = static_cast<float*>(dst);
    const float v = static_cast<float>(value);
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
    return;
  }
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) store_from_double(dst, dtype, layout.offset_of(i), value);
}

void fill_normal(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double mean,
                 double std) {
#pragma omp parallel for if (n > kParallelGrain / 8)
  for (int64_t i = 0; i < n; ++i) store_from_double(dst, dtype, i, mean + std * normal_at(seed, offset, i));
}

void fill_uniform(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double low,
                  double high) {
#pragma omp parallel for if (n > kParallelGrain / 8)
  for (int64_t i = 0; i < n; ++i)
    store_from_double(dst, dtype, i, low + (high - low) * uniform_at(seed, offset, i));
}

}  // namespace vlmc::kernels::cpu
