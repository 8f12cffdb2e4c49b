#include "modules/connectors_post_llava.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "modules/connector_parts.h"

namespace vlmc::nn {

Tensor space_to_depth(const Tensor& x, int64_t r) {
  VLMC_CHECK(x.dim() == 4, "space_to_depth: x ", shape_str(x.shape()), " must be [B, H, W, C]");
  VLMC_CHECK(r >= 1, "space_to_depth: factor must be positive, got ", r);
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  VLMC_CHECK(H % r == 0 && W % r == 0, "space_to_depth: grid ", H, "x", W, " of x ", shape_str(x.shape()),
             " is not a multiple of the factor ", r);
  const Tensor windows = x.reshape({B, H / r, r, W / r, r, C}).permute({0, 1, 3, 2, 4, 5});  // [B, H/r, W/r, r, r, C]
  return windows.reshape({B, H / r, W / r, r * r * C});
}

Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VLMC_CHECK(x.dim() == 4, "depthwise_conv2d: x ", shape_str(x.shape()), " must be [B, H, W, C]");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  VLMC_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                 weight.size(2) % 2 == 1,
             "depthwise_conv2d: weight ", shape_str(weight.shape()), " must be [C, 1, k, k] with C = ", C,
             " and k odd");
  VLMC_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == C), "depthwise_conv2d: bias ",
             shape_str(bias.shape()), " must be [", C, "]");
  const int64_t k = weight.size(2), pad = k / 2;
  // Zero padding as two concatenations: [B, H + 2p, W + 2p, C].
  Tensor padded = x;
  if (pad > 0) {
    const Tensor rows = Tensor::zeros({B, pad, W, C}, x.dtype(), x.device());
    padded = cat({rows, x, rows}, 1);
    const Tensor cols = Tensor::zeros({B, H + 2 * pad, pad, C}, x.dtype(), x.device());
    padded = cat({cols, padded, cols}, 2);
  }
  const Tensor taps = weight.reshape({C, k * k});  // [C, k·k]
  Tensor out;
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      // Output (h, w) reads padded (h + i, w + j), scaled by tap (i, j) of its channel.
      const Tensor term = padded.narrow(1, i, H).narrow(2, j, W) * taps.select(1, i * k + j);  // [B, H, W, C]
      out = out.defined() ? out + term : term;
    }
  }
  return bias.defined() ? out + bias : out;
}

// ---- PatchMerger (Qwen2-VL) ----------------------------------------------------------

PatchMerger::PatchMerger(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t merge_size,
                         Generator& gen)
    : grid_size_(grid_size), merge_size_(merge_size) {
  check_positive("PatchMerger", "merge_size", merge_size);
  VLMC_CHECK(grid_size > 0 && grid_size % merge_size == 0, "PatchMerger: grid_size ", grid_size,
             " must be a positive multiple of merge_size ", merge_size);
  const int64_t merged = dim_vision * merge_size * merge_size;
  ln_q = register_module("ln_q", std::make_shared<LayerNorm>(dim_vision, 1e-6));
  mlp = register_module("mlp", make_mlp(merged, merged, dim_llm, gen));
}

Tensor PatchMerger::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("PatchMerger", target_tokens);
  check_features("PatchMerger", x, ln_q->weight.size(0));
  check_grid("PatchMerger", x, grid_size_);
  const int64_t batch = x.size(0), dim = x.size(2), side = grid_size_ / merge_size_;
  // Qwen2-VL normalises each patch before the merge.
  const Tensor grid = ln_q->forward(x).reshape({batch, grid_size_, grid_size_, dim});  // [B, g, g, Dv]
  const Tensor merged = space_to_depth(grid, merge_size_).reshape({batch, side * side, -1});  // [B, N/r², r²Dv]
  return mlp_gelu(*mlp, 0, merged);  // [B, N/r², Dllm]
}

// ---- PixelShuffleConnector (InternVL) ------------------------------------------------------

PixelShuffleConnector::PixelShuffleConnector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size,
                                             int64_t merge_size, Generator& gen)
    : grid_size_(grid_size), merge_size_(merge_size) {
  check_positive("PixelShuffleConnector", "merge_size", merge_size);
  VLMC_CHECK(grid_size > 0 && grid_size % merge_size == 0, "PixelShuffleConnector: grid_size ", grid_size,
             " must be a positive multiple of merge_size ", merge_size);
  const int64_t merged = dim_vision * merge_size * merge_size;
  mlp1 = register_module("mlp1", std::make_shared<Sequential>());
  mlp1->append(std::make_shared<LayerNorm>(merged));
  mlp1->append(std::make_shared<Linear>(merged, dim_llm, true, gen));
  mlp1->append(std::make_shared<GELU>());
  mlp1->append(std::make_shared<Linear>(dim_llm, dim_llm, true, gen));
}

Tensor PixelShuffleConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("PixelShuffleConnector", target_tokens);
  const int64_t merged = linear_at(*mlp1, 1).weight.size(1);
  check_features("PixelShuffleConnector", x, merged / (merge_size_ * merge_size_));
  check_grid("PixelShuffleConnector", x, grid_size_);
  const int64_t batch = x.size(0), dim = x.size(2), side = grid_size_ / merge_size_;
  const Tensor grid = x.reshape({batch, grid_size_, grid_size_, dim});                          // [B, g, g, Dv]
  const Tensor shuffled = space_to_depth(grid, merge_size_).reshape({batch, side * side, merged});  // [B, N/r², r²Dv]
  return mlp_gelu(*mlp1, 1, (*mlp1)[0].forward(shuffled));                                        // [B, N/r², Dllm]
}

// ---- LDPv2 (MobileVLM V2) ---------------------------------------------------------------

DepthwiseConv2d::DepthwiseConv2d(int64_t channels, int64_t kernel_size, Generator& gen, bool with_bias) {
  check_positive("DepthwiseConv2d", "channels", channels);
  VLMC_CHECK(kernel_size > 0 && kernel_size % 2 == 1, "DepthwiseConv2d: kernel_size must be odd, got ",
             kernel_size);
  // nn.Conv2d's default: kaiming_uniform(a=√5) on a fan-in of k·k (one input
  // channel per group), which is U(-1/k, 1/k), and the bias likewise.
  const double bound = 1.0 / static_cast<double>(kernel_size);
  weight = Tensor::uniform({channels, 1, kernel_size, kernel_size}, -bound, bound, gen);
  register_parameter("weight", &weight);
  if (!with_bias) return;
  bias = Tensor::uniform({channels}, -bound, bound, gen);
  register_parameter("bias", &bias);
}

LDPv2Connector::LDPv2Connector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t target_size,
                               Generator& gen)
    : grid_size_(grid_size), target_size_(target_size) {
  check_positive("LDPv2Connector", "grid_size", grid_size);
  check_positive("LDPv2Connector", "target_size", target_size);
  auto feature_ir = register_module("mlp", std::make_shared<Container>());  // MobileVLM's FeatureIRLayer
  mlp_layers = feature_ir->register_module("mlp", make_mlp(dim_vision, dim_llm, dim_llm, gen));
  auto pos_inject = register_module("peg", std::make_shared<Container>());  // its PosInjectLayer
  auto peg = pos_inject->register_module("peg", std::make_shared<Sequential>());
  peg_conv = std::make_shared<DepthwiseConv2d>(dim_llm, 3, gen);
  peg->append(peg_conv);
}

Tensor LDPv2Connector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("LDPv2Connector", target_tokens);
  check_features("LDPv2Connector", x, linear_at(*mlp_layers, 0).weight.size(1));
  check_grid("LDPv2Connector", x, grid_size_);
  const int64_t batch = x.size(0);
  const Tensor h = mlp_gelu(*mlp_layers, 0, x);  // [B, N, Dllm]: projected first, pooled after
  const int64_t dim = h.size(2);
  const Tensor pooled = adaptive_avg_pool2d(h.reshape({batch, grid_size_, grid_size_, dim}), target_size_,
                                            target_size_);  // [B, t, t, Dllm]
  const Tensor out = pooled + peg_conv->forward(pooled);   // the PEG's residual
  return out.reshape({batch, target_size_ * target_size_, dim});
}

// ---- Perceiver resampler (Idefics2) -------------------------------------------------------

SwiGLU::SwiGLU(int64_t in, int64_t hidden, int64_t out, Generator& gen) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(in, hidden, false, gen));
  up_proj = register_module("up_proj", std::make_shared<Linear>(in, hidden, false, gen));
  down_proj = register_module("down_proj", std::make_shared<Linear>(hidden, out, false, gen));
}

Tensor SwiGLU::forward(const Tensor& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));  // silu(gate) * up, fused
}

PerceiverAttention::PerceiverAttention(int64_t dim, int64_t heads, int64_t head_dim, int64_t kv_heads,
                                       Generator& gen)
    : heads_(heads), head_dim_(head_dim), kv_heads_(kv_heads) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(dim, heads * head_dim, false, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(dim, kv_heads * head_dim, false, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(dim, kv_heads * head_dim, false, gen));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads * head_dim, dim, false, gen));
}

Tensor PerceiverAttention::forward(const Tensor& latents, const Tensor& context) {
  const int64_t batch = latents.size(0), queries = latents.size(1);
  const Tensor keys_in = cat({context, latents}, 1);  // [B, N + L, D]: the latents see themselves too
  const int64_t keys = keys_in.size(1);
  const Tensor q = q_proj->forward(latents).reshape({batch, queries, heads_, head_dim_}).transpose(1, 2);
  const Tensor k = k_proj->forward(keys_in).reshape({batch, keys, kv_heads_, head_dim_}).transpose(1, 2);
  const Tensor v = v_proj->forward(keys_in).reshape({batch, keys, kv_heads_, head_dim_}).transpose(1, 2);
  const Tensor attended = scaled_dot_product_attention(q, k, v);  // [B, H, L, Dh], scale 1/√Dh
  return o_proj->forward(attended.transpose(1, 2).reshape({batch, queries, heads_ * head_dim_}));
}

PerceiverLayer::PerceiverLayer(int64_t dim, int64_t heads, int64_t head_dim, int64_t kv_heads, Generator& gen) {
  input_latents_norm = register_module("input_latents_norm", std::make_shared<LlamaRMSNorm>(dim, 1e-6));
  input_context_norm = register_module("input_context_norm", std::make_shared<LlamaRMSNorm>(dim, 1e-6));
  self_attn = register_module("self_attn", std::make_shared<PerceiverAttention>(dim, heads, head_dim, kv_heads, gen));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<LlamaRMSNorm>(dim, 1e-6));
  mlp = register_module("mlp", std::make_shared<SwiGLU>(dim, 4 * dim, dim, gen));
}

Tensor PerceiverLayer::forward(const Tensor& latents, const Tensor& context) {
  const Tensor h = latents + self_attn->forward(input_latents_norm->forward(latents),
                                                input_context_norm->forward(context));  // [B, L, D]
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

int64_t perceiver_default_hidden(int64_t dim_llm) { return dim_llm * 7 / 2; }

// ---- Qwen-VL's resampler ---------------------------------------------------------------

Tensor sincos_2d_positions(int64_t dim, int64_t grid) {
  VLMC_CHECK(dim > 0 && dim % 4 == 0, "sincos_2d_positions: dim must be a positive multiple of 4, got ", dim);
  VLMC_CHECK(grid > 0, "sincos_2d_positions: grid must be positive, got ", grid);
  const int64_t half = dim / 2, quarter = dim / 4;
  std::vector<float> out(static_cast<size_t>(grid * grid * dim));
  for (int64_t r = 0; r < grid; ++r) {
    for (int64_t c = 0; c < grid; ++c) {
      float* row = out.data() + (r * grid + c) * dim;
      // MAE's meshgrid(w, h): the first half embeds the column, the second the row.
      for (int64_t part = 0; part < 2; ++part) {
        const double p = static_cast<double>(part == 0 ? c : r);
        for (int64_t i = 0; i < quarter; ++i) {
          const double omega = 1.0 / std::pow(10000.0, static_cast<double>(i) / static_cast<double>(quarter));
          row[part * half + i] = static_cast<float>(std::sin(p * omega));
          row[part * half + quarter + i] = static_cast<float>(std::cos(p * omega));
        }
      }
    }
  }
  return Tensor::from_vector(out, {grid * grid, dim});
}

namespace {

// PyTorch's cubic convolution weights (a = -0.75) for the four samples around t in [0, 1).
void cubic_weights(float t, float w[4]) {
  constexpr float a = -0.75f;
  auto near = [&](float x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };     // |x| <= 1
  auto far = [&](float x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };  // 1 < |x| < 2
  w[0] = far(t + 1);
  w[1] = near(t);
  w[2] = near(1 - t);
  w[3] = far(2 - t);
}

}  // namespace

Tensor bicubic_resize_positions(const Tensor& positions, int64_t from_side, int64_t to_side) {
  VLMC_CHECK(positions.dim() == 2 && positions.size(0) == from_side * from_side,
             "bicubic_resize_positions: positions ", shape_str(positions.shape()), " are not a ", from_side, "x",
             from_side, " grid");
  VLMC_CHECK(to_side > 0, "bicubic_resize_positions: target side must be positive, got ", to_side);
  const int64_t dim = positions.size(1);
  const std::vector<float> src = positions.to_vector<float>();
  std::vector<float> out(static_cast<size_t>(to_side * to_side * dim));
  const float scale = static_cast<float>(from_side) / static_cast<float>(to_side);
  auto at = [&](int64_t y, int64_t x, int64_t d) {  // edge samples repeated
    y = std::clamp<int64_t>(y, 0, from_side - 1);
    x = std::clamp<int64_t>(x, 0, from_side - 1);
    return src[static_cast<size_t>((y * from_side + x) * dim + d)];
  };
  for (int64_t oy = 0; oy < to_side; ++oy) {
    // align_corners=False; bicubic keeps negative source coordinates (no clamp to 0)
    const float sy = scale * (static_cast<float>(oy) + 0.5f) - 0.5f;
    const int64_t iy = static_cast<int64_t>(std::floor(sy));
    float wy[4];
    cubic_weights(sy - static_cast<float>(iy), wy);
    for (int64_t ox = 0; ox < to_side; ++ox) {
      const float sx = scale * (static_cast<float>(ox) + 0.5f) - 0.5f;
      const int64_t ix = static_cast<int64_t>(std::floor(sx));
      float wx[4];
      cubic_weights(sx - static_cast<float>(ix), wx);
      for (int64_t d = 0; d < dim; ++d) {
        float acc = 0;
        for (int64_t j = 0; j < 4; ++j) {
          float rowv = 0;
          for (int64_t i = 0; i < 4; ++i) rowv += wx[i] * at(iy - 1 + j, ix - 1 + i, d);
          acc += wy[j] * rowv;
        }
        out[static_cast<size_t>((oy * to_side + ox) * dim + d)] = acc;
      }
    }
  }
  return Tensor::from_vector(out, {to_side * to_side, dim});
}

namespace {

int64_t square_side(int64_t n) {
  int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return side * side == n ? side : -1;
}

}  // namespace

QwenVLResampler::QwenVLResampler(int64_t dim_vision, int64_t dim_llm, int64_t num_queries, int64_t heads,
                                 Generator& gen)
    : grid_(square_side(num_queries)), heads_(heads) {
  const char* name = "QwenVLResampler";
  check_positive(name, "num_latents", num_queries);
  VLMC_CHECK(grid_ > 0, name, ": num_latents ", num_queries, " must be a square number (the queries' grid)");
  check_positive(name, "resampler_heads", heads);
  VLMC_CHECK(dim_llm % heads == 0, name, ": dim_llm ", dim_llm, " must be a multiple of resampler_heads ", heads);
  VLMC_CHECK(dim_llm % 4 == 0, name, ": dim_llm ", dim_llm, " must be a multiple of 4 (2D sin-cos positions)");
  auto pool = register_module("attn_pool", std::make_shared<Container>());
  query = Tensor::randn({num_queries, dim_llm}, gen) * 0.02;  // Qwen-VL: trunc_normal_(std=.02)
  pool->register_parameter("query", &query);
  // Fixed: a buffer here (Qwen-VL holds a Parameter with requires_grad off;
  // the state_dict key is the same), so that unfreezing the connector for
  // stage 2 cannot start training it.
  pos_embed = sincos_2d_positions(dim_llm, grid_);
  pool->register_buffer("pos_embed", &pos_embed);
  if (dim_vision != dim_llm)
    kv_proj = pool->register_module("kv_proj", std::make_shared<Linear>(dim_vision, dim_llm, false, gen));
  auto attn = pool->register_module("attn", std::make_shared<Container>());
  // nn.MultiheadAttention's initialisation: xavier_uniform_ on the stacked
  // projections, zero biases, out_proj as nn.Linear with a zero bias.
  const double bound = std::sqrt(6.0 / static_cast<double>(dim_llm + 3 * dim_llm));
  in_proj_weight = Tensor::uniform({3 * dim_llm, dim_llm}, -bound, bound, gen);
  in_proj_bias = Tensor::zeros({3 * dim_llm});
  attn->register_parameter("in_proj_weight", &in_proj_weight);
  attn->register_parameter("in_proj_bias", &in_proj_bias);
  out_proj = attn->register_module("out_proj", std::make_shared<Linear>(dim_llm, dim_llm, true, gen));
  {
    NoGradGuard no_grad;  // an initialisation, not a step of the graph
    out_proj->bias.zero_();
  }
  ln_q = pool->register_module("ln_q", std::make_shared<LayerNorm>(dim_llm, 1e-6));
  ln_kv = pool->register_module("ln_kv", std::make_shared<LayerNorm>(dim_llm, 1e-6));
  ln_post = register_module("ln_post", std::make_shared<LayerNorm>(dim_llm, 1e-6));
  proj = Tensor::randn({dim_llm, dim_llm}, gen) * (1.0 / std::sqrt(static_cast<double>(dim_llm)));
  register_parameter("proj", &proj);
}

Tensor QwenVLResampler::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  const char* name = "QwenVLResampler";
  refuse_target(name, target_tokens);
  check_features(name, x, kv_proj ? kv_proj->weight.size(1) : query.size(1));
  const int64_t batch = x.size(0), tokens = x.size(1), queries = query.size(0), dim = query.size(1);
  const int64_t side = square_side(tokens);
  VLMC_CHECK(side > 0, name, ": visual_features ", shape_str(x.shape()), " hold ", tokens,
             " tokens, not a square grid (the key positions are 2D)");
  // Qwen-VL's get_abs_pos: the queries' grid of positions, resized to the patches' grid.
  const Tensor key_pos = side == grid_ ? pos_embed
                                       : bicubic_resize_positions(pos_embed.to(Device::cpu(), DType::f32), grid_, side)
                                             .to(x.device(), x.dtype());  // [N, D]
  const Tensor kv = ln_kv->forward(kv_proj ? kv_proj->forward(x) : x);  // [B, N, D]
  const Tensor q_in = (ln_q->forward(query) + pos_embed).unsqueeze(0).expand({batch, queries, dim});  // [B, L, D]
  // nn.MultiheadAttention: q, k, v from one stacked projection; keys carry positions, values do not.
  auto project = [&](const Tensor& in, int64_t part) {
    return linear(in, in_proj_weight.narrow(0, part * dim, dim), in_proj_bias.narrow(0, part * dim, dim));
  };
  const int64_t head_dim = dim / heads_;
  const Tensor q = project(q_in, 0).reshape({batch, queries, heads_, head_dim}).transpose(1, 2);
  const Tensor k = project(kv + key_pos, 1).reshape({batch, tokens, heads_, head_dim}).transpose(1, 2);
  const Tensor v = project(kv, 2).reshape({batch, tokens, heads_, head_dim}).transpose(1, 2);
  const Tensor attended = scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape({batch, queries, dim});
  return matmul(ln_post->forward(out_proj->forward(attended)), proj);  // [B, L, Dllm]
}

PerceiverResamplerConnector::PerceiverResamplerConnector(int64_t dim_vision, int64_t dim_llm, int64_t dim_hidden,
                                                         int64_t num_latents, int64_t depth, int64_t heads,
                                                         int64_t head_dim, int64_t kv_heads, Generator& gen) {
  const char* name = "PerceiverResamplerConnector";
  check_positive(name, "dim_hidden", dim_hidden);
  check_positive(name, "num_latents", num_latents);
  check_positive(name, "resampler_depth", depth);
  check_positive(name, "resampler_heads", heads);
  check_positive(name, "resampler_head_dim", head_dim);
  check_positive(name, "resampler_kv_heads", kv_heads);
  VLMC_CHECK(heads % kv_heads == 0, name, ": resampler_heads ", heads, " must be a multiple of resampler_kv_heads ",
             kv_heads);
  modality_projection = register_module("modality_projection", std::make_shared<SwiGLU>(dim_vision, dim_hidden,
                                                                                          dim_llm, gen));
  auto resampler = register_module("perceiver_resampler", std::make_shared<Container>());
  latents = Tensor::randn({num_latents, dim_llm}, gen);
  resampler->register_parameter("latents", &latents);
  auto list = resampler->register_module("layers", std::make_shared<Container>());
  for (int64_t i = 0; i < depth; ++i)
    layers.push_back(list->register_module(std::to_string(i),
                                           std::make_shared<PerceiverLayer>(dim_llm, heads, head_dim, kv_heads, gen)));
  norm = resampler->register_module("norm", std::make_shared<LlamaRMSNorm>(dim_llm, 1e-6));
}

Tensor PerceiverResamplerConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("PerceiverResamplerConnector", target_tokens);
  check_features("PerceiverResamplerConnector", x, modality_projection->gate_proj->weight.size(1));
  const Tensor context = modality_projection->forward(x);  // [B, N, Dllm]
  Tensor h = latents.unsqueeze(0).expand({x.size(0), latents.size(0), latents.size(1)});  // [B, L, Dllm]
  for (const auto& layer : layers) h = layer->forward(h, context);
  return norm->forward(h);  // [B, L, Dllm]
}

}  // namespace vlmc::nn
