// Fused scaled dot-product attention: softmax(q·kᵀ·scale + masks)·v, forward and a
// flash-attention style backward that recomputes the probabilities from q, k and the
// per-row logsumexp saved by the forward (no [T, S] matrix is stored), except on the
// CPU for short rows, where the forward keeps them (cpu::attention_forward's probs).
//
// Layouts (row major; on the CPU any HeadStrides, on CUDA contiguous):
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
  // The caller reads no output row after a batch's last visible key (query i
  // aligned with key i + S - T, as the causal mask) and passes zero gradients
  // there: a packed language model's right padding. The CPU kernels then skip
  // those rows (zeros out, lse -inf, zero dq: the rows of a fully masked
  // query); CUDA's compute them as usual.
  bool trailing_queries_unread = false;
};

// Where row i of head h of batch b of a [B, H, L, Dh] operand starts, in elements
// from its base pointer; the Dh elements of a row are contiguous. The CPU kernels
// take any such layout, so the heads of a projection's [B, L, H·Dh] output are
// used where they lie (head stride Dh, row stride H·Dh) rather than copied to
// [B, H, L, Dh] and back: eight copies per CLIP layer a training step, four per
// LLaMA layer.
//
// Packed rows (CPU only): row_start[b] is batch b's first row (batch unused), row i
// of batch b lies at row_start[b] + i of a [N, H·Dh] tensor, and the rows past a
// batch's computed ones (AttentionShape::trailing_queries_unread) do not exist in
// memory: the kernels never write there (no zero rows for unread queries or masked
// keys). Needs trailing_queries_unread, a key mask that is a prefix of ones per
// batch, and q_len == kv_len.
struct HeadStrides {
  int64_t batch = 0, head = 0, row = 0;
  const int64_t* row_start = nullptr;  // packed rows: batch b's first row
  bool packed() const { return row_start != nullptr; }
  int64_t at(int64_t b, int64_t h, int64_t i) const {
    return (packed() ? row_start[b] * row : b * batch) + h * head + i * row;
  }
  static HeadStrides contiguous(int64_t heads, int64_t len, int64_t dim) { return {heads * len * dim, len * dim, dim}; }
};

// The layouts of one CPU call. o is the forward's output and the backward's dout.
struct AttentionStrides {
  HeadStrides q, k, v, o, dq, dk, dv;
  static AttentionStrides contiguous(const AttentionShape& s) {
    const HeadStrides qs = HeadStrides::contiguous(s.q_heads, s.q_len, s.head_dim);
    const HeadStrides ks = HeadStrides::contiguous(s.kv_heads, s.kv_len, s.head_dim);
    return {qs, ks, ks, qs, qs, ks, ks};
  }
};

// The largest head_dim the CUDA kernels take (q and the accumulators live in registers).
constexpr int64_t kAttentionMaxHeadDimCuda = 128;

namespace cpu {
// probs (optional, [B, Hq, T, S] contiguous): the forward also writes P_ij = exp(s_ij -
// lse_i), bit for bit what the backward would recompute (0 at hidden keys and in
// fully masked rows), and the backward given it reads P there instead of recomputing
// q·kᵀ and the exps. Rows nobody reads, and the rows of a block the forward scores by
// dot products (fewer than 4 rows: other bits), are not written; the backward
// recomputes those. That costs B·Hq·T·S elements, so the op keeps it for short rows
// only (core/ops/attention.cpp).
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask,
                       bool causal, double scale, const AttentionShape& s, const AttentionStrides& st,
                       T* probs = nullptr);
// dq/dk/dv are fully overwritten; delta is scratch of B*Hq*T elements (contiguous, as lse).
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale,
                        const AttentionShape& s, const AttentionStrides& st, const T* probs = nullptr);
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
