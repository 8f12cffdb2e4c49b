// The key/value cache of a decoder's self-attention, for generation: each
// layer's rotated keys and its values of every position generated so far, so
// that a decode step projects only its new tokens and attends over the stored
// ones instead of recomputing the whole sequence.
//
// Layout, per layer: K and V [B, Hkv, capacity, Dh], allocated once at the
// full capacity (prompt + new tokens) and filled in place, position by
// position; positions 0..length()-1 hold data. Keys are stored after the
// rotary rotation (the rotation of a key depends only on its own position, so
// it never has to be redone). No autograd: the cache is for inference, and
// the cached forward runs under NoGradGuard.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace vlmc::nn {

class LlamaForCausalLM;

class KVCache {
 public:
  // Zeroed buffers for num_layers layers, each K and V [batch, kv_heads,
  // capacity, head_dim] in `dtype` on `device`. Every size must be positive
  // (num_layers may be 0).
  KVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
          DType dtype = DType::f32, Device device = Device::cpu());

  int64_t length() const { return length_; }      // positions filled (the next one's index)
  int64_t capacity() const { return capacity_; }  // positions allocated
  int64_t batch() const { return batch_; }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // Throws vlmc::Error naming the capacity when `tokens` more positions do not fit.
  void check_room(int64_t tokens) const;

  // Writes layer `layer`'s new keys and values k, v [B, Hkv, T, Dh] at
  // positions length()..length()+T-1 (in place, no reallocation) and returns
  // views [B, Hkv, length()+T, Dh] of that layer's positions 0..length()+T-1.
  // Does not move length(): every layer appends the same T positions, then
  // the caller calls advance(T) once.
  std::pair<Tensor, Tensor> append(int64_t layer, const Tensor& k, const Tensor& v);
  // Marks `tokens` more positions as filled (after every layer appended them).
  void advance(int64_t tokens);
  // Forgets every position (the buffers are kept for the next sequence).
  void reset() { length_ = 0; }

  // Layer `layer`'s whole buffers [B, Hkv, capacity, Dh].
  const Tensor& keys(int64_t layer) const;
  const Tensor& values(int64_t layer) const;
  // A key padding mask i64 [B, capacity] over the whole buffers: 1 at the
  // positions below `visible`, 0 beyond. A decode step attends over the
  // whole buffers under it, so the cached keys are never copied out (the
  // attention op reads K and V contiguous, and a view of the first positions
  // of every head is not). Kept here and changed in place, only where it
  // differs from the last call's: O(positions added) per step.
  const Tensor& key_mask(int64_t visible);

 private:
  std::vector<Tensor> keys_, values_;
  Tensor mask_;              // i64 [B, capacity], see key_mask
  int64_t mask_visible_ = 0;  // its leading ones
  int64_t batch_, kv_heads_, capacity_, head_dim_;
  DType dtype_;
  Device device_;
  int64_t length_ = 0;
};

// A cache shaped for `model` (its layers, KV heads and head dim; the device of
// its parameters, and their dtype, except f32 when the weights are a
// checkpoint's bf16 / f16, since the model then computes in f32) holding `capacity` positions for `batch`
// sequences. A capacity above the model's max_position_embeddings is an error
// (the rotary table has no row for the positions beyond it).
KVCache make_kv_cache(const LlamaForCausalLM& model, int64_t batch, int64_t capacity);

}  // namespace vlmc::nn
