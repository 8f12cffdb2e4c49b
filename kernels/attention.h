// Fused scaled dot-product attention: softmax(q·kᵀ·scale + masks)·v, forward and a
// flash-attention style backward that recomputes the probabilities from q, k and the
// per-row logsumexp saved by the forward (no [T, S] matrix is ever stored).
//
// Layouts (all contiguous, row major):
//   q, out, dq     [B, Hq, T, Dh]
//   k, v, dk, dv   [B, Hkv, S, Dh]     query head h reads KV head h / (Hq / Hkv)
//   lse, delta     [B, Hq, T]          logsumexp of the masked, scaled scores (-inf for a
//                                      row with no visible key); delta = rowsum(dO ⊙ O) scratch
//   key_mask       [B, S] i64 or null  nonzero = attend
// Key j is visible to query i when key_mask[b, j] != 0 and, if causal, j <= i + S - T.
// A row without a visible key outputs zeros and gets (and passes on) zero gradients.
//
// Every output element is written by exactly one thread (dk/dv rows are owned by their
// KV head's worker), so results do not depend on the thread count and use no atomics.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"

namespace vlmc::kernels {

struct AttentionShape {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, head_dim;
};

// The largest head_dim the CUDA kernels take (q and the accumulators live in registers).
constexpr int64_t kAttentionMaxHeadDimCuda = 128;

namespace cpu {
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask,
                       bool causal, double scale, const AttentionShape& s);
// dq/dk/dv are fully overwritten; delta is scratch of B*Hq*T elements.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale,
                        const AttentionShape& s);
}  // namespace cpu

namespace cuda {
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask,
                       bool causal, double scale, const AttentionShape& s, cudaStream_t stream);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale,
                        const AttentionShape& s, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
