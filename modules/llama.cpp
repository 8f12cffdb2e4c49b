#include "modules/llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/shape.h"
#include "modules/kv_cache.h"

namespace vlmc::nn {

namespace {

// HF's _init_weights: N(0, initializer_range) for every Linear and Embedding.
void normal_init(Tensor& weight, double init_std, Generator& gen) {
  if (!gen.fills()) return;  // Generator::unfilled(): a checkpoint is about to overwrite it
  Tensor w = Tensor::randn(weight.shape(), gen);
  mul_(w, init_std);
  weight = w.set_requires_grad(true);
}

std::shared_ptr<Linear> projection(int64_t in, int64_t out, double init_std, Generator& gen) {
  auto lin = std::make_shared<Linear>(in, out, /*bias=*/false, gen);
  normal_init(lin->weight, init_std, gen);
  return lin;
}

}  // namespace

// ---- config -------------------------------------------------------------------------------

void LlamaConfig::validate() const {
  VLMC_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_hidden_layers >= 0,
             "LlamaConfig: sizes must be positive, got vocab_size ", vocab_size, " hidden_size ",
             hidden_size, " intermediate_size ", intermediate_size, " num_hidden_layers ", num_hidden_layers);
  VLMC_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
             "LlamaConfig: hidden_size ", hidden_size, " must be a multiple of num_attention_heads ",
             num_attention_heads);
  VLMC_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
             "LlamaConfig: num_attention_heads ", num_attention_heads,
             " must be a multiple of num_key_value_heads ", num_key_value_heads);
  VLMC_CHECK(head_dim() % 2 == 0, "LlamaConfig: the head dim ", head_dim(),
             " (hidden_size / num_attention_heads) must be even for rotary positions");
  VLMC_CHECK(rms_norm_eps > 0 && rope_theta > 0 && max_position_embeddings > 0,
             "LlamaConfig: rms_norm_eps ", rms_norm_eps, ", rope_theta ", rope_theta,
             " and max_position_embeddings ", max_position_embeddings, " must be positive");
}

// ---- norm and rotary ----------------------------------------------------------------------

LlamaRMSNorm::LlamaRMSNorm(int64_t hidden_size, double eps) : eps_(eps) {
  weight = Tensor::ones({hidden_size});
  register_parameter("weight", &weight);
}

namespace {

// HF's inv_freq: theta^(-2i / Dh) for i < Dh / 2.
std::vector<double> inverse_frequencies(int64_t head_dim, double theta) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  return inv_freq;
}

// The cos and sin of every position below `length`, [length, Dh] in `dtype`
// on `device`: computed on the host and uploaded once per (device, dtype,
// head dim, theta, length), so that a forward never reads its position ids
// back to the host (they live on the device under LLaVA).
RotaryTables position_table(int64_t length, int64_t head_dim, double theta, DType dtype, Device device) {
  using Key = std::tuple<int, int, int, int64_t, double, int64_t>;
  static std::mutex mutex;
  static auto* tables = new std::map<Key, RotaryTables>();  // never destroyed: device tensors outlive static teardown
  const Key key{static_cast<int>(device.type), device.index, static_cast<int>(dtype), head_dim, theta, length};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = tables->find(key);
  if (it != tables->end()) return it->second;
  // In double, each value rounded to the model's dtype once, by the conversion below.
  const std::vector<double> inv_freq = inverse_frequencies(head_dim, theta);
  const int64_t half = head_dim / 2;
  std::vector<double> c(static_cast<size_t>(length * head_dim)), s(c.size());
  for (int64_t p = 0; p < length; ++p)
    for (int64_t j = 0; j < head_dim; ++j) {
      const double angle = static_cast<double>(p) * inv_freq[j % half];  // emb = cat(freqs, freqs)
      c[p * head_dim + j] = std::cos(angle);
      s[p * head_dim + j] = std::sin(angle);
    }
  const Shape shape{length, head_dim};
  RotaryTables table{Tensor::from_vector(c, shape).to(device, dtype), Tensor::from_vector(s, shape).to(device, dtype)};
  return tables->emplace(key, table).first->second;
}

}  // namespace

RotaryTables rotary_tables(const Tensor& position_ids, int64_t head_dim, double theta, int64_t length, DType dtype,
                           Device device) {
  VLMC_CHECK(position_ids.dim() == 2 && position_ids.dtype() == DType::i64,
             "rotary_tables: position_ids ", shape_str(position_ids.shape()), " must be i64 [B, L]");
  VLMC_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary_tables: head dim ", head_dim, " must be even");
  const auto message = [length, shape = shape_str(position_ids.shape())](int64_t position) {
    return str("rotary_tables: position_ids ", shape, " hold position ", position, ", outside [0, ", length,
               ") (max_position_embeddings ", length, ")");
  };
  Tensor ids = position_ids.contiguous();
  check_index_bound(ids, length, message);
  if (ids.device() != device) ids = ids.to(device);  // an upload: no host wait
  const RotaryTables table = position_table(length, head_dim, theta, dtype, device);
  // [B, L, Dh] -> [B, 1, L, Dh]: the singleton broadcasts over the heads.
  return {embedding(table.cos, ids).unsqueeze(1), embedding(table.sin, ids).unsqueeze(1)};
}


Tensor apply_rotary(const Tensor& x, const RotaryTables& tables) {
  return rotary_embedding(x, tables.cos, tables.sin);  // x [B, H, L, Dh]
}

// ---- attention and MLP --------------------------------------------------------------------

LlamaAttention::LlamaAttention(const LlamaConfig& config, Generator& gen)
    : num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim()) {
  const int64_t d = config.hidden_size;
  const double init_std = config.initializer_range;
  q_proj = register_module("q_proj", projection(d, num_heads_ * head_dim_, init_std, gen));
  k_proj = register_module("k_proj", projection(d, num_kv_heads_ * head_dim_, init_std, gen));
  v_proj = register_module("v_proj", projection(d, num_kv_heads_ * head_dim_, init_std, gen));
  o_proj = register_module("o_proj", projection(num_heads_ * head_dim_, d, init_std, gen));
}

Tensor LlamaAttention::forward(const Tensor& x, const RotaryTables& rotary, const Tensor& key_padding_mask,
                               const PackedRows* packed) {
  // x [B, L, D], or [N, D] packed
  if (packed != nullptr && !packed->lengths.empty()) {
    // x [N, D] packed rows; the projections' [N, H·Dh] rows are read in place.
    const int64_t n = x.size(0);
    auto rotated = [&](const Tensor& t, int64_t h) {  // each row its own position: [N, h, 1, Dh] heads
      return apply_rotary(t.view({n, 1, h, head_dim_}).transpose(1, 2), packed->rotary_rows)
          .transpose(1, 2)
          .reshape({n, h * head_dim_});
    };
    const Tensor q = rotated(q_proj->forward(x), num_heads_);
    const Tensor k = rotated(k_proj->forward(x), num_kv_heads_);
    const Tensor attn = scaled_dot_product_attention_packed(q, k, v_proj->forward(x), packed->lengths, packed->length,
                                                            num_heads_, num_kv_heads_);
    return o_proj->forward(attn);  // [N, D]
  }
  const int64_t b = packed ? packed->batch : x.size(0), l = packed ? packed->length : x.size(1);
  // [B, L, H*Dh] (or its N real rows, put back in place) -> [B, H, L, Dh]
  auto heads = [&](const Tensor& t, int64_t h) {
    const Tensor padded = packed ? index_select(t, 0, packed->padded) : t;
    return padded.view({b, l, h, head_dim_}).transpose(1, 2);
  };
  const Tensor q = apply_rotary(heads(q_proj->forward(x), num_heads_), rotary);
  const Tensor k = apply_rotary(heads(k_proj->forward(x), num_kv_heads_), rotary);
  const Tensor v = heads(v_proj->forward(x), num_kv_heads_);  // read in place on the CPU
  // The op maps query head h to KV head h / (H/Hkv), as HF's repeat_kv.
  // Packed, the rows after a sample's last token are never taken back (right
  // padding): the op may skip them.
  const Tensor attn = scaled_dot_product_attention(q, k, v, key_padding_mask, /*causal=*/true, std::nullopt,
                                                   /*trailing_queries_unread=*/packed != nullptr);
  // [B, H, L, Dh] -> [B, L, H*Dh] (or its real rows [N, H*Dh])
  const Tensor out = attn.transpose(1, 2).reshape({b, l, num_heads_ * head_dim_});
  return o_proj->forward(packed ? index_select(out.view({b * l, num_heads_ * head_dim_}), 0, packed->rows) : out);
}

Tensor LlamaAttention::forward_cached(const Tensor& x, const RotaryTables& rotary, KVCache& cache, int64_t layer) {
  // x [B, T, D]
  const int64_t b = x.size(0), t = x.size(1);
  auto heads = [&](const Tensor& y, int64_t h) { return y.view({b, t, h, head_dim_}).transpose(1, 2); };
  const Tensor q = apply_rotary(heads(q_proj->forward(x), num_heads_), rotary);      // [B, H, T, Dh]
  const Tensor k_new = apply_rotary(heads(k_proj->forward(x), num_kv_heads_), rotary);  // [B, Hkv, T, Dh]
  const Tensor v_new = heads(v_proj->forward(x), num_kv_heads_);
  // Views [B, Hkv, S, Dh] of positions 0..S-1, S = cache.length() + T.
  const auto [k, v] = cache.append(layer, k_new, v_new);
  Tensor attn;  // [B, H, T, Dh]
  if (t == 1) {
    // A decode step: the one query sees every key up to its own, so the
    // whole buffers [B, Hkv, capacity, Dh] go in as they are, the positions
    // beyond S hidden by the key mask: CUDA's kernels take contiguous K and
    // V, and the views would be copied (O(S) per layer per step; the CPU's
    // read views in place, and the mask costs them little).
    attn = scaled_dot_product_attention(q, cache.keys(layer), cache.values(layer), cache.key_mask(k.size(2)),
                                        /*causal=*/false);
  } else {
    // A block of T queries: the op's causal mask is aligned at the end when
    // S > T (key j visible to query i when j <= i + S - T); query i sits at
    // absolute position S - T + i, so it sees exactly the keys 0..its own.
    attn = scaled_dot_product_attention(q, k, v, Tensor(), /*causal=*/true);
  }
  return o_proj->forward(attn.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_}));
}

LlamaMLP::LlamaMLP(const LlamaConfig& config, Generator& gen) {
  const int64_t d = config.hidden_size, i = config.intermediate_size;
  const double init_std = config.initializer_range;
  gate_proj = register_module("gate_proj", projection(d, i, init_std, gen));
  up_proj = register_module("up_proj", projection(d, i, init_std, gen));
  down_proj = register_module("down_proj", projection(i, d, init_std, gen));
}

Tensor LlamaMLP::forward(const Tensor& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));  // silu(gate) * up, fused
}

// ---- decoder --------------------------------------------------------------------------------

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& config, Generator& gen) {
  // HF's registration order: self_attn, mlp, input_layernorm, post_attention_layernorm.
  self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(config, gen));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(config, gen));
  input_layernorm = register_module("input_layernorm",
                                    std::make_shared<LlamaRMSNorm>(config.hidden_size, config.rms_norm_eps));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<LlamaRMSNorm>(config.hidden_size, config.rms_norm_eps));
}

Tensor LlamaDecoderLayer::forward(const Tensor& x, const RotaryTables& rotary, const Tensor& key_padding_mask,
                                  const PackedRows* packed) {
  const Tensor h = x + self_attn->forward(input_layernorm->forward(x), rotary, key_padding_mask, packed);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

Tensor LlamaDecoderLayer::forward_cached(const Tensor& x, const RotaryTables& rotary, KVCache& cache,
                                         int64_t layer) {
  const Tensor h = x + self_attn->forward_cached(input_layernorm->forward(x), rotary, cache, layer);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

LlamaModel::Embedding::Embedding(int64_t num, int64_t dim, double init_std, Generator& gen) {
  weight = Tensor::empty({num, dim});
  normal_init(weight, init_std, gen);
  register_parameter("weight", &weight);
}

void LlamaModel::Layers::append(std::shared_ptr<LlamaDecoderLayer> layer) {
  items.push_back(register_module(std::to_string(items.size()), std::move(layer)));
}

LlamaModel::LlamaModel(const LlamaConfig& config, Generator& gen) : config_(config) {
  config_.validate();
  embed_tokens = register_module(
      "embed_tokens", std::make_shared<Embedding>(config.vocab_size, config.hidden_size, config.initializer_range, gen));
  layers = register_module("layers", std::make_shared<Layers>());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->append(std::make_shared<LlamaDecoderLayer>(config, gen));
  norm = register_module("norm", std::make_shared<LlamaRMSNorm>(config.hidden_size, config.rms_norm_eps));
}

Tensor LlamaModel::forward(const Tensor& inputs_embeds, const Tensor& attention_mask, const Tensor& position_ids) {
  VLMC_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == config_.hidden_size, "LlamaModel: inputs_embeds ",
             shape_str(inputs_embeds.shape()), " must be [B, L, ", config_.hidden_size, "]");
  const int64_t b = inputs_embeds.size(0), l = inputs_embeds.size(1);
  const Shape bl{b, l};
  VLMC_CHECK(!attention_mask.defined() || attention_mask.shape() == bl, "LlamaModel: attention_mask ",
             shape_str(attention_mask.defined() ? attention_mask.shape() : Shape{}),
             " must be [B, L] = ", shape_str(bl), " as inputs_embeds ", shape_str(inputs_embeds.shape()));
  VLMC_CHECK(!position_ids.defined() || (position_ids.shape() == bl && position_ids.dtype() == DType::i64),
             "LlamaModel: position_ids ", shape_str(position_ids.defined() ? position_ids.shape() : Shape{}),
             " must be i64 [B, L] = ", shape_str(bl), " as inputs_embeds ", shape_str(inputs_embeds.shape()));
  const Tensor positions =
      position_ids.defined() ? position_ids : Tensor::arange(l).unsqueeze(0).expand({b, l}).contiguous();
  const RotaryTables rotary = rotary_tables(positions, config_.head_dim(), config_.rope_theta,
                                            config_.max_position_embeddings, inputs_embeds.dtype(),
                                            inputs_embeds.device());
  if (pack_padding && attention_mask.defined()) return forward_packed(inputs_embeds, attention_mask, rotary);
  return decoder(inputs_embeds, rotary, attention_mask, nullptr);
}

Tensor LlamaModel::decoder(const Tensor& inputs_embeds, const RotaryTables& rotary, const Tensor& attention_mask,
                           const PackedRows* packed) {
  Tensor h = inputs_embeds;
  for (const auto& layer : layers->items) {
    if (gradient_checkpointing) {
      // Captured by value (the rows too): the backward recomputes after this frame is gone.
      const std::optional<PackedRows> rows = packed ? std::optional<PackedRows>(*packed) : std::nullopt;
      h = checkpoint(
          [layer, rotary, attention_mask, rows](const Tensor& x) {
            return layer->forward(x, rotary, attention_mask, rows ? &*rows : nullptr);
          },
          h);
    } else {
      h = layer->forward(h, rotary, attention_mask, packed);
    }
  }
  return norm->forward(h);
}

Tensor LlamaModel::forward_packed(const Tensor& inputs_embeds, const Tensor& attention_mask,
                                  const RotaryTables& rotary) {
  const int64_t b = inputs_embeds.size(0), l = inputs_embeds.size(1), d = inputs_embeds.size(2);
  // The mask is read on the host (a synchronisation on CUDA): the row lists are its shape.
  const std::vector<int64_t> keep = attention_mask.to(Device::cpu()).to(DType::i64).to_vector<int64_t>();
  std::vector<int64_t> rows, padded(static_cast<size_t>(b * l), 0);
  for (int64_t p = 0; p < b * l; ++p) {
    if (keep[static_cast<size_t>(p)] == 0) continue;
    padded[static_cast<size_t>(p)] = static_cast<int64_t>(rows.size());
    rows.push_back(p);
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t n_rows = (n + kPackedRowMultiple - 1) / kPackedRowMultiple * kPackedRowMultiple;
  // Nothing to leave out (or nothing left): the padded forward.
  if (n == 0 || n_rows >= b * l) return decoder(inputs_embeds, rotary, attention_mask, nullptr);
  const int64_t filler = static_cast<int64_t>(std::find(keep.begin(), keep.end(), 0) - keep.begin());
  rows.resize(static_cast<size_t>(n_rows), filler);  // a padding position's copies: computed, never read
  const Device device = inputs_embeds.device();
  PackedRows packed;
  packed.rows = Tensor::from_vector(rows, {n_rows}).to(device);
  packed.batch = b;
  packed.length = l;
  // Attention on the packed rows in place (PackedRows::lengths): the CPU's kernels, outside
  // autocast (whose attention is the padded product form), with every sample right-padded.
  std::vector<int64_t> lengths(static_cast<size_t>(b), 0);
  bool right_padded = true;
  for (int64_t s = 0; s < b && right_padded; ++s) {
    int64_t& len = lengths[static_cast<size_t>(s)];
    while (len < l && keep[static_cast<size_t>(s * l + len)] != 0) ++len;
    for (int64_t t = len; t < l; ++t) right_padded = right_padded && keep[static_cast<size_t>(s * l + t)] == 0;
  }
  if (right_padded && device.is_cpu() && !autocast_bf16()) {
    const int64_t dh = rotary.cos.size(-1);
    auto by_row = [&](const Tensor& table) {  // [B, 1, L, Dh] -> the rows' [N', 1, 1, Dh]
      return index_select(table.reshape({b * l, dh}), 0, packed.rows).view({n_rows, 1, 1, dh});
    };
    packed.lengths = std::move(lengths);
    packed.rotary_rows = {by_row(rotary.cos), by_row(rotary.sin)};
  } else {
    packed.padded = Tensor::from_vector(padded, {b * l}).to(device);  // only the padded attention reads it
  }
  const Tensor h = decoder(index_select(inputs_embeds.reshape({b * l, d}), 0, packed.rows), rotary, attention_mask,
                           &packed);  // [N', D], N' = n_rows
  // Back to [B, L, D], zeros at the padding: row N' of [h; 0] for each of them.
  std::vector<int64_t> place(padded);
  for (int64_t p = 0; p < b * l; ++p)
    if (keep[static_cast<size_t>(p)] == 0) place[static_cast<size_t>(p)] = n_rows;
  const Tensor with_zero = cat({h, Tensor::zeros({1, d}, h.dtype(), device)}, 0);  // [N' + 1, D]
  return index_select(with_zero, 0, Tensor::from_vector(place, {b * l}).to(device)).view({b, l, d});
}

Tensor LlamaModel::forward_cached(const Tensor& inputs_embeds, KVCache& cache) {
  VLMC_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == config_.hidden_size,
             "LlamaModel::forward_cached: inputs_embeds ", shape_str(inputs_embeds.shape()), " must be [B, T, ",
             config_.hidden_size, "]");
  const int64_t b = inputs_embeds.size(0), t = inputs_embeds.size(1), past = cache.length();
  VLMC_CHECK(cache.num_layers() == config_.num_hidden_layers && cache.kv_heads() == config_.num_key_value_heads &&
                 cache.head_dim() == config_.head_dim(),
             "LlamaModel::forward_cached: the cache has ", cache.num_layers(), " layers, ", cache.kv_heads(),
             " KV heads of dim ", cache.head_dim(), "; the model ", config_.num_hidden_layers, ", ",
             config_.num_key_value_heads, " of dim ", config_.head_dim());
  VLMC_CHECK(cache.batch() == b, "LlamaModel::forward_cached: inputs_embeds ", shape_str(inputs_embeds.shape()),
             " hold ", b, " sequences but the cache ", cache.batch());
  VLMC_CHECK(cache.dtype() == inputs_embeds.dtype() && cache.device() == inputs_embeds.device(),
             "LlamaModel::forward_cached: the cache is ", dtype_name(cache.dtype()), " on ", cache.device().str(),
             " but inputs_embeds ", describe(inputs_embeds));
  VLMC_CHECK(t > 0, "LlamaModel::forward_cached: inputs_embeds ", shape_str(inputs_embeds.shape()),
             " hold no token");
  cache.check_room(t);
  NoGradGuard no_grad;
  // Positions past..past+T-1 in every row; rotary_tables refuses one at or
  // beyond max_position_embeddings, naming it.
  std::vector<int64_t> ids(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) ids[static_cast<size_t>(i)] = past + i;
  const Tensor positions = Tensor::from_vector(ids, {1, t}).expand({b, t});
  const RotaryTables rotary = rotary_tables(positions, config_.head_dim(), config_.rope_theta,
                                            config_.max_position_embeddings, inputs_embeds.dtype(),
                                            inputs_embeds.device());
  Tensor h = inputs_embeds;
  for (size_t i = 0; i < layers->items.size(); ++i)
    h = layers->items[i]->forward_cached(h, rotary, cache, static_cast<int64_t>(i));
  cache.advance(t);  // every layer has written positions past..past+T-1
  return norm->forward(h);
}

// ---- causal LM ------------------------------------------------------------------------------

LlamaForCausalLM::LlamaForCausalLM(const LlamaConfig& config, Generator& gen) : config_(config) {
  model = register_module("model", std::make_shared<LlamaModel>(config, gen));
  if (!config.tie_word_embeddings)
    lm_head = register_module("lm_head", projection(config.hidden_size, config.vocab_size,
                                                    config.initializer_range, gen));
}

Tensor LlamaForCausalLM::head_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

Tensor LlamaForCausalLM::forward(const Tensor& inputs_embeds, const Tensor& attention_mask,
                                 const Tensor& position_ids) {
  return linear(model->forward(inputs_embeds, attention_mask, position_ids), head_weight());  // [B, L, V]
}

Tensor LlamaForCausalLM::forward_cached(const Tensor& inputs_embeds, KVCache& cache, bool last_only) {
  NoGradGuard no_grad;
  Tensor h = model->forward_cached(inputs_embeds, cache);  // [B, T, D]
  if (last_only) h = h.narrow(1, h.size(1) - 1, 1);       // [B, 1, D]
  return linear(h, head_weight());                         // [B, T|1, V]
}

Tensor LlamaForCausalLM::forward_ids(const Tensor& input_ids, const Tensor& attention_mask,
                                     const Tensor& position_ids) {
  VLMC_CHECK(input_ids.dim() == 2 && input_ids.dtype() == DType::i64, "LlamaForCausalLM: input_ids ",
             shape_str(input_ids.shape()), " must be i64 [B, L]");
  return forward(embedding(model->embed_tokens->weight, input_ids), attention_mask, position_ids);
}

}  // namespace vlmc::nn
