// The [B, H, L, Dh] head layouts that rotary_embedding and scaled_dot_product_attention
// read and write in place on the CPU (kernels/rotary.h, kernels/attention.h).
//
// A module splits a projection's [B, L, H·Dh] output into heads with
// view({B, L, H, Dh}).transpose(1, 2): a [B, H, L, Dh] view whose rows lie H·Dh
// apart. Outputs and gradients made in that same layout flow back through the
// view (transpose, then reshape) without a copy.
#pragma once

#include "core/tensor.h"
#include "kernels/attention.h"

namespace vlmc {

// An uninitialised [B, H, L, Dh] CPU tensor laid out as a dense [B, L, H, Dh] one.
inline Tensor empty_projection_heads(const Shape& shape, DType dtype) {
  return Tensor::empty({shape[0], shape[2], shape[1], shape[3]}, dtype, Device::cpu()).transpose(1, 2);
}

// An uninitialised [B, H, L, Dh] CPU tensor laid out as a tensor of that shape
// and these strides was when it was a projection's heads; else contiguous.
inline Tensor empty_like_heads(const Shape& shape, const Shape& strides, DType dtype) {
  const int64_t H = shape[1], L = shape[2], D = shape[3];
  if (strides[3] == 1 && strides[1] == D && strides[2] == H * D && strides[0] == L * H * D)
    return empty_projection_heads(shape, dtype);
  return Tensor::empty(shape, dtype, Device::cpu());
}

// Where each [Dh] row of a [B, H, L, Dh] tensor starts (its head dim must be contiguous).
inline kernels::HeadStrides head_strides(const Tensor& t) { return {t.strides()[0], t.strides()[1], t.strides()[2]}; }

}  // namespace vlmc
