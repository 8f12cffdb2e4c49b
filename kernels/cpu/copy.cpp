// CPU copy, fill and random-fill kernels (see kernels/copy.h).
#include "kernels/copy.h"

#include <algorithm>
#include <cstring>

#include "kernels/load_store.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // below this, threads cost more than they save

// Walks both layouts row by row: the offsets of a row's first element are
// computed once (with divisions), then the innermost dim is a strided loop.
// That keeps broadcast (stride 0) and transposed copies near memcpy speed.
template <typename Body>
void for_each_row(const Layout& dl, const Layout& sl, Body body) {
  const int64_t n = dl.numel();
  const int64_t inner = dl.ndim == 0 ? 1 : dl.shape[dl.ndim - 1];
  if (inner == 0) return;
  const int64_t rows = n / inner;
  const int64_t ds = dl.ndim == 0 ? 1 : dl.strides[dl.ndim - 1];
  const int64_t ss = sl.ndim == 0 ? 1 : sl.strides[sl.ndim - 1];
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) body(dl.offset_of(r * inner), ds, sl.offset_of(r * inner), ss, inner);
}

template <typename T>
void copy_typed(T* dst, const Layout& dl, const T* src, const Layout& sl) {
  for_each_row(dl, sl, [&](int64_t d0, int64_t ds, int64_t s0, int64_t ss, int64_t inner) {
    T* d = dst + d0;
    const T* s = src + s0;
    if (ds == 1 && ss == 1) {
      for (int64_t j = 0; j < inner; ++j) d[j] = s[j];
    } else if (ds == 1 && ss == 0) {  // a broadcast row (an expanded gradient): a vectorised fill
      std::fill(d, d + inner, s[0]);
    } else {
      for (int64_t j = 0; j < inner; ++j) d[j * ds] = s[j * ss];
    }
  });
}

void copy_same_dtype(void* dst, const Layout& dl, const void* src, const Layout& sl, size_t elem) {
  switch (elem) {
    case 8: copy_typed(static_cast<uint64_t*>(dst), dl, static_cast<const uint64_t*>(src), sl); break;
    case 4: copy_typed(static_cast<uint32_t*>(dst), dl, static_cast<const uint32_t*>(src), sl); break;
    case 2: copy_typed(static_cast<uint16_t*>(dst), dl, static_cast<const uint16_t*>(src), sl); break;
    default: copy_typed(static_cast<uint8_t*>(dst), dl, static_cast<const uint8_t*>(src), sl); break;
  }
}

// convert: a lambda (a function pointer would be called per element).
template <typename Out, typename In, typename Convert>
void convert_contiguous(Out* out, const In* in, int64_t n, Convert convert) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = convert(in[i]);
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
      copy_same_dtype(dst, dst_layout, src, src_layout, elem);
    }
    return;
  }
  // autocast's conversions, f32 <-> bf16, in loops of their own (the same
  // bits as the per-element path below, which goes through a dtype switch
  // and double for every element).
  if (contiguous && src_dtype == DType::f32 && dst_dtype == DType::bf16) {
    convert_contiguous(static_cast<uint16_t*>(dst), static_cast<const float*>(src), n,
                       [](float f) { return float_to_bf16_bits(f); });
    return;
  }
  if (contiguous && src_dtype == DType::bf16 && dst_dtype == DType::f32) {
    convert_contiguous(static_cast<float*>(dst), static_cast<const uint16_t*>(src), n,
                       [](uint16_t h) { return bf16_bits_to_float(h); });
    return;
  }
  if (contiguous) {
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i)
      store_from_double(dst, dst_dtype, i, load_as_double(src, src_dtype, i));
    return;
  }
  for_each_row(dst_layout, src_layout, [&](int64_t d0, int64_t ds, int64_t s0, int64_t ss, int64_t inner) {
    for (int64_t j = 0; j < inner; ++j)
      store_from_double(dst, dst_dtype, d0 + j * ds, load_as_double(src, src_dtype, s0 + j * ss));
  });
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
