// A decoder-only language model with LLaMA's architecture (Hugging Face's
// LlamaForCausalLM): token embedding, pre-norm decoder layers (RMSNorm,
// causal self-attention with rotary positions and grouped KV heads, RMSNorm,
// SwiGLU MLP), a final RMSNorm and a bias-free output head.
//
// Parameter names are Hugging Face's, so a LLaMA checkpoint loads with
// load_state_dict as it is:
//   model.embed_tokens.weight                          [V, D]
//   model.layers.{i}.self_attn.{q,k,v}_proj.weight     [H*Dh, D], [Hkv*Dh, D], [Hkv*Dh, D]
//   model.layers.{i}.self_attn.o_proj.weight           [D, H*Dh]
//   model.layers.{i}.mlp.{gate,up}_proj.weight         [I, D]
//   model.layers.{i}.mlp.down_proj.weight              [D, I]
//   model.layers.{i}.{input,post_attention}_layernorm.weight   [D]
//   model.norm.weight                                  [D]
//   lm_head.weight                                     [V, D] (absent when tied)
#pragma once

#include <memory>
#include <vector>

#include "core/ops.h"
#include "modules/layers.h"
#include "modules/llava.h"

namespace vlmc::nn {

class KVCache;  // modules/kv_cache.h

// The fields of Hugging Face's LlamaConfig that shape the model, under the
// same names and with the same defaults (LLaMA-7B's sizes).
struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // HF's None means num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // Throws vlmc::Error naming the first inconsistent field.
  void validate() const;
};

// LlamaRMSNorm: x / sqrt(mean(x²) + eps) * weight, weight initialised to ones.
class LlamaRMSNorm : public UnaryModule {
 public:
  LlamaRMSNorm(int64_t hidden_size, double eps);
  Tensor forward(const Tensor& x) override { return rms_norm(x, {weight.size(0)}, weight, eps_); }

  Tensor weight;

 private:
  double eps_;
};

// Rotary position embedding tables for position_ids i64 [B, L] (any device),
// each in [0, max_positions): cos and sin [B, 1, L, Dh] in `dtype` on
// `device`, where angle[b, l, j] = position_ids[b, l] * inv_freq[j mod Dh/2]
// and inv_freq[i] = 1 / theta^(2i / Dh) (HF's layout: the frequencies
// repeated twice along Dh). The table of every position below max_positions
// is computed once on the host in double, uploaded once per device, dtype,
// head dim and theta, and its rows picked by id on the device, so device ids
// are never read back. A position outside the range is an error naming
// position_ids (on CUDA, at the next synchronisation). No gradient.
struct RotaryTables {
  Tensor cos, sin;
};
RotaryTables rotary_tables(const Tensor& position_ids, int64_t head_dim, double theta, int64_t max_positions,
                           DType dtype, Device device);

// x [B, H, L, Dh] -> x * cos + rotate_half(x) * sin, with HF's rotate_half
// (cat(-x[..., Dh/2:], x[..., :Dh/2])): the rotary_embedding op, so the
// gradient reaches x.
Tensor apply_rotary(const Tensor& x, const RotaryTables& tables);

// The real tokens of a padded batch [B, L], for running the decoder's per-row
// work (projections, norms, MLP) on them alone (LlamaModel::pack_padding).
//
// The row count is rounded up to a multiple of kPackedRowMultiple: the products'
// shapes then take a few values over a run instead of one per real-token count,
// and oneDNN compiles a kernel for each new shape (about 0.3 ms, a dozen shapes
// a step; docs/perf.md). The extra rows copy a padding position: nothing reads
// their outputs, so their gradients are zero and add nothing to the weights'.
inline constexpr int64_t kPackedRowMultiple = 16;
struct PackedRows {
  Tensor rows;    // i64 [N]: b·L + t of each real token, in order, then copies of one
                  // padding position up to a multiple of kPackedRowMultiple rows
  Tensor padded;  // i64 [B·L]: each position's row of the packed tensor; a padding
                  // position takes row 0, whose copy only masked keys and unread
                  // query rows see. Undefined when `lengths` is set (not read there)
  int64_t batch = 0, length = 0;
  // On the CPU, when every sample's real tokens come first (right padding) and no
  // autocast runs: each sample's length, and the rotary tables of the packed rows
  // ([N, 1, 1, Dh]). Attention then reads and writes the packed rows in place
  // (scaled_dot_product_attention_packed) instead of moving q, k, v and its output
  // between the packed and padded layouts: ten gathers and ten scatters a step of the
  // main job's language model. Empty otherwise.
  std::vector<int64_t> lengths;
  RotaryTables rotary_rows;
};

// LlamaAttention: q/k/v/o projections without bias, rotary positions on q and
// k, then one fused causal attention over the padding mask.
class LlamaAttention : public Module {
 public:
  LlamaAttention(const LlamaConfig& config, Generator& gen);
  // x [B, L, D], key_padding_mask [B, L] or undefined -> [B, L, D]. With
  // `packed`, x is [N, D], the real tokens' rows: the projections run on them,
  // and only the attention sees the [B, L] layout -> [N, D].
  Tensor forward(const Tensor& x, const RotaryTables& rotary, const Tensor& key_padding_mask,
                 const PackedRows* packed = nullptr);
  // Generation: x [B, T, D] at positions cache.length().. (rotary holds their
  // rows); the new rotated keys and values go into layer `layer` of the cache,
  // and the T queries attend over all cached and new keys, causally within
  // the new block -> [B, T, D]. Does not advance the cache.
  Tensor forward_cached(const Tensor& x, const RotaryTables& rotary, KVCache& cache, int64_t layer);

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};

// LlamaMLP: down(silu(gate(x)) * up(x)), all without bias.
class LlamaMLP : public UnaryModule {
 public:
  LlamaMLP(const LlamaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

// One pre-norm decoder layer: x + attn(norm(x)), then h + mlp(norm(h)).
class LlamaDecoderLayer : public Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const RotaryTables& rotary, const Tensor& key_padding_mask,
                 const PackedRows* packed = nullptr);
  // The same with the attention's keys and values from / into the cache.
  Tensor forward_cached(const Tensor& x, const RotaryTables& rotary, KVCache& cache, int64_t layer);

  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
  std::shared_ptr<LlamaRMSNorm> input_layernorm, post_attention_layernorm;
};

// LlamaModel (HF's "model."): embeddings, the layers and the final norm; it
// returns the last hidden state.
class LlamaModel : public Module {
 public:
  LlamaModel(const LlamaConfig& config, Generator& gen);
  // inputs_embeds [B, L, D]; attention_mask [B, L] (1 = real token) or
  // undefined (all real); position_ids i64 [B, L] or undefined (0..L-1 in
  // every row) -> [B, L, D] after the final norm.
  Tensor forward(const Tensor& inputs_embeds, const Tensor& attention_mask, const Tensor& position_ids);
  // Generation (no autograd): inputs_embeds [B, T, D] continue the sequences
  // held by the cache (positions cache.length()..cache.length()+T-1, no
  // padding) -> [B, T, D] after the final norm; the cache then holds T more
  // positions. See LlamaForCausalLM::forward_cached.
  Tensor forward_cached(const Tensor& inputs_embeds, KVCache& cache);

  // nn.Embedding's state: weight [V, D], N(0, initializer_range).
  class Embedding : public Module {
   public:
    Embedding(int64_t num, int64_t dim, double init_std, Generator& gen);
    Tensor weight;
  };
  // nn.ModuleList: children named "0", "1", ...
  class Layers : public Module {
   public:
    void append(std::shared_ptr<LlamaDecoderLayer> layer);
    std::vector<std::shared_ptr<LlamaDecoderLayer>> items;
  };

  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<Layers> layers;
  std::shared_ptr<LlamaRMSNorm> norm;
  // Hugging Face's gradient_checkpointing_enable(): each decoder layer keeps
  // only its input, and its forward runs again in the backward
  // (core/checkpoint.h). The gradients are the same; a step costs one more
  // forward of the decoder.
  bool gradient_checkpointing = false;
  // Training with padded batches: where attention_mask has padding, every
  // decoder layer runs its projections, norms and MLP on the real tokens alone
  // ([N, D] rather than [B, L, D]); only the attention takes the [B, L] layout.
  // The real positions' outputs and every gradient are those of the padded
  // forward (up to the order of the products' sums); padding positions come
  // out as zeros, where Hugging Face computes values nothing reads. The main
  // job's stage-0 language model pads a third of its rows (docs/perf.md). The
  // packed rows are rounded up to a multiple of kPackedRowMultiple (PackedRows).
  bool pack_padding = false;

 private:
  Tensor forward_packed(const Tensor& inputs_embeds, const Tensor& attention_mask, const RotaryTables& rotary);
  // The layers (checkpointed when asked) and the final norm, on [B, L, D] or packed rows.
  Tensor decoder(const Tensor& inputs_embeds, const RotaryTables& rotary, const Tensor& attention_mask,
                 const PackedRows* packed);
  LlamaConfig config_;
};

// LlamaForCausalLM, as the LanguageModel LlavaModel drives. With
// tie_word_embeddings the head reads model.embed_tokens.weight and there is
// no lm_head parameter (as in HF's safetensors files of tied models, which
// omit the key), so each parameter appears once in parameters().
class LlamaForCausalLM : public LanguageModel {
 public:
  explicit LlamaForCausalLM(const LlamaConfig& config, Generator& gen = default_generator());

  Tensor embed_tokens() const override { return model->embed_tokens->weight; }
  // inputs_embeds [B, L, D], attention_mask [B, L], position_ids i64 [B, L]
  // (either may be undefined, see LlamaModel::forward) -> logits [B, L, V].
  Tensor forward(const Tensor& inputs_embeds, const Tensor& attention_mask,
                 const Tensor& position_ids) override;
  // The same from token ids i64 [B, L] (the embedding lookup first).
  Tensor forward_ids(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                     const Tensor& position_ids = Tensor());
  // The head's weight [V, D]: lm_head.weight, or the embedding table when tied.
  Tensor head_weight() const;

  // Generation with a KV cache (modules/kv_cache.h; make_kv_cache gives one
  // shaped for this model). inputs_embeds [B, T, D] are the next T tokens of
  // the B sequences the cache holds (all of equal length): their positions
  // continue from cache.length(), each query at absolute position p sees the
  // keys 0..p, and their keys and values are appended to the cache, whose
  // length grows by T. Returns logits [B, T, V], or [B, 1, V] of the last
  // position only when last_only (the head's GEMM over a prompt skipped).
  // Runs under NoGradGuard: nothing is recorded. The same logits as forward()
  // over the whole sequence, up to rounding. Errors: a cache of another
  // shape, dtype or device, T more positions than the cache has room for, or
  // a position at or beyond max_position_embeddings.
  Tensor forward_cached(const Tensor& inputs_embeds, KVCache& cache, bool last_only = false);

  const LlamaConfig& config() const { return config_; }

  std::shared_ptr<LlamaModel> model;  // "model"
  std::shared_ptr<Linear> lm_head;    // "lm_head"; null when tied

 private:
  LlamaConfig config_;
};

}  // namespace vlmc::nn
