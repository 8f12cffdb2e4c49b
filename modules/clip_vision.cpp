#include "modules/clip_vision.h"

#include <algorithm>
#include <cmath>

#include "core/shape.h"

namespace vlmc::nn {
namespace {

// A new parameter-to-be drawn from N(0, std²), as nn.init.normal_.
Tensor normal(const Shape& shape, double std, Generator& gen) {
  Tensor t = Tensor::randn(shape, gen);
  mul_(t, std);
  return t.set_requires_grad(true);
}

// CLIPPreTrainedModel._init_weights for a Linear: weight N(0, std²), bias zero.
// The members are reassigned; the module registered pointers to them, so the
// new tensors are its parameters.
void init_linear(Linear& layer, double std, Generator& gen) {
  if (!gen.fills()) return;  // Generator::unfilled(): a checkpoint is about to overwrite it
  layer.weight = normal(layer.weight.shape(), std, gen);
  layer.bias = Tensor::zeros(layer.bias.shape()).set_requires_grad(true);
}

}  // namespace

// ---- config -------------------------------------------------------------------------------

std::vector<std::string> clip_hidden_acts() { return {"quick_gelu", "gelu"}; }

void CLIPVisionConfig::validate() const {
  VLMC_CHECK(hidden_size > 0 && intermediate_size > 0 && num_attention_heads > 0 && num_hidden_layers > 0 &&
                 num_channels > 0 && image_size > 0 && patch_size > 0,
             "CLIPVisionConfig: sizes must be positive, got hidden_size ", hidden_size, " intermediate_size ",
             intermediate_size, " num_attention_heads ", num_attention_heads, " num_hidden_layers ",
             num_hidden_layers, " num_channels ", num_channels, " image_size ", image_size, " patch_size ",
             patch_size);
  VLMC_CHECK(hidden_size % num_attention_heads == 0, "CLIPVisionConfig: hidden_size ", hidden_size,
             " is not divisible by num_attention_heads ", num_attention_heads);
  VLMC_CHECK(patch_size <= image_size, "CLIPVisionConfig: patch_size ", patch_size, " exceeds image_size ",
             image_size);
  VLMC_CHECK(layer_norm_eps > 0, "CLIPVisionConfig: layer_norm_eps must be positive, got ", layer_norm_eps);
  const auto acts = clip_hidden_acts();
  VLMC_CHECK(std::find(acts.begin(), acts.end(), hidden_act) != acts.end(), "CLIPVisionConfig: hidden_act \"",
             hidden_act, "\" is not one of \"quick_gelu\", \"gelu\"");
}

int64_t CLIPVisionConfig::num_parameters() const {
  const int64_t d = hidden_size, i = intermediate_size;
  const int64_t embeddings = d * num_channels * patch_size * patch_size + d + num_positions() * d;
  const int64_t norm = 2 * d;
  const int64_t layer = 4 * (d * d + d) + 2 * norm + (i * d + i) + (d * i + d);
  return embeddings + norm + num_hidden_layers * layer + norm;  // pre_layrnorm ... post_layernorm
}

// ---- embeddings ---------------------------------------------------------------------------

CLIPVisionEmbeddings::CLIPVisionEmbeddings(const CLIPVisionConfig& config, Generator& gen) : config_(config) {
  const int64_t d = config.hidden_size;
  class_embedding = normal({d}, 1.0 / std::sqrt(static_cast<double>(d)), gen);
  register_parameter("class_embedding", &class_embedding);
  patch_embedding = register_module(
      "patch_embedding",
      std::make_shared<Conv2d>(config.num_channels, d, config.patch_size, config.patch_size, 0, false, gen));
  patch_embedding->weight = normal(patch_embedding->weight.shape(), 0.02, gen);
  position_embedding = register_module(
      "position_embedding", std::make_shared<TinyLanguageModel::Embedding>(config.num_positions(), d, gen));
  position_embedding->weight = normal(position_embedding->weight.shape(), 0.02, gen);
}

Tensor CLIPVisionEmbeddings::forward(const Tensor& images) const {
  const int64_t c = config_.num_channels, s = config_.image_size, p = config_.patch_size;
  const int64_t d = config_.hidden_size;
  VLMC_CHECK(images.defined() && images.dim() == 4 && images.size(1) == c && images.size(2) == s &&
                 images.size(3) == s,
             "CLIPVisionModel: images ", images.defined() ? shape_str(images.shape()) : std::string("(undefined)"),
             " must be [B, ", c, ", ", s, ", ", s, "] (NCHW: num_channels ", c, ", image_size ", s, ")");
  VLMC_CHECK(images.dtype() == class_embedding.dtype() && images.device() == class_embedding.device(),
             "CLIPVisionModel: images ", describe(images), " must have the parameters' dtype and device (",
             describe(class_embedding), ")");
  const int64_t b = images.size(0), g = s / p, n = g * g;
  // A stride-p convolution without padding reads only the top-left g·p pixels
  // (nn.Conv2d floors); with kernel == stride each output is one patch's dot
  // product with the filter, so the convolution is exactly a matmul over the
  // patches, each flattened in the weight's (c, i, j) order.
  Tensor x = images.narrow(2, 0, g * p).narrow(3, 0, g * p);             // [B, C, gp, gp]
  Tensor patches = x.reshape({b, c, g, p, g, p})                         // [B, C, gy, i, gx, j]
                       .permute({0, 2, 4, 1, 3, 5})                      // [B, gy, gx, C, i, j]
                       .reshape({b, n, c * p * p});                      // [B, N, C·p·p]
  Tensor tokens = linear(patches, patch_embedding->weight.reshape({d, c * p * p}));  // [B, N, D]
  Tensor cls = class_embedding.view({1, 1, d}).expand({b, 1, d});       // [B, 1, D]
  // position_ids are arange(1 + N): the lookup is the whole table, added in order.
  return cat({cls, tokens}, 1) + position_embedding->weight;            // [B, 1 + N, D]
}

// ---- attention and MLP --------------------------------------------------------------------

CLIPAttention::CLIPAttention(const CLIPVisionConfig& config, Generator& gen)
    : num_heads_(config.num_attention_heads) {
  const int64_t d = config.hidden_size;
  // HF's registration order (k, v, q, out) and init: in_proj_std for q, k, v
  // shrinks with depth; out_proj_std does not.
  const double in_std = std::pow(static_cast<double>(d), -0.5) *
                        std::pow(2.0 * static_cast<double>(config.num_hidden_layers), -0.5);
  const double out_std = std::pow(static_cast<double>(d), -0.5);
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, d, true, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, d, true, gen));
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, d, true, gen));
  out_proj = register_module("out_proj", std::make_shared<Linear>(d, d, true, gen));
  init_linear(*k_proj, in_std, gen);
  init_linear(*v_proj, in_std, gen);
  init_linear(*q_proj, in_std, gen);
  init_linear(*out_proj, out_std, gen);
}

Tensor CLIPAttention::forward(const Tensor& x) {
  const int64_t d = q_proj->weight.size(0);
  VLMC_CHECK(x.dim() == 3 && x.size(2) == d, "CLIPAttention: x ", shape_str(x.shape()), " must be [B, T, ", d, "]");
  const int64_t b = x.size(0), t = x.size(1), dh = d / num_heads_;
  auto heads = [&](const Tensor& y) { return y.view({b, t, num_heads_, dh}).transpose(1, 2); };  // [B, H, T, Dh]
  // Every token sees every token (no mask, not causal); scale 1/sqrt(Dh) as HF.
  Tensor o = scaled_dot_product_attention(heads(q_proj->forward(x)), heads(k_proj->forward(x)),
                                          heads(v_proj->forward(x)));  // [B, H, T, Dh]
  return out_proj->forward(o.transpose(1, 2).reshape({b, t, d}));    // [B, T, D]
}

CLIPMLP::CLIPMLP(const CLIPVisionConfig& config, Generator& gen) : act_(config.hidden_act) {
  const int64_t d = config.hidden_size, i = config.intermediate_size;
  fc1 = register_module("fc1", std::make_shared<Linear>(d, i, true, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(i, d, true, gen));
  const double in_std = std::pow(static_cast<double>(d), -0.5) *
                        std::pow(2.0 * static_cast<double>(config.num_hidden_layers), -0.5);
  init_linear(*fc1, std::pow(2.0 * static_cast<double>(d), -0.5), gen);
  init_linear(*fc2, in_std, gen);
}

Tensor CLIPMLP::forward(const Tensor& x) {
  Tensor h;  // [..., I]
  if (act_ == "gelu") {
    h = linear_gelu(x, fc1->weight, fc1->bias);  // exact erf GELU, fused with fc1
  } else {
    const Tensor a = fc1->forward(x);
    h = a * sigmoid(a * 1.702);  // quick_gelu, CLIP's own activation
  }
  return fc2->forward(h);
}

CLIPEncoderLayer::CLIPEncoderLayer(const CLIPVisionConfig& config, Generator& gen) {
  self_attn = register_module("self_attn", std::make_shared<CLIPAttention>(config, gen));
  layer_norm1 = register_module("layer_norm1", std::make_shared<LayerNorm>(config.hidden_size, config.layer_norm_eps));
  mlp = register_module("mlp", std::make_shared<CLIPMLP>(config, gen));
  layer_norm2 = register_module("layer_norm2", std::make_shared<LayerNorm>(config.hidden_size, config.layer_norm_eps));
}

Tensor CLIPEncoderLayer::forward(const Tensor& x) {
  Tensor h = x + self_attn->forward(layer_norm1->forward(x));  // [B, T, D]
  return h + mlp->forward(layer_norm2->forward(h));
}

CLIPEncoder::CLIPEncoder(const CLIPVisionConfig& config, Generator& gen) {
  layers = register_module("layers", std::make_shared<Sequential>());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->append(std::make_shared<CLIPEncoderLayer>(config, gen));
}

// ---- the model ----------------------------------------------------------------------------

CLIPVisionTransformer::CLIPVisionTransformer(const CLIPVisionConfig& config, Generator& gen) {
  embeddings = register_module("embeddings", std::make_shared<CLIPVisionEmbeddings>(config, gen));
  pre_layrnorm = register_module("pre_layrnorm", std::make_shared<LayerNorm>(config.hidden_size, config.layer_norm_eps));
  encoder = register_module("encoder", std::make_shared<CLIPEncoder>(config, gen));
  post_layernorm =
      register_module("post_layernorm", std::make_shared<LayerNorm>(config.hidden_size, config.layer_norm_eps));
}

namespace {
const CLIPVisionConfig& validated(const CLIPVisionConfig& config) {
  config.validate();
  return config;
}
}  // namespace

CLIPVisionModel::CLIPVisionModel(const CLIPVisionConfig& config, Generator& gen) : config_(validated(config)) {
  vision_model = register_module("vision_model", std::make_shared<CLIPVisionTransformer>(config, gen));
}

std::vector<Tensor> CLIPVisionModel::hidden_states(const Tensor& images) {
  CLIPVisionTransformer& vm = *vision_model;
  std::vector<Tensor> out;
  out.reserve(static_cast<size_t>(config_.num_hidden_layers) + 1);
  Tensor h = vm.pre_layrnorm->forward(vm.embeddings->forward(images));  // [B, 1 + N, D]
  out.push_back(h);
  Sequential& layers = *vm.encoder->layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    h = layers[i].forward(h);
    out.push_back(h);
  }
  return out;
}

CLIPVisionOutput CLIPVisionModel::forward(const Tensor& images) {
  CLIPVisionOutput out;
  out.hidden_states = hidden_states(images);
  out.last_hidden_state = out.hidden_states.back();
  out.pooler_output = vision_model->post_layernorm->forward(out.last_hidden_state.select(1, 0));  // [B, D]
  return out;
}

}  // namespace vlmc::nn
