// Rotary position embedding, fused (LLaMA's apply_rotary_pos_emb with
// rotate_half): y = x * cos + cat(-x2, x1) * sin, x1 and x2 the halves of the
// head dim. One pass forward, one backward, instead of narrow, neg, cat, two
// multiplications and an addition, each with its own backward and copies.
//
// Layouts:
//   x, dx       [B, H, L, D] with element (b, h, l, d) at b*sb + h*sh + l*sl + d:
//               any row strides, the head dim contiguous (the transposed view of a
//               [B, L, H, D] projection, as LlamaAttention makes it)
//   y, dy       [B, H, L, D] contiguous
//   cos, sin    [B, L, D] contiguous (one table row per position id)
// Every element is written by one thread: results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace vlmc::kernels {

struct RotaryShape {
  int64_t batch, heads, length, head_dim;
  int64_t stride_b, stride_h, stride_l;  // of x and dx (elements)
};

namespace cpu {
template <typename T>
void rotary_forward(T* y, const T* x, const T* cos, const T* sin, const RotaryShape& s);
template <typename T>
void rotary_backward(T* dx, const T* dy, const T* cos, const T* sin, const RotaryShape& s);
}  // namespace cpu

}  // namespace vlmc::kernels
