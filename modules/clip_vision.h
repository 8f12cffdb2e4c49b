// The CLIP vision tower (Hugging Face's CLIPVisionModel) at any size: a
// bias-free patch convolution, a class token, learned absolute positions,
// pre_layrnorm, pre-norm transformer layers (multi-head attention with biases,
// quick-GELU or GELU MLP) and post_layernorm. Parameter names are the
// checkpoints' own ("vision_model.encoder.layers.3.self_attn.q_proj.weight"),
// so real CLIP weights load with load_state_dict as they are. See
// docs/vision_encoder.md.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "modules/layers.h"
#include "modules/llava.h"

namespace vlmc::nn {

// CLIPVisionConfig's keys and defaults (those of openai/clip-vit-base-patch32).
struct CLIPVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_attention_heads = 12;
  int64_t num_hidden_layers = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" (x·sigmoid(1.702x)) or "gelu" (exact erf)

  // Throws a vlmc::Error naming the first inconsistent key.
  void validate() const;
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t num_positions() const { return num_patches() + 1; }  // + the class token
  // What CLIPVisionModel(config).num_parameters() counts, without building it.
  int64_t num_parameters() const;
};

// The activations hidden_act may name.
std::vector<std::string> clip_hidden_acts();

// vision_model.embeddings: patch_embedding (Conv2d, no bias), class_embedding
// [D], position_embedding (nn.Embedding [num_positions, D]).
class CLIPVisionEmbeddings : public Module {
 public:
  CLIPVisionEmbeddings(const CLIPVisionConfig& config, Generator& gen);
  // images [B, C, H, W] -> [B, 1 + N, D], the class token first.
  Tensor forward(const Tensor& images) const;

  Tensor class_embedding;                              // [D]
  std::shared_ptr<Conv2d> patch_embedding;             // weight [D, C, p, p]
  std::shared_ptr<TinyLanguageModel::Embedding> position_embedding;  // weight [1 + N, D]

 private:
  CLIPVisionConfig config_;
};

// self_attn: q_proj, k_proj, v_proj, out_proj, all [D, D] with bias.
class CLIPAttention : public UnaryModule {
 public:
  CLIPAttention(const CLIPVisionConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // [B, T, D] -> [B, T, D], no mask

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;

 private:
  int64_t num_heads_;
};

// mlp: fc1 [I, D], the activation, fc2 [D, I].
class CLIPMLP : public UnaryModule {
 public:
  CLIPMLP(const CLIPVisionConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<Linear> fc1, fc2;

 private:
  std::string act_;
};

// One pre-norm block: h += self_attn(layer_norm1(h)); h += mlp(layer_norm2(h)).
class CLIPEncoderLayer : public UnaryModule {
 public:
  CLIPEncoderLayer(const CLIPVisionConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<CLIPAttention> self_attn;
  std::shared_ptr<LayerNorm> layer_norm1;
  std::shared_ptr<CLIPMLP> mlp;
  std::shared_ptr<LayerNorm> layer_norm2;
};

// vision_model.encoder: children layers.0, layers.1, ... (an nn.ModuleList).
class CLIPEncoder : public Module {
 public:
  CLIPEncoder(const CLIPVisionConfig& config, Generator& gen);
  std::shared_ptr<Sequential> layers;
};

// What CLIPVisionModel returns with output_hidden_states=True.
struct CLIPVisionOutput {
  Tensor last_hidden_state;           // [B, 1 + N, D], before post_layernorm (as HF)
  Tensor pooler_output;               // [B, D] = post_layernorm(last_hidden_state[:, 0])
  std::vector<Tensor> hidden_states;  // num_hidden_layers + 1 entries
};

// vision_model: embeddings, pre_layrnorm (sic, as HF spells it), encoder,
// post_layernorm.
class CLIPVisionTransformer : public Module {
 public:
  CLIPVisionTransformer(const CLIPVisionConfig& config, Generator& gen);

  std::shared_ptr<CLIPVisionEmbeddings> embeddings;
  std::shared_ptr<LayerNorm> pre_layrnorm;
  std::shared_ptr<CLIPEncoder> encoder;
  std::shared_ptr<LayerNorm> post_layernorm;
};

// Hugging Face's CLIPVisionModel. Input: pixel values [B, num_channels,
// image_size, image_size] (NCHW, as HF's pixel_values), f32 (or the
// parameters' dtype). Initialised as CLIPPreTrainedModel._init_weights with
// initializer_factor 1 and initializer_range 0.02: weights normal, Linear
// biases zero, LayerNorms ones/zeros.
class CLIPVisionModel : public VisionEncoder {
 public:
  explicit CLIPVisionModel(const CLIPVisionConfig& config = {}, Generator& gen = default_generator());

  // Element 0 is the embeddings after pre_layrnorm, element i the output of
  // layer i; LLaVA reads element -2.
  std::vector<Tensor> hidden_states(const Tensor& images) override;
  int64_t hidden_size() const override { return config_.hidden_size; }
  CLIPVisionOutput forward(const Tensor& images);

  const CLIPVisionConfig& config() const { return config_; }
  std::shared_ptr<CLIPVisionTransformer> vision_model;

 private:
  CLIPVisionConfig config_;
};

}  // namespace vlmc::nn
