// SwiGLU, fused (LLaMA's MLP: down_proj(silu(gate_proj(x)) * up_proj(x))):
// y = silu(g) * u = g * sigmoid(g) * u. One pass forward, one backward,
// instead of silu and a product, each with its own pass, its own output
// tensor and its own saved operands:
//   forward   reads g and u, writes y (composed: two passes, and silu(g) kept
//             for the product's backward);
//   backward  reads dy, g and u, writes dg and du (composed: the product's
//             backward, then silu's, through an intermediate gradient).
// The expressions are the composed ops' own (the f32 sigmoid of
// kernels/cpu/fast_math.h, the f64 one of kernels/elementwise.h), in the same
// order, so that the fused op and silu(g) * u agree to rounding.
//
// Layouts: every buffer [n] contiguous. Each element is written by one thread:
// results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace vlmc::kernels::cpu {

template <typename T>
void swiglu_forward(T* y, const T* g, const T* u, int64_t n);

// dg and du may each be null where that input needs no gradient.
template <typename T>
void swiglu_backward(T* dg, T* du, const T* dy, const T* g, const T* u, int64_t n);

}  // namespace vlmc::kernels::cpu
