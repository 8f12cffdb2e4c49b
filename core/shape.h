// Shapes, strides and the helpers every op uses to reason about them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/layout.h"

namespace vlmc {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[4,576,1024]"
// Element count; throws vlmc::Error naming the shape when a dim is negative
// or the product does not fit in int64 (a size from a file or a flag can be
// anything: it must never wrap into a small allocation).
int64_t shape_numel(const Shape& shape);
// Row-major strides; throws vlmc::Error when they do not fit in int64 (a shape
// with a zero dim has no elements but can still have overflowing strides).
Shape contiguous_strides(const Shape& shape);
// a * b for sizes >= 0; throws vlmc::Error "<what>: a x b does not fit in int64".
int64_t checked_mul(int64_t a, int64_t b, const char* what);

// Wraps a possibly negative dim into [0, ndim); throws vlmc::Error naming op otherwise.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

// NumPy/PyTorch broadcasting of two shapes; throws naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Kernel-facing layout of a view broadcast to out_shape (stride 0 on broadcast dims).
kernels::Layout broadcast_layout(const Shape& shape, const Shape& strides, const Shape& out_shape);
kernels::Layout make_layout(const Shape& shape, const Shape& strides);

}  // namespace vlmc
