#include "core/shape.h"

#include "core/error.h"

namespace vlmc {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  VLMC_CHECK(!__builtin_mul_overflow(a, b, &out), what, ": ", a, " x ", b, " does not fit in int64");
  return out;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) {
    VLMC_CHECK(d >= 0, "shape ", shape_str(shape), " has a negative dim");
    VLMC_CHECK(!__builtin_mul_overflow(n, d, &n), "shape ", shape_str(shape),
               " has more elements than int64 can count");
  }
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    if (i > 0)
      VLMC_CHECK(!__builtin_mul_overflow(s, shape[i] == 0 ? 1 : shape[i], &s), "shape ", shape_str(shape),
                 ": its strides do not fit in int64");
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t n = ndim == 0 ? 1 : ndim;  // a scalar accepts dim 0 and -1, as in PyTorch
  VLMC_CHECK(dim >= -n && dim < n, op, ": dim ", dim, " is out of range for a tensor of ", ndim,
             " dims");
  return dim < 0 ? dim + n : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    VLMC_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

kernels::Layout make_layout(const Shape& shape, const Shape& strides) {
  VLMC_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims), "tensor of ", shape.size(),
             " dims: kernels support at most ", kernels::kMaxDims);
  kernels::Layout l;
  l.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    l.shape[i] = shape[i];
    l.strides[i] = strides[i];
  }
  return l;
}

kernels::Layout broadcast_layout(const Shape& shape, const Shape& strides, const Shape& out_shape) {
  const size_t n = out_shape.size(), lead = n - shape.size();
  Shape s(n, 0);
  for (size_t i = lead; i < n; ++i) s[i] = shape[i - lead] == 1 ? 0 : strides[i - lead];
  return make_layout(out_shape, s);
}

}  // namespace vlmc
