// CPU broadcasting binary kernels and their fused backward (see kernels/elementwise.h).
//
// After coalesce_dims, the output is walked in segments of rows along its last
// dim: one offset_of per segment finds both operands' starts, then the inner
// loop steps by each operand's last-dim stride (0 where it is broadcast), which
// the compiler vectorizes for the common unit/zero-stride cases. Long rows are
// cut into fixed segments so that even a single row (x * scalar) uses every thread.
#include "kernels/elementwise.h"

#include <algorithm>

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // below this, threads cost more than they save

struct Rows {
  int64_t n, len, count;  // elements, row length (last dim), rows
};

Rows rows_of(const Layout& l) {
  const int64_t n = l.numel();
  const int64_t len = l.ndim > 0 ? l.shape[l.ndim - 1] : 1;
  return {n, len, len > 0 ? n / len : 0};
}

int64_t last_stride(const Layout& l) { return l.ndim > 0 ? l.strides[l.ndim - 1] : 0; }

constexpr int64_t kSegment = 1 << 12;

// Calls f(row, j0, j1) for fixed pieces [j0, j1) of every row, in parallel.
template <typename F>
void for_each_segment(const Rows& rows, F&& f) {
  const int64_t seg = std::min(rows.len, kSegment);
  const int64_t per_row = (rows.len + seg - 1) / seg;
  const int64_t tasks = rows.count * per_row;
#pragma omp parallel for if (rows.n > kParallelGrain)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t j0 = (t % per_row) * seg;
    f(t / per_row, j0, std::min(rows.len, j0 + seg));
  }
}

template <BinaryOp Op, typename T>
void binary_impl(T* out, const T* a, const Layout& la, const T* b, const Layout& lb) {
  const Rows rows = rows_of(la);
  if (rows.n == 0) return;
  if (la.is_contiguous() && lb.is_contiguous()) {
#pragma omp parallel for if (rows.n > kParallelGrain)
    for (int64_t i = 0; i < rows.n; ++i) out[i] = binary_value<Op>(a[i], b[i]);
    return;
  }
  const int64_t sa = last_stride(la), sb = last_stride(lb), len = rows.len;
  for_each_segment(rows, [&](int64_t r, int64_t j0, int64_t j1) {
    const T* ar = a + la.offset_of(r * len) + j0 * sa;
    const T* br = b + lb.offset_of(r * len) + j0 * sb;
    T* o = out + r * len + j0;
    const int64_t m = j1 - j0;
    if (sa == 1 && sb == 0) {
      const T bv = *br;
      for (int64_t j = 0; j < m; ++j) o[j] = binary_value<Op>(ar[j], bv);
    } else if (sa == 0 && sb == 1) {
      const T av = *ar;
      for (int64_t j = 0; j < m; ++j) o[j] = binary_value<Op>(av, br[j]);
    } else if (sa == 1 && sb == 1) {
      for (int64_t j = 0; j < m; ++j) o[j] = binary_value<Op>(ar[j], br[j]);
    } else {
      for (int64_t j = 0; j < m; ++j) o[j] = binary_value<Op>(ar[j * sa], br[j * sb]);
    }
  });
}

template <BinaryOp Op, typename T>
void backward_impl(T* ga, T* gb, const T* g, const T* a, const Layout& la, const T* b,
                   const Layout& lb) {
  const Rows rows = rows_of(la);
  if (rows.n == 0) return;
  const int64_t sa = last_stride(la), sb = last_stride(lb), len = rows.len;
  for_each_segment(rows, [&](int64_t r, int64_t j0, int64_t j1) {
    const T* ar = a + la.offset_of(r * len);
    const T* br = b + lb.offset_of(r * len);
    const int64_t base = r * len;
    for (int64_t j = j0; j < j1; ++j) {
      T da, db;
      binary_grads<Op>(g[base + j], ar[j * sa], br[j * sb], da, db);
      if (ga) ga[base + j] = da;
      if (gb) gb[base + j] = db;
    }
  });
}

template <typename T>
void add_scaled_impl(T* self, const T* other, const Layout& lo, T alpha) {
  const Rows rows = rows_of(lo);
  if (rows.n == 0) return;
  if (lo.is_contiguous()) {
#pragma omp parallel for if (rows.n > kParallelGrain)
    for (int64_t i = 0; i < rows.n; ++i) self[i] += alpha * other[i];
    return;
  }
  const int64_t so = last_stride(lo), len = rows.len;
  for_each_segment(rows, [&](int64_t r, int64_t j0, int64_t j1) {
    const T* orow = other + lo.offset_of(r * len);
    T* srow = self + r * len;
    for (int64_t j = j0; j < j1; ++j) srow[j] += alpha * orow[j * so];
  });
}

}  // namespace

template <typename T>
void binary(BinaryOp op, T* out, const T* a, const Layout& la_in, const T* b, const Layout& lb_in) {
  Layout la = la_in, lb = lb_in;
  coalesce_dims(la, lb);
#define VLMC_CALL(OP) binary_impl<OP, T>(out, a, la, b, lb)
  VLMC_BINARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
}

template <typename T>
void binary_backward(BinaryOp op, T* grad_a, T* grad_b, const T* grad_out, const T* a,
                     const Layout& la_in, const T* b, const Layout& lb_in) {
  Layout la = la_in, lb = lb_in;
  coalesce_dims(la, lb);
#define VLMC_CALL(OP) backward_impl<OP, T>(grad_a, grad_b, grad_out, a, la, b, lb)
  VLMC_BINARY_OP_SWITCH(op, VLMC_CALL)
#undef VLMC_CALL
}

template <typename T>
void add_scaled_inplace(T* self, const T* other, const Layout& lo_in, double alpha) {
  // self is contiguous, so only other's strides limit the merge (the copy is a stand-in).
  Layout lo = lo_in, self_layout = lo_in;
  coalesce_dims(lo, self_layout);
  add_scaled_impl<T>(self, other, lo, static_cast<T>(alpha));
}

#define VLMC_INSTANTIATE(T)                                                                      \
  template void binary<T>(BinaryOp, T*, const T*, const Layout&, const T*, const Layout&);       \
  template void binary_backward<T>(BinaryOp, T*, T*, const T*, const T*, const Layout&, const T*, \
                                   const Layout&);                                               \
  template void add_scaled_inplace<T>(T*, const T*, const Layout&, double);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cpu
