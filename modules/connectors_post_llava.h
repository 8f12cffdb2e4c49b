// Connectors that came after LLaVA, each with its paper's state_dict names so
// that a published checkpoint's projector loads as it is. Like the seed's
// (modules/connectors.h), each maps visual features [B, N, Dv] to visual
// tokens [B, N', Dllm] and is built by name through connector_registry().
// All are composed of recorded ops, so they run on every device those ops
// run on and need no backward of their own.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "modules/connector.h"
#include "modules/layers.h"
#include "modules/llama.h"

namespace vlmc::nn {

// Space-to-depth on a channels-last grid: x [B, H, W, C] -> [B, H/r, W/r, r·r·C],
// where output channel (i·r + j)·C + c is x[b, r·h + i, r·w + j, c]. H and W
// must be multiples of r. This is both Qwen2-VL's patch order within a merge
// window and InternVL's pixel_shuffle (ps_version v2).
Tensor space_to_depth(const Tensor& x, int64_t r);

// nn.Conv2d(C, C, k, stride 1, padding k/2, groups=C) on a channels-last grid:
// x [B, H, W, C], weight [C, 1, k, k] (PyTorch's layout), bias [C] or undefined
// -> [B, H, W, C]. Composed as k·k shifted, per-channel-scaled copies of the
// zero-padded grid: a depthwise conv has C·k·k weights, so it is memory-bound
// and a GEMM would not help it. k odd.
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias);

// Qwen2-VL's PatchMerger (transformers' `PatchMerger`): LayerNorm(Dv, eps
// 1e-6) on each patch, each merge_size² window of the grid concatenated (in
// Qwen2-VL's window order, space_to_depth above), then Linear(r²Dv, r²Dv) ->
// GELU -> Linear(r²Dv, Dllm). N' = N / r². state_dict: ln_q.*, mlp.0.*,
// mlp.2.* (visual.merger.* in a Qwen2-VL checkpoint).
class PatchMerger : public Connector {
 public:
  PatchMerger(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t merge_size,
              Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<LayerNorm> ln_q;
  std::shared_ptr<Sequential> mlp;

 private:
  int64_t grid_size_, merge_size_;
};

// InternVL's pixel shuffle + MLP (Idefics3 and others pixel-shuffle the same
// way): each merge_size² window concatenated (space_to_depth), then
// LayerNorm(r²Dv) -> Linear(r²Dv, Dllm) -> GELU -> Linear(Dllm, Dllm).
// N' = N / r². state_dict: mlp1.0.* (LayerNorm), mlp1.1.*, mlp1.3.*, as
// InternVL-Chat's checkpoints name them.
class PixelShuffleConnector : public Connector {
 public:
  PixelShuffleConnector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t merge_size,
                        Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<Sequential> mlp1;

 private:
  int64_t grid_size_, merge_size_;
};

// nn.Conv2d(C, C, k, padding=k/2, groups=C) as a layer: weight [C, 1, k, k]
// and bias [C] (none with bias = false), initialised U(-1/k, 1/k) as
// nn.Conv2d (fan-in k·k).
class DepthwiseConv2d : public UnaryModule {
 public:
  DepthwiseConv2d(int64_t channels, int64_t kernel_size, Generator& gen = default_generator(), bool bias = true);
  Tensor forward(const Tensor& x) override { return depthwise_conv2d(x, weight, bias); }

  Tensor weight;
  Tensor bias;  // undefined without a bias
};

// MobileVLM V2's LDPv2 (`LDPNetV2Projector`): Linear(Dv, Dllm) -> GELU ->
// Linear(Dllm, Dllm) per token, adaptive average pooling of the grid to
// target_size², then a 3x3 depthwise conv added back as a positional
// encoding generator (PEG: x + dwconv(x)). N' = target_size². state_dict:
// mlp.mlp.0.*, mlp.mlp.2.*, peg.peg.0.weight [Dllm, 1, 3, 3], peg.peg.0.bias.
class LDPv2Connector : public Connector {
 public:
  LDPv2Connector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t target_size,
                 Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<Sequential> mlp_layers;  // "mlp.mlp": MobileVLM's FeatureIRLayer holds it as .mlp
  std::shared_ptr<DepthwiseConv2d> peg_conv;  // "peg.peg.0": PosInjectLayer's Sequential

 private:
  int64_t grid_size_, target_size_;
};

// SwiGLU without biases: down(silu(gate(x)) * up(x)), [.., in] -> [.., out]
// (Idefics2MLP; LlamaMLP is the in == out case).
class SwiGLU : public UnaryModule {
 public:
  SwiGLU(int64_t in, int64_t hidden, int64_t out, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

// Idefics2PerceiverAttention: queries from the latents, keys and values from
// cat(context, latents), grouped KV heads, no mask, no positions, no biases.
class PerceiverAttention : public Module {
 public:
  PerceiverAttention(int64_t dim, int64_t heads, int64_t head_dim, int64_t kv_heads, Generator& gen);
  // latents [B, L, D], context [B, N, D] (both normalised) -> [B, L, D]
  Tensor forward(const Tensor& latents, const Tensor& context);

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t heads_, head_dim_, kv_heads_;
};

// One Idefics2PerceiverLayer: the latents attend over cat(context, latents)
// (RMSNorm on each first; grouped KV heads, no mask, no positions), a
// residual, then RMSNorm -> SwiGLU(D, 4D, D) and a residual.
class PerceiverLayer : public Module {
 public:
  PerceiverLayer(int64_t dim, int64_t heads, int64_t head_dim, int64_t kv_heads, Generator& gen);
  // latents [B, L, D], context [B, N, D] -> [B, L, D]
  Tensor forward(const Tensor& latents, const Tensor& context);

  std::shared_ptr<LlamaRMSNorm> input_latents_norm, input_context_norm, post_attention_layernorm;
  std::shared_ptr<PerceiverAttention> self_attn;
  std::shared_ptr<SwiGLU> mlp;
};

// Idefics2's connector (transformers' `Idefics2Connector`, a Flamingo-style
// perceiver resampler): SwiGLU(Dv, dim_hidden, Dllm) per patch, then
// num_latents learned queries refined by resampler_depth PerceiverLayers over
// the patches, then RMSNorm. N' = num_latents whatever N is. state_dict:
// modality_projection.{gate,up,down}_proj.weight, perceiver_resampler.latents,
// perceiver_resampler.layers.{i}.*, perceiver_resampler.norm.weight
// (model.connector.* in an Idefics2 checkpoint). The latents start N(0, 1):
// Idefics2 starts them at ones, which from scratch would keep every latent
// identical for ever (same query, same gradient).
class PerceiverResamplerConnector : public Connector {
 public:
  PerceiverResamplerConnector(int64_t dim_vision, int64_t dim_llm, int64_t dim_hidden, int64_t num_latents,
                              int64_t depth, int64_t heads, int64_t head_dim, int64_t kv_heads,
                              Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<SwiGLU> modality_projection;
  std::shared_ptr<Module> perceiver_resampler;
  Tensor latents;  // [num_latents, Dllm]
  std::vector<std::shared_ptr<PerceiverLayer>> layers;
  std::shared_ptr<LlamaRMSNorm> norm;
};

// MAE's 2D sin-cos positions, as Qwen-VL's get_2d_sincos_pos_embed makes
// them: [grid², dim] (dim even), row r·grid + c holding the 1D embedding of c
// in its first dim/2 columns and of r in the rest (MAE's meshgrid order), each
// sin(p·ω_i) then cos(p·ω_i) with ω_i = 10000^(-2i/(dim/2)).
Tensor sincos_2d_positions(int64_t dim, int64_t grid);

// positions [s², D] on an s x s grid resized to [t², D] on t x t, as
// F.interpolate(mode='bicubic', align_corners=False) does it (a = -0.75,
// edge samples repeated), in f32 on the host. No gradient: Qwen-VL's
// positions are fixed.
Tensor bicubic_resize_positions(const Tensor& positions, int64_t from_side, int64_t to_side);

// Qwen-VL's visual resampler with the projection after it (Qwen-VL's
// `Resampler` as attn_pool, then ln_post and proj): num_latents learned
// queries (a square number) attend in one nn.MultiheadAttention layer
// (resampler_heads heads over Dllm) to the patches, keys carrying fixed 2D
// sin-cos positions (bicubically resized when N is another square than
// num_latents), queries their own; then LayerNorm and x·proj. Qwen-VL uses 256
// queries and Dllm/128 heads. N' = num_latents. state_dict: attn_pool.query,
// attn_pool.pos_embed (fixed, not trained), attn_pool.kv_proj.weight (only
// when Dv != Dllm), attn_pool.attn.{in_proj_weight, in_proj_bias,
// out_proj.weight, out_proj.bias}, attn_pool.ln_q.*, attn_pool.ln_kv.*,
// ln_post.*, proj (transformer.visual.* in a Qwen-VL checkpoint).
class QwenVLResampler : public Connector {
 public:
  QwenVLResampler(int64_t dim_vision, int64_t dim_llm, int64_t num_queries, int64_t heads,
                  Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  Tensor query, pos_embed;  // [L, Dllm]
  std::shared_ptr<Linear> kv_proj;  // null when Dv == Dllm (Qwen-VL's nn.Identity)
  Tensor in_proj_weight, in_proj_bias;  // [3 Dllm, Dllm], [3 Dllm]: q, k, v stacked
  std::shared_ptr<Linear> out_proj;
  std::shared_ptr<LayerNorm> ln_q, ln_kv, ln_post;
  Tensor proj;  // [Dllm, Dllm], applied as x·proj

 private:
  int64_t grid_, heads_;
};

// Idefics2's default modality-projection width: 3.5 * dim_llm (its 14336 at 4096).
int64_t perceiver_default_hidden(int64_t dim_llm);

}  // namespace vlmc::nn
