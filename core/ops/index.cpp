// Joining, splitting and indexing: cat, stack, split, index_select, gather,
// where, masked_fill. Forward passes move elements of any dtype; gradients flow
// to f32/f64 inputs.
#include <algorithm>
#include <numeric>
#include <string>

#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/index.h"

namespace vlmc {
namespace {

int64_t product(const Shape& shape, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= shape[i];
  return p;
}

// True when `from` broadcasts to exactly `to` (NumPy rules, one direction).
bool broadcasts_to(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  const size_t lead = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i] != 1 && from[i] != to[lead + i]) return false;
  return true;
}

// Throws unless every index lies in [0, bound). The error names the first bad
// value in row-major order and the size of the indexed dim. On CUDA the check
// is deferred (check_index_bound in core/dispatch.h): the kernel writes the first bad
// position and its value into a record, the op goes on without waiting (the
// index kernels never read through a bad index), and the error is thrown at
// the next synchronisation.
void check_index_range(const char* op, const Tensor& index, int64_t bound, int64_t dim, const Tensor& x) {
  const std::string tensors = str("(x ", describe(x), ", index ", describe(index), ")");
  check_index_bound(index, bound, [op = std::string(op), bound, dim, tensors](int64_t value) {
    return str(op, ": index ", value, " is out of range for dim ", dim, " of size ", bound, " ", tensors);
  });
}

// The index as the kernels take it: i64, contiguous, validated, on x's device.
// An index on the CPU is checked on the host before it is copied to the GPU.
Tensor prepare_index(const char* op, const Tensor& index, const Tensor& x, int64_t dim) {
  check_dtype(op, "index", index, DType::i64);
  VLMC_CHECK(index.device() == x.device() || index.device().is_cpu(), op, ": index on ",
             index.device().str(), " but x on ", x.device().str(), " (x ", describe(x), ", index ",
             describe(index), ")");
  const Tensor contiguous = index.contiguous();
  check_index_range(op, contiguous, x.size(dim), dim, x);
  return contiguous.device() == x.device() ? contiguous : contiguous.to(x.device());
}

// Checks that tensors can be joined along d: same dtype and device, equal
// shapes except along d (or equal shapes outright when exact). Names the first
// mismatching tensor's position and both shapes.
void check_joinable(const char* op, const std::vector<Tensor>& tensors, int64_t d, bool exact) {
  const Tensor& first = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    VLMC_CHECK(t.defined(), op, ": tensor ", i, " is undefined");
    VLMC_CHECK(t.dtype() == first.dtype(), op, ": tensor ", i, " ", describe(t), " has dtype ",
               dtype_name(t.dtype()), " but tensor 0 ", describe(first), " has ", dtype_name(first.dtype()));
    VLMC_CHECK(t.device() == first.device(), op, ": tensor ", i, " ", describe(t), " is on ",
               t.device().str(), " but tensor 0 ", describe(first), " is on ", first.device().str());
    bool match = t.dim() == first.dim();
    for (int64_t k = 0; match && k < t.dim(); ++k)
      match = (k == d && !exact) || t.shape()[static_cast<size_t>(k)] == first.shape()[static_cast<size_t>(k)];
    if (exact) {
      VLMC_CHECK(match, op, ": tensor ", i, " has shape ", shape_str(t.shape()), " but tensor 0 has ",
                 shape_str(first.shape()), "; all shapes must be equal");
    } else {
      VLMC_CHECK(match, op, ": tensor ", i, " has shape ", shape_str(t.shape()), " but tensor 0 has ",
                 shape_str(first.shape()), "; shapes must match except in dim ", d);
    }
  }
}

Tensor cat_checked(const std::vector<Tensor>& tensors, int64_t d) {
  Shape out_shape = tensors[0].shape();
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  out_shape[static_cast<size_t>(d)] = 0;
  for (const Tensor& t : tensors) {
    sizes.push_back(t.size(d));
    out_shape[static_cast<size_t>(d)] += sizes.back();
  }
  // Each input is copied into its narrow slice of the output (copy_ handles
  // strided destinations and non-contiguous sources).
  Tensor out = Tensor::empty(out_shape, tensors[0].dtype(), tensors[0].device());
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i] > 0) out.narrow(d, offset, sizes[i]).copy_(tensors[i]);
    offset += sizes[i];
  }
  record(out, "cat", tensors, [d, sizes](const Tensor& g, const GradMask& needs) {
    std::vector<Tensor> grads(sizes.size());
    int64_t start = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (needs[i]) grads[i] = g.narrow(d, start, sizes[i]).contiguous();
      start += sizes[i];
    }
    return grads;
  });
  return out;
}

// gx = zeros(x_shape) with g: [outer, n, inner] added into rows index[j] of dim d.
Tensor index_add_into_zeros(const Tensor& g, int64_t d, const Tensor& index, const Shape& x_shape) {
  const Tensor gc = g.contiguous();
  Tensor gx = Tensor::zeros(x_shape, g.dtype(), g.device());
  const size_t du = static_cast<size_t>(d);
  const int64_t outer = product(x_shape, 0, du), size = x_shape[du];
  const int64_t inner = product(x_shape, du + 1, x_shape.size()), n = index.numel();
  if (g.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::index_add(gx.data_ptr(), gx.dtype(), gc.data_ptr(),
                                                index.data<int64_t>(), outer, size, inner, n,
                                                stream_of(gx)));
  } else {
    kernels::cpu::index_add(gx.data_ptr(), gx.dtype(), gc.data_ptr(), index.data<int64_t>(), outer,
                            size, inner, n);
  }
  return gx;
}

// Where gather reads x (shape, strides) at positions of an index of index_shape.
kernels::GatherGeometry gather_geometry(const Shape& index_shape, const Shape& x_shape, const Shape& x_strides,
                                        int64_t d) {
  Shape strides = x_strides;
  strides[static_cast<size_t>(d)] = 0;
  kernels::GatherGeometry g;
  g.x = make_layout(index_shape, strides);
  g.dim = static_cast<int>(d);
  g.x_dim_stride = x_strides[static_cast<size_t>(d)];
  g.x_dim_size = x_shape[static_cast<size_t>(d)];
  return g;
}

// gx = zeros(x_shape) with g (index's shape) added at the gathered positions.
Tensor scatter_add_into_zeros(const Tensor& g, int64_t d, const Tensor& index, const Shape& x_shape) {
  const Tensor gc = g.contiguous();
  Tensor gx = Tensor::zeros(x_shape, g.dtype(), g.device());
  const kernels::GatherGeometry geometry = gather_geometry(index.shape(), gx.shape(), gx.strides(), d);
  if (g.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::scatter_add(gx.data_ptr(), gx.dtype(), gc.data_ptr(),
                                                  index.data<int64_t>(), geometry, stream_of(gx)));
  } else {
    kernels::cpu::scatter_add(gx.data_ptr(), gx.dtype(), gc.data_ptr(), index.data<int64_t>(), geometry);
  }
  return gx;
}

}  // namespace

// ---- joining and splitting -----------------------------------------------------

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  VLMC_CHECK(!tensors.empty(), "cat: expected at least one tensor");
  VLMC_CHECK(tensors[0].defined(), "cat: tensor 0 is undefined");
  VLMC_CHECK(tensors[0].dim() > 0, "cat: tensor 0 ", describe(tensors[0]),
             " is a scalar; scalars cannot be concatenated (use stack)");
  const int64_t d = wrap_dim(dim, tensors[0].dim(), "cat");
  check_joinable("cat", tensors, d, /*exact=*/false);
  return cat_checked(tensors, d);
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  VLMC_CHECK(!tensors.empty(), "stack: expected at least one tensor");
  VLMC_CHECK(tensors[0].defined(), "stack: tensor 0 is undefined");
  const int64_t d = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  check_joinable("stack", tensors, d, /*exact=*/true);
  std::vector<Tensor> parts;
  parts.reserve(tensors.size());
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(d));
  return cat_checked(parts, d);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  VLMC_CHECK(x.dim() > 0, "split: cannot split the scalar ", describe(x));
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  const int64_t size = x.size(d);
  VLMC_CHECK(split_size > 0 || (split_size == 0 && size == 0), "split: split_size must be positive, got ",
             split_size, " for dim ", d, " of ", describe(x));
  if (size == 0) return {x.narrow(d, 0, 0)};
  std::vector<Tensor> parts;
  for (int64_t start = 0; start < size; start += split_size)
    parts.push_back(x.narrow(d, start, std::min(split_size, size - start)));
  return parts;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  VLMC_CHECK(x.dim() > 0, "split: cannot split the scalar ", describe(x));
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  const Shape sizes_shape(sizes.begin(), sizes.end());
  for (int64_t s : sizes)
    VLMC_CHECK(s >= 0, "split: negative size in ", shape_str(sizes_shape), " for ", describe(x));
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  VLMC_CHECK(total == x.size(d), "split: sizes ", shape_str(sizes_shape), " sum to ", total,
             " but dim ", d, " of ", describe(x), " has size ", x.size(d));
  std::vector<Tensor> parts;
  parts.reserve(sizes.size());
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(x.narrow(d, start, s));
    start += s;
  }
  return parts;
}

// ---- indexing -----------------------------------------------------------------------

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  VLMC_CHECK(x.defined() && index.defined(), "index_select: undefined input");
  VLMC_CHECK(x.dim() > 0, "index_select: x ", describe(x), " is a scalar");
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  check_dtype("index_select", "index", index, DType::i64);
  VLMC_CHECK(index.dim() == 1, "index_select: index ", describe(index), " must be 1-D (x ",
             describe(x), ")");
  const Tensor idx = prepare_index("index_select", index, x, d);

  // x: [outer, size, inner] -> out: [outer, n, inner]
  const Tensor xc = x.contiguous();
  const size_t du = static_cast<size_t>(d);
  const int64_t outer = product(x.shape(), 0, du), size = x.shape()[du];
  const int64_t inner = product(x.shape(), du + 1, x.shape().size()), n = idx.numel();
  Shape out_shape = x.shape();
  out_shape[du] = n;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::index_select(out.data_ptr(), x.dtype(), xc.data_ptr(),
                                                   idx.data<int64_t>(), outer, size, inner, n,
                                                   stream_of(out)));
  } else {
    kernels::cpu::index_select(out.data_ptr(), x.dtype(), xc.data_ptr(), idx.data<int64_t>(), outer,
                               size, inner, n);
  }
  record(out, "index_select", {x}, [d, idx, x_shape = x.shape()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{index_add_into_zeros(g, d, idx, x_shape)};
  });
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  VLMC_CHECK(x.defined() && index.defined(), "gather: undefined input");
  VLMC_CHECK(x.dim() > 0, "gather: x ", describe(x), " is a scalar");
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  check_dtype("gather", "index", index, DType::i64);
  VLMC_CHECK(index.dim() == x.dim(), "gather: index ", describe(index), " must have as many dims as x ",
             describe(x));
  for (int64_t k = 0; k < x.dim(); ++k)
    VLMC_CHECK(k == d || index.size(k) <= x.size(k), "gather: index ", shape_str(index.shape()),
               " is larger than x ", shape_str(x.shape()), " in dim ", k, " (only dim ", d, " may be)");
  const Tensor idx = prepare_index("gather", index, x, d);

  // out[i] = x[i with coordinate d replaced by index[i]]; x may be strided.
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  const kernels::GatherGeometry geometry = gather_geometry(idx.shape(), x.shape(), x.strides(), d);
  if (x.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::gather(out.data_ptr(), x.dtype(), x.data_ptr(),
                                             idx.data<int64_t>(), geometry, stream_of(out)));
  } else {
    kernels::cpu::gather(out.data_ptr(), x.dtype(), x.data_ptr(), idx.data<int64_t>(), geometry);
  }
  record(out, "gather", {x}, [d, idx, x_shape = x.shape()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{scatter_add_into_zeros(g, d, idx, x_shape)};
  });
  return out;
}

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  check_dtype("where", "condition", condition, DType::u8);
  VLMC_CHECK(a.defined() && b.defined(), "where: undefined input");
  check_same_device("where", {condition, a, b});
  check_same_dtype("where", {a, b});
  Shape out_shape;
  try {
    out_shape = broadcast_shapes(broadcast_shapes(condition.shape(), a.shape(), "where"), b.shape(), "where");
  } catch (const Error&) {
    throw Error(str("where: condition ", shape_str(condition.shape()), ", a ", shape_str(a.shape()),
                    " and b ", shape_str(b.shape()), " cannot be broadcast together"));
  }
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  const kernels::Layout cl = broadcast_layout(condition.shape(), condition.strides(), out_shape);
  const kernels::Layout al = broadcast_layout(a.shape(), a.strides(), out_shape);
  const kernels::Layout bl = broadcast_layout(b.shape(), b.strides(), out_shape);
  if (out.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::where(out.data_ptr(), out.dtype(), condition.data<uint8_t>(), cl,
                                            a.data_ptr(), al, b.data_ptr(), bl, stream_of(out)));
  } else {
    kernels::cpu::where(out.data_ptr(), out.dtype(), condition.data<uint8_t>(), cl, a.data_ptr(), al,
                        b.data_ptr(), bl);
  }
  // d/da = g where condition, d/db = g elsewhere; each summed back to its shape.
  record(out, "where", {a, b},
         [condition, a_shape = a.shape(), b_shape = b.shape()](const Tensor& g, const GradMask& needs) {
           const Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
           std::vector<Tensor> grads(2);
           if (needs[0]) grads[0] = sum_to(where(condition, g, zero), a_shape);
           if (needs[1]) grads[1] = sum_to(where(condition, zero, g), b_shape);
           return grads;
         });
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  VLMC_CHECK(x.defined(), "masked_fill: x is undefined");
  check_dtype("masked_fill", "mask", mask, DType::u8);
  check_same_device("masked_fill", {x, mask});
  VLMC_CHECK(broadcasts_to(mask.shape(), x.shape()), "masked_fill: mask ", shape_str(mask.shape()),
             " does not broadcast to x ", shape_str(x.shape()));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const kernels::Layout xl = make_layout(x.shape(), x.strides());
  const kernels::Layout ml = broadcast_layout(mask.shape(), mask.strides(), x.shape());
  if (x.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::masked_fill(out.data_ptr(), x.dtype(), x.data_ptr(), xl,
                                                  mask.data<uint8_t>(), ml, value, stream_of(out)));
  } else {
    kernels::cpu::masked_fill(out.data_ptr(), x.dtype(), x.data_ptr(), xl, mask.data<uint8_t>(), ml, value);
  }
  // The filled positions no longer depend on x.
  record(out, "masked_fill", {x}, [mask](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{masked_fill(g, mask, 0.0)};
  });
  return out;
}

}  // namespace vlmc
