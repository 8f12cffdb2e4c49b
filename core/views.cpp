// View ops: new shape/strides/offset over the same storage. Each records a
// backward that maps the view's gradient back to the source's shape.
#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace vlmc {
namespace {

Tensor make_view(const Tensor& src, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = src.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = src.dtype();
  return Tensor(std::move(impl));
}

// Fills in one -1 dim of a requested shape from numel; checks the total.
Shape infer_shape(const Shape& requested, int64_t numel, const char* op, const Shape& from) {
  Shape shape = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      VLMC_CHECK(infer_at < 0, op, ": only one dim may be -1 in ", shape_str(requested));
      infer_at = static_cast<int64_t>(i);
    } else {
      VLMC_CHECK(shape[i] >= 0, op, ": invalid dim ", shape[i], " in ", shape_str(requested));
      known = checked_mul(known, shape[i], op);
    }
  }
  if (infer_at >= 0) {
    VLMC_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(requested),
               " is invalid for input ", shape_str(from));
    shape[static_cast<size_t>(infer_at)] = numel / known;
  }
  VLMC_CHECK(shape_numel(shape) == numel, op, ": shape ", shape_str(requested),
             " is invalid for input ", shape_str(from), " of ", numel, " elements");
  return shape;
}

// Strides for viewing (shape, strides) as new_shape without a copy, or false
// when the memory layout does not allow it (PyTorch's computeStride).
bool view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape, Shape& out) {
  out.assign(new_shape.size(), 0);
  if (shape.empty() || shape_numel(shape) == 0) {  // scalars and empty tensors view freely
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= shape[static_cast<size_t>(d)];
    if (d == 0 || (shape[static_cast<size_t>(d - 1)] != 1 &&
                   strides[static_cast<size_t>(d - 1)] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[static_cast<size_t>(view_d)] == 1)) {
        out[static_cast<size_t>(view_d)] = view_numel * chunk_base_stride;
        view_numel *= new_shape[static_cast<size_t>(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = strides[static_cast<size_t>(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

Tensor recorded_view(const Tensor& src, Shape shape, Shape strides, int64_t offset, const char* op,
                     BackwardFn backward) {
  Tensor out = make_view(src, std::move(shape), std::move(strides), offset);
  record(out, op, {src}, std::move(backward));
  return out;
}

BackwardFn reshape_back(const Shape& to) {
  return [to](const Tensor& g, const GradMask&) { return std::vector<Tensor>{g.reshape(to)}; };
}

}  // namespace

Tensor Tensor::view(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), "view", this->shape());
  Shape new_strides;
  VLMC_CHECK(view_strides(this->shape(), strides(), shape, new_strides), "view: cannot view ",
             describe(*this), " with strides ", shape_str(strides()), " as ", shape_str(shape),
             " without a copy; use reshape()");
  return recorded_view(*this, shape, new_strides, offset(), "view", reshape_back(this->shape()));
}

Tensor Tensor::reshape(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel(), "reshape", this->shape());
  Shape new_strides;
  if (view_strides(this->shape(), strides(), shape, new_strides))
    return recorded_view(*this, shape, new_strides, offset(), "reshape", reshape_back(this->shape()));
  return clone().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  const int64_t n = dim();
  VLMC_CHECK(static_cast<int64_t>(dims.size()) == n, "permute: ", dims.size(),
             " dims given for tensor ", describe(*this));
  Shape shape(static_cast<size_t>(n)), new_strides(static_cast<size_t>(n));
  std::vector<int64_t> inverse(static_cast<size_t>(n), -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t d = wrap_dim(dims[static_cast<size_t>(i)], n, "permute");
    VLMC_CHECK(inverse[static_cast<size_t>(d)] < 0, "permute: dim ", d, " repeated in ",
               shape_str(Shape(dims.begin(), dims.end())));
    inverse[static_cast<size_t>(d)] = i;
    shape[static_cast<size_t>(i)] = this->shape()[static_cast<size_t>(d)];
    new_strides[static_cast<size_t>(i)] = strides()[static_cast<size_t>(d)];
  }
  return recorded_view(*this, shape, new_strides, offset(), "permute",
                       [inverse](const Tensor& g, const GradMask&) {
                         return std::vector<Tensor>{g.permute(inverse)};
                       });
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  std::vector<int64_t> dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<size_t>(wrap_dim(dim0, dim(), "transpose"))],
            dims[static_cast<size_t>(wrap_dim(dim1, dim(), "transpose"))]);
  return permute(dims);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  VLMC_CHECK(dim() > 0, "narrow: cannot narrow a scalar");
  d = wrap_dim(d, dim(), "narrow");
  const int64_t size = shape()[static_cast<size_t>(d)];
  VLMC_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: [", start, ", ",
             start + length, ") is out of range for dim ", d, " of ", describe(*this));
  Shape shape = this->shape();
  shape[static_cast<size_t>(d)] = length;
  const Shape source_shape = this->shape();
  return recorded_view(*this, shape, strides(), offset() + start * strides()[static_cast<size_t>(d)],
                       "narrow", [source_shape, d, start, length](const Tensor& g, const GradMask&) {
                         Tensor full = Tensor::zeros(source_shape, g.dtype(), g.device());
                         full.narrow(d, start, length).copy_(g);
                         return std::vector<Tensor>{full};
                       });
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  VLMC_CHECK(dim() > 0, "slice: cannot slice a scalar");
  d = wrap_dim(d, dim(), "slice");
  const int64_t size = shape()[static_cast<size_t>(d)];
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  return narrow(d, start, end - start);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t size = shape()[static_cast<size_t>(d)];
  VLMC_CHECK(index >= -size && index < size, "select: index ", index, " is out of range for dim ",
             d, " of ", describe(*this));
  if (index < 0) index += size;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& requested) const {
  VLMC_CHECK(requested.size() >= shape().size(), "expand: cannot expand ", describe(*this), " to ",
             shape_str(requested), " (fewer dims)");
  const size_t lead = requested.size() - shape().size();
  Shape shape(requested.size()), new_strides(requested.size());
  for (size_t i = 0; i < requested.size(); ++i) {
    const int64_t have = i < lead ? 1 : this->shape()[i - lead];
    const int64_t stride = i < lead ? 0 : strides()[i - lead];
    const int64_t want = requested[i] == -1 ? have : requested[i];
    VLMC_CHECK(!(i < lead && requested[i] == -1), "expand: -1 is not allowed for the new leading dim ",
               i, " in ", shape_str(requested));
    VLMC_CHECK(want >= 0 && (want == have || have == 1), "expand: cannot expand ", describe(*this), " to ",
               shape_str(requested), " (dim ", i, ")");
    shape[i] = want;
    new_strides[i] = (want == have) ? stride : 0;
  }
  const Shape source_shape = this->shape();
  return recorded_view(*this, shape, new_strides, offset(), "expand",
                       [source_shape](const Tensor& g, const GradMask&) {
                         return std::vector<Tensor>{sum_to(g, source_shape)};
                       });
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[static_cast<size_t>(d)] != 1) return *this;
  Shape shape = this->shape(), new_strides = strides();
  shape.erase(shape.begin() + d);
  new_strides.erase(new_strides.begin() + d);
  return recorded_view(*this, shape, new_strides, offset(), "squeeze", reshape_back(this->shape()));
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape shape = this->shape(), new_strides = strides();
  const int64_t stride =
      d < dim() ? strides()[static_cast<size_t>(d)] * this->shape()[static_cast<size_t>(d)] : 1;
  shape.insert(shape.begin() + d, 1);
  new_strides.insert(new_strides.begin() + d, stride);
  return recorded_view(*this, shape, new_strides, offset(), "unsqueeze", reshape_back(this->shape()));
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  VLMC_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " is after end_dim ", end_dim);
  Shape shape;
  for (int64_t i = 0; i < start_dim; ++i) shape.push_back(this->shape()[static_cast<size_t>(i)]);
  int64_t merged = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) merged *= this->shape()[static_cast<size_t>(i)];
  shape.push_back(merged);
  for (int64_t i = end_dim + 1; i < dim(); ++i) shape.push_back(this->shape()[static_cast<size_t>(i)]);
  return reshape(shape);
}

}  // namespace vlmc
