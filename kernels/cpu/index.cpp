// CPU indexing kernels (see kernels/index.h). The oracle for the CUDA ones.
//
// Forward kernels only move elements, so they run on unsigned integers of the
// element's width and serve every dtype. The accumulating kernels split work
// so that each destination element is summed by exactly one thread, in index
// order: results do not depend on the thread count.
#include "kernels/index.h"
#include "kernels/type_dispatch.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/load_store.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // elements below which threads cost more than they save
constexpr int64_t kInnerChunk = 256;          // index_add: inner elements one task sums

// The layout without dim: the "lines" along dim that gather/scatter_add walk.
Layout drop_dim(const Layout& l, int dim) {
  Layout out;
  out.ndim = l.ndim - 1;
  for (int d = 0, k = 0; d < l.ndim; ++d) {
    if (d == dim) continue;
    out.shape[k] = l.shape[d];
    out.strides[k] = l.strides[d];
    ++k;
  }
  return out;
}

// l's shape with contiguous (row-major) strides.
Layout contiguous_like(const Layout& l) {
  Layout out = l;
  int64_t s = 1;
  for (int d = l.ndim - 1; d >= 0; --d) {
    out.strides[d] = s;
    s *= std::max<int64_t>(l.shape[d], 1);
  }
  return out;
}

}  // namespace

void find_out_of_range(int64_t* first_bad, const int64_t* index, const Layout& layout, int64_t bound) {
  const int64_t n = layout.numel();
  const bool contiguous = layout.is_contiguous();
  *first_bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = index[contiguous ? i : layout.offset_of(i)];
    if (v < 0 || v >= bound) {
      *first_bad = i;
      return;
    }
  }
}

void index_select(void* out, DType dtype, const void* x, const int64_t* index, int64_t outer,
                  int64_t size, int64_t inner, int64_t n) {
  const int64_t rows = outer * n;
  if (rows == 0 || inner == 0) return;
  const size_t row_bytes = static_cast<size_t>(inner) * dtype_size(dtype);
  const char* src = static_cast<const char*>(x);
  char* dst = static_cast<char*>(out);
  // One output row [inner] per iteration: a memcpy from the selected input row.
#pragma omp parallel for if (rows * inner > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / n, j = r % n;
    std::memcpy(dst + static_cast<size_t>(r) * row_bytes,
                src + static_cast<size_t>(o * size + index[j]) * row_bytes, row_bytes);
  }
}

void index_add(void* dst, DType dtype, const void* src, const int64_t* index, int64_t outer,
               int64_t size, int64_t inner, int64_t n) {
  if (outer == 0 || inner == 0 || n == 0) return;
  by_float("index_add", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* d = static_cast<T*>(dst);
    const T* s = static_cast<const T*>(src);
    // Task (o, chunk) owns dst[o, :, chunk]: every index j lands in it, so no
    // two threads ever add into the same element, and j runs in order.
    const int64_t chunks = (inner + kInnerChunk - 1) / kInnerChunk;
    const int64_t tasks = outer * chunks;
#pragma omp parallel for if (outer * n * inner > kParallelGrain)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t o = t / chunks;
      const int64_t begin = (t % chunks) * kInnerChunk;
      const int64_t end = std::min(begin + kInnerChunk, inner);
      for (int64_t j = 0; j < n; ++j) {
        T* drow = d + (o * size + index[j]) * inner;
        const T* srow = s + (o * n + j) * inner;
        for (int64_t k = begin; k < end; ++k) drow[k] += srow[k];
      }
    }
  });
}

void gather(void* out, DType dtype, const void* x, const int64_t* index, const GatherGeometry& g) {
  const int64_t n = g.x.numel();
  if (n == 0) return;
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out);
    const T* src = static_cast<const T*>(x);
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = src[g.x.offset_of(i) + index[i] * g.x_dim_stride];
  });
}

void scatter_add(void* dst, DType dtype, const void* src, const int64_t* index, const GatherGeometry& g) {
  if (g.x.numel() == 0) return;
  by_float("scatter_add", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* d = static_cast<T*>(dst);
    const T* s = static_cast<const T*>(src);
    // One line along dim per task. Lines differ in some other coordinate, and
    // so do the dst elements they reach: each dst element has one owner.
    const Layout index_layout = contiguous_like(g.x);
    const Layout dst_lines = drop_dim(g.x, g.dim);
    const Layout index_lines = drop_dim(index_layout, g.dim);
    const int64_t lines = dst_lines.numel();
    const int64_t len = g.x.shape[g.dim];
    const int64_t step = index_layout.strides[g.dim];
#pragma omp parallel for if (lines * len > kParallelGrain)
    for (int64_t c = 0; c < lines; ++c) {
      const int64_t dbase = dst_lines.offset_of(c);
      const int64_t ibase = index_lines.offset_of(c);
      for (int64_t j = 0; j < len; ++j) {
        const int64_t i = ibase + j * step;
        d[dbase + index[i] * g.x_dim_stride] += s[i];
      }
    }
  });
}

void where(void* out, DType dtype, const uint8_t* cond, const Layout& cl, const void* a,
           const Layout& al, const void* b, const Layout& bl) {
  const int64_t n = cl.numel();
  if (n == 0) return;
  const bool contiguous = cl.is_contiguous() && al.is_contiguous() && bl.is_contiguous();
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out);
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    if (contiguous) {
#pragma omp parallel for if (n > kParallelGrain)
      for (int64_t i = 0; i < n; ++i) o[i] = cond[i] ? pa[i] : pb[i];
      return;
    }
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i)
      o[i] = cond[cl.offset_of(i)] ? pa[al.offset_of(i)] : pb[bl.offset_of(i)];
  });
}

void masked_fill(void* out, DType dtype, const void* x, const Layout& xl, const uint8_t* mask,
                 const Layout& ml, double value) {
  const int64_t n = xl.numel();
  if (n == 0) return;
  const bool contiguous = xl.is_contiguous() && ml.is_contiguous();
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    // The fill value converted once to dtype, then moved as raw bits.
    T fill;
    {
      alignas(8) unsigned char bytes[8] = {};
      store_from_double(bytes, dtype, 0, value);
      std::memcpy(&fill, bytes, sizeof(T));
    }
    T* o = static_cast<T*>(out);
    const T* px = static_cast<const T*>(x);
    if (contiguous) {
#pragma omp parallel for if (n > kParallelGrain)
      for (int64_t i = 0; i < n; ++i) o[i] = mask[i] ? fill : px[i];
      return;
    }
    // Row by row where both operands' last dim is unit-strided or broadcast
    // (the attention mask [T, S] over scores [B, H, T, S], a transposed
    // view's rows): the index arithmetic once per row, not per element.
    const int last = xl.ndim - 1;
    const int64_t width = last >= 0 ? xl.shape[last] : 1;
    const int64_t xs = last >= 0 ? xl.strides[last] : 1, ms = last >= 0 ? ml.strides[last] : 1;
    if (width > 1 && (xs == 1 || xs == 0) && (ms == 1 || ms == 0)) {
      const int64_t rows = n / width;
#pragma omp parallel for if (n > kParallelGrain)
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* m = mask + ml.offset_of(r * width);
        const T* in = px + xl.offset_of(r * width);
        T* __restrict dst = o + r * width;
        for (int64_t j = 0; j < width; ++j) dst[j] = m[j * ms] ? fill : in[j * xs];
      }
      return;
    }
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = mask[ml.offset_of(i)] ? fill : px[xl.offset_of(i)];
  });
}

}  // namespace vlmc::kernels::cpu
