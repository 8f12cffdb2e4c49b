// CPU copy, fill and random-fill kernels (see kernels/copy.h).
#include "kernels/copy.h"

#include <algorithm>
#include <cstring>

#include <omp.h>

#include "kernels/load_store.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // below this, threads cost more than they save

// The rows a strided copy walks: both layouts' dims with size-1 dims dropped
// and neighbours merged where both operands step through them as one (a
// permutation that keeps runs of dims together, a broadcast over several
// dims), so the copy has as few and as long rows as its layouts allow. The
// patches of CLIP's embedding ([B, C, gy, i, gx, j] read as [B, gy, gx, C, i,
// j]) walk 4 dims of rows 14 long instead of 5.
struct Rows {
  int outer = 0;  // dims before the row's own
  int64_t shape[kMaxDims] = {}, dst_strides[kMaxDims] = {}, src_strides[kMaxDims] = {};
  int64_t count = 1;  // rows: the product of the outer dims
  int64_t inner = 1, ds = 1, ss = 1;
};

Rows coalesce(const Layout& dl, const Layout& sl) {
  int64_t shape[kMaxDims], dst[kMaxDims], src[kMaxDims];
  int n = 0;
  for (int d = 0; d < dl.ndim; ++d) {
    const int64_t size = dl.shape[d];
    if (size == 1) continue;
    if (n > 0 && dst[n - 1] == dl.strides[d] * size && src[n - 1] == sl.strides[d] * size) {
      shape[n - 1] *= size;
      dst[n - 1] = dl.strides[d];
      src[n - 1] = sl.strides[d];
      continue;
    }
    shape[n] = size;
    dst[n] = dl.strides[d];
    src[n] = sl.strides[d];
    ++n;
  }
  Rows rows;
  if (n == 0) return rows;  // one element
  rows.outer = n - 1;
  rows.inner = shape[n - 1];
  rows.ds = dst[n - 1];
  rows.ss = src[n - 1];
  for (int d = 0; d < rows.outer; ++d) {
    rows.shape[d] = shape[d];
    rows.dst_strides[d] = dst[d];
    rows.src_strides[d] = src[d];
    rows.count *= shape[d];
  }
  return rows;
}

// Calls body(dst offset, dst stride, src offset, src stride, length) for the
// elements [begin, end) of the rows laid end to end: a whole row at a time,
// but the first and the last may be parts of one. The first row's offsets come
// from divisions, the next ones from stepping an index through the outer dims
// (a division per dim per row cost more than copying rows of 14 elements).
template <typename Body>
void walk_rows(const Rows& rows, int64_t begin, int64_t end, Body& body) {
  if (begin >= end) return;
  int64_t index[kMaxDims] = {};
  int64_t d0 = 0, s0 = 0;
  int64_t r0 = begin / rows.inner;
  int64_t j = begin % rows.inner;  // where the first row starts
  for (int d = rows.outer - 1; d >= 0; --d) {
    index[d] = r0 % rows.shape[d];
    r0 /= rows.shape[d];
    d0 += index[d] * rows.dst_strides[d];
    s0 += index[d] * rows.src_strides[d];
  }
  for (int64_t e = begin; e < end;) {
    const int64_t length = std::min(rows.inner - j, end - e);
    body(d0 + j * rows.ds, rows.ds, s0 + j * rows.ss, rows.ss, length);
    e += length;
    j = 0;
    for (int d = rows.outer - 1; d >= 0; --d) {
      d0 += rows.dst_strides[d];
      s0 += rows.src_strides[d];
      if (++index[d] < rows.shape[d]) break;
      d0 -= rows.dst_strides[d] * rows.shape[d];
      s0 -= rows.src_strides[d] * rows.shape[d];
      index[d] = 0;
    }
  }
}

// Walks both layouts (of one shape) row by row, in equal shares of elements
// per thread above kParallelGrain elements; the innermost dim is a strided
// loop, which keeps broadcast (stride 0) and transposed copies near memcpy
// speed. The shares split rows where they must: a scalar expanded to a whole
// tensor is one row (coalesce), which shares of whole rows left to one
// thread (sum's gradient, [4, 576, 4096] of f32: 4.4 ms a copy on 2 threads,
// Intel Xeon with AMX).
template <typename Body>
void for_each_row(const Layout& dl, const Layout& sl, Body body) {
  const Rows rows = coalesce(dl, sl);
  if (rows.inner == 0 || rows.count == 0) return;
  const int64_t n = rows.count * rows.inner;
  if (n <= kParallelGrain) {
    walk_rows(rows, 0, n, body);
    return;
  }
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    walk_rows(rows, n * t / threads, n * (t + 1) / threads, body);
  }
}

// A strided copy, dst[i] = convert(src[i]), typed (the generic loop goes
// through a dtype switch and double for every element). convert: a lambda (a
// function pointer would be called per element).
template <typename Out, typename In, typename Convert>
void convert_strided(Out* out, const Layout& dl, const In* in, const Layout& sl, Convert convert) {
  for_each_row(dl, sl, [&](int64_t d0, int64_t ds, int64_t s0, int64_t ss, int64_t inner) {
    Out* d = out + d0;
    const In* s = in + s0;
    if (ds == 1 && ss == 1) {
      for (int64_t j = 0; j < inner; ++j) d[j] = convert(s[j]);
    } else if (ds == 1 && ss == 0) {  // a broadcast row (an expanded gradient): a vectorised fill
      std::fill(d, d + inner, convert(s[0]));
    } else {
      for (int64_t j = 0; j < inner; ++j) d[j * ds] = convert(s[j * ss]);
    }
  });
}

template <typename T>
void copy_typed(T* dst, const Layout& dl, const T* src, const Layout& sl) {
  convert_strided(dst, dl, src, sl, [](T v) { return v; });
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

// memcpy in one share per thread above kParallelBytes: one core's memcpy of a
// contiguous clone left the other thread waiting.
constexpr size_t kParallelBytes = size_t(1) << 18;

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes <= kParallelBytes) {
    std::memcpy(dst, src, bytes);
    return;
  }
#pragma omp parallel
  {
    const size_t threads = static_cast<size_t>(omp_get_num_threads()), t = static_cast<size_t>(omp_get_thread_num());
    const size_t share = (bytes / threads + 63) / 64 * 64;  // whole cache lines
    const size_t begin = std::min(bytes, t * share), end = t + 1 == threads ? bytes : std::min(bytes, begin + share);
    std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
  }
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
      copy_bytes(dst, src, static_cast<size_t>(n) * elem);
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
  if (src_dtype == DType::f32 && dst_dtype == DType::bf16) {  // autocast's rounding of a view (a transpose, a broadcast)
    convert_strided(static_cast<uint16_t*>(dst), dst_layout, static_cast<const float*>(src), src_layout,
                    [](float f) { return float_to_bf16_bits(f); });
    return;
  }
  if (src_dtype == DType::bf16 && dst_dtype == DType::f32) {
    convert_strided(static_cast<float*>(dst), dst_layout, static_cast<const uint16_t*>(src), src_layout,
                    [](uint16_t h) { return bf16_bits_to_float(h); });
    return;
  }
  for_each_row(dst_layout, src_layout, [&](int64_t d0, int64_t ds, int64_t s0, int64_t ss, int64_t inner) {
    for (int64_t j = 0; j < inner; ++j)
      store_from_double(dst, dst_dtype, d0 + j * ds, load_as_double(src, src_dtype, s0 + j * ss));
  });
}

void round_to_bf16_precision(float* dst, const float* src, int64_t n) {
  convert_contiguous(dst, src, n, [](float f) { return rounded_to_bf16<float>(f); });
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
