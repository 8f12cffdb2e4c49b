#include "modules/kv_cache.h"

#include "core/autograd.h"
#include "core/error.h"
#include "core/shape.h"
#include "modules/llama.h"

namespace vlmc::nn {

KVCache::KVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                 DType dtype, Device device)
    : batch_(batch), kv_heads_(kv_heads), capacity_(capacity), head_dim_(head_dim), dtype_(dtype), device_(device) {
  VLMC_CHECK(num_layers >= 0 && batch > 0 && kv_heads > 0 && capacity > 0 && head_dim > 0,
             "KVCache: num_layers ", num_layers, " must be >= 0 and batch ", batch, ", kv_heads ", kv_heads,
             ", capacity ", capacity, ", head_dim ", head_dim, " positive");
  const Shape shape{batch, kv_heads, capacity, head_dim};
  keys_.reserve(static_cast<size_t>(num_layers));
  values_.reserve(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i) {
    keys_.push_back(Tensor::zeros(shape, dtype, device));
    values_.push_back(Tensor::zeros(shape, dtype, device));
  }
  mask_ = Tensor::zeros({batch, capacity}, DType::i64, device);
}

void KVCache::check_room(int64_t tokens) const {
  VLMC_CHECK(tokens >= 0, "KVCache: cannot add ", tokens, " positions");
  VLMC_CHECK(length_ + tokens <= capacity_, "KVCache: ", tokens, " more positions after the ", length_,
             " cached exceed the cache's capacity of ", capacity_,
             " (make the cache with capacity >= prompt length + max_new_tokens)");
}

std::pair<Tensor, Tensor> KVCache::append(int64_t layer, const Tensor& k, const Tensor& v) {
  VLMC_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " outside [0, ", num_layers(), ")");
  VLMC_CHECK(k.dim() == 4 && k.shape() == v.shape() && k.size(0) == batch_ && k.size(1) == kv_heads_ &&
                 k.size(3) == head_dim_,
             "KVCache: keys ", shape_str(k.shape()), " and values ", shape_str(v.shape()), " must both be [B, Hkv, T, Dh] = [",
             batch_, ",", kv_heads_, ",T,", head_dim_, "]");
  const int64_t t = k.size(2);
  check_room(t);
  NoGradGuard no_grad;  // the buffers never join a graph
  Tensor& keys = keys_[static_cast<size_t>(layer)];
  Tensor& values = values_[static_cast<size_t>(layer)];
  // [B, Hkv, T, Dh] into positions length..length+T-1: a strided in-place copy.
  keys.narrow(2, length_, t).copy_(k);
  values.narrow(2, length_, t).copy_(v);
  return {keys.narrow(2, 0, length_ + t), values.narrow(2, 0, length_ + t)};
}

void KVCache::advance(int64_t tokens) {
  check_room(tokens);
  length_ += tokens;
}

const Tensor& KVCache::keys(int64_t layer) const {
  VLMC_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " outside [0, ", num_layers(), ")");
  return keys_[static_cast<size_t>(layer)];
}

const Tensor& KVCache::values(int64_t layer) const {
  VLMC_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " outside [0, ", num_layers(), ")");
  return values_[static_cast<size_t>(layer)];
}

const Tensor& KVCache::key_mask(int64_t visible) {
  VLMC_CHECK(visible >= 0 && visible <= capacity_, "KVCache: key_mask over ", visible,
             " positions, outside the capacity ", capacity_);
  NoGradGuard no_grad;
  if (visible > mask_visible_) mask_.narrow(1, mask_visible_, visible - mask_visible_).fill_(1);
  if (visible < mask_visible_) mask_.narrow(1, visible, mask_visible_ - visible).fill_(0);
  mask_visible_ = visible;
  return mask_;
}

KVCache make_kv_cache(const LlamaForCausalLM& model, int64_t batch, int64_t capacity) {
  const LlamaConfig& c = model.config();
  VLMC_CHECK(capacity <= c.max_position_embeddings, "KVCache: capacity ", capacity,
             " exceeds the model's max_position_embeddings ", c.max_position_embeddings,
             " (prompt length + max_new_tokens must fit in it)");
  // The keys and values are activations: f32 when the weights are kept in a
  // checkpoint's bf16 / f16 (the model computes in f32 then), else the weights' dtype.
  const Tensor w = model.head_weight();
  const DType dtype = w.dtype() == DType::bf16 || w.dtype() == DType::f16 ? DType::f32 : w.dtype();
  return KVCache(c.num_hidden_layers, batch, c.num_key_value_heads, capacity, c.head_dim(), dtype, w.device());
}

}  // namespace vlmc::nn
