#include "modules/llava.h"

#include <algorithm>
#include <sstream>

#include "core/autograd.h"
#include "core/text.h"

namespace vlmc::nn {
namespace {

void check_no_target_tokens(const char* projector, std::optional<int64_t> target_tokens) {
  VLMC_CHECK(!target_tokens.has_value(), projector, ": target_tokens (", target_tokens.value_or(0),
             ") is an argument of the dynamic connector only");
}

void check_features(const char* projector, const Tensor& x, int64_t dim) {
  VLMC_CHECK(x.dim() == 3, projector, ": visual_features ", shape_str(x.shape()),
             " must be [batch, tokens, dim_vision]");
  VLMC_CHECK(x.size(2) == dim, projector, ": visual_features ", shape_str(x.shape()), " have width ",
             x.size(2), " but dim_vision is ", dim);
}

}  // namespace

// ---- TinyLanguageModel --------------------------------------------------------------------

TinyLanguageModel::Embedding::Embedding(int64_t num, int64_t dim, Generator& gen) {
  VLMC_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got [", num, ", ", dim, "]");
  weight = Tensor::randn({num, dim}, gen);  // nn.Embedding's N(0, 1)
  register_parameter("weight", &weight);
}

TinyLanguageModel::TinyLanguageModel(int64_t vocab_size, int64_t hidden_size, Generator& gen) {
  embedding = register_module("embed_tokens", std::make_shared<Embedding>(vocab_size, hidden_size, gen));
  lm_head = register_module("lm_head", std::make_shared<Linear>(hidden_size, vocab_size, false, gen));
}

Tensor TinyLanguageModel::forward(const Tensor& inputs_embeds, const Tensor&, const Tensor&) {
  VLMC_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == hidden_size(), "TinyLanguageModel: inputs_embeds ",
             shape_str(inputs_embeds.shape()), " must be [B, L, ", hidden_size(), "]");
  return lm_head->forward(inputs_embeds);  // [B, L, V]
}

// ---- projectors ---------------------------------------------------------------------------

MlpGeluProjector::MlpGeluProjector(int64_t depth, int64_t dim_vision, int64_t dim_llm, Generator& gen) {
  VLMC_CHECK(depth >= 1, "mlp", depth, "x_gelu: depth must be at least 1");
  // LLaVA's builder: Linear(Dv, Dllm), then (GELU, Linear(Dllm, Dllm)) x (depth - 1).
  // The GELUs hold no parameters, so only the Linear layers are registered,
  // under the indices nn.Sequential gives them (0, 2, 4, ...).
  for (int64_t i = 0; i < depth; ++i) {
    auto layer = std::make_shared<Linear>(i == 0 ? dim_vision : dim_llm, dim_llm, true, gen);
    linears_.push_back(register_module(std::to_string(2 * i), layer));
  }
}

Tensor MlpGeluProjector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  check_no_target_tokens("MlpGeluProjector", target_tokens);
  check_features("MlpGeluProjector", x, linears_.front()->weight.size(1));
  // GELU(Linear(h)) is one fused op; the last Linear has no GELU after it.
  Tensor h = x;  // [B, N, Dv]
  for (size_t i = 0; i + 1 < linears_.size(); ++i)
    h = linear_gelu(h, linears_[i]->weight, linears_[i]->bias);
  return linears_.back()->forward(h);  // [B, N, Dllm]
}

Tensor IdentityProjector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  check_no_target_tokens("IdentityProjector", target_tokens);
  check_features("IdentityProjector", x, dim_);
  return x;
}

std::optional<int64_t> mlp_gelu_depth(const std::string& name) {
  const std::string head = "mlp", tail = "x_gelu";
  if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
      name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
    return std::nullopt;
  const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
  if (digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<std::string> projector_types() {
  std::vector<std::string> out = {"mlp{N}x_gelu", "identity"};
  for (const std::string& t : connector_types()) out.push_back(t);
  return out;
}

std::shared_ptr<Connector> make_projector(const std::string& name, int64_t dim_vision, int64_t dim_llm,
                                          const ConnectorConfig& config, Generator& gen) {
  VLMC_CHECK(dim_vision > 0 && dim_llm > 0, "make_projector: ", name, ": dims must be positive, got ",
             dim_vision, " -> ", dim_llm);
  if (const auto depth = mlp_gelu_depth(name)) {
    VLMC_CHECK(*depth >= 1, "make_projector: ", name, ": depth must be at least 1");
    return std::make_shared<MlpGeluProjector>(*depth, dim_vision, dim_llm, gen);
  }
  if (name == "identity") {
    VLMC_CHECK(dim_vision == dim_llm, "make_projector: identity needs dim_vision == dim_llm, got ",
               dim_vision, " and ", dim_llm);
    return std::make_shared<IdentityProjector>(dim_vision);
  }
  const auto& seed = connector_types();
  VLMC_CHECK(std::find(seed.begin(), seed.end(), name) != seed.end(), "make_projector: unknown projector '",
             name, "' (known: ", join(projector_types()), ")");
  ConnectorConfig c = config;
  c.type = name;
  c.dim_vision = dim_vision;
  c.dim_llm = dim_llm;
  return make_connector(c, gen);
}

// ---- LlavaModel -------------------------------------------------------------------------------

LlavaModel::LlavaModel(std::shared_ptr<VisionEncoder> vision, std::shared_ptr<LanguageModel> lm,
                       const LlavaConfig& config, Generator& gen)
    : config_(config) {
  VLMC_CHECK(vision && lm, "LlavaModel: the vision encoder and the language model must be given");
  vision_encoder = register_module("vision_encoder", std::move(vision));
  connector = register_module("connector", make_projector(config.projector_type, vision_encoder->hidden_size(),
                                                          lm->hidden_size(), config.connector, gen));
  llm = register_module("llm", std::move(lm));
  set_stage(config.stage);
}

void LlavaModel::set_stage(int stage) {
  VLMC_CHECK(stage == 1 || stage == 2, "LlavaModel: stage ", stage, " must be 1 (connector) or 2 (connector + LLM)");
  vision_encoder->set_requires_grad(false);
  connector->set_requires_grad(true);
  llm->set_requires_grad(stage == 2);
  stage_ = stage;
}

std::vector<Tensor> LlavaModel::trainable_parameters() const {
  std::vector<Tensor> out;
  for (const Tensor& p : parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

Tensor LlavaModel::encode_images(const Tensor& images) {
  return connector->forward(vision_features(images));  // [num_images, N', Dllm]
}

Tensor LlavaModel::vision_features(const Tensor& images) {
  Tensor features;  // [num_images, N, Dv]
  {
    // The vision tower is frozen: no graph is kept for it in either stage.
    NoGradGuard no_grad;
    const std::vector<Tensor> hidden = vision_encoder->hidden_states(images);
    const int64_t count = static_cast<int64_t>(hidden.size());
    const int64_t layer = config_.select_layer < 0 ? count + config_.select_layer : config_.select_layer;
    VLMC_CHECK(layer >= 0 && layer < count, "LlavaModel: select_layer ", config_.select_layer,
               " is out of range for a vision encoder with ", count, " hidden states");
    features = hidden[static_cast<size_t>(layer)];
    const int64_t dv = vision_encoder->hidden_size();
    VLMC_CHECK(features.dim() == 3 && features.size(2) == dv, "LlavaModel: vision hidden state ",
               shape_str(features.shape()), " must be [num_images, 1+N, ", dv, "]");
    if (!config_.keep_cls) {
      VLMC_CHECK(features.size(1) >= 2, "LlavaModel: vision hidden state ", shape_str(features.shape()),
                 " needs the CLS token and at least one patch token");
      features = features.narrow(1, 1, features.size(1) - 1);  // drop CLS: [num_images, N, Dv]
    }
    features = features.contiguous();
  }
  return features;
}

SpliceResult LlavaModel::prepare_inputs(const Tensor& input_ids, const Tensor& images, const Tensor& labels,
                                        const Tensor& text_mask) {
  return prepare_inputs_impl(input_ids, images, labels, text_mask, /*images_are_features=*/false);
}

SpliceResult LlavaModel::prepare_inputs_from_features(const Tensor& input_ids, const Tensor& features,
                                                      const Tensor& labels, const Tensor& text_mask) {
  return prepare_inputs_impl(input_ids, features, labels, text_mask, /*images_are_features=*/true);
}

SpliceResult LlavaModel::prepare_inputs_impl(const Tensor& input_ids, const Tensor& images, const Tensor& labels,
                                             const Tensor& text_mask, bool images_are_features) {
  const Tensor table = llm->embed_tokens();  // [V, D]
  const SpliceOptions& o = config_.splice;
  const int64_t num_images = images.defined() ? images.size(0) : 0;
  // Count the placeholders before running the encoder, so that a mismatch is
  // reported in the caller's terms and costs no vision forward. (With
  // prepend_image_if_missing the splice itself counts the extra slots.)
  if (!o.prepend_image_if_missing && input_ids.defined() && input_ids.dtype() == DType::i64) {
    const std::vector<int64_t> ids = input_ids.to_vector<int64_t>();
    std::vector<int64_t> keep;
    if (text_mask.defined() && text_mask.shape() == input_ids.shape()) keep = text_mask.to_vector<int64_t>();
    int64_t placeholders = 0;
    for (size_t i = 0; i < ids.size(); ++i)
      placeholders += ids[i] == o.image_token_id && (keep.empty() || keep[i] != 0);
    VLMC_CHECK(placeholders == num_images, "LlavaModel.prepare_inputs: input_ids ", shape_str(input_ids.shape()),
               " hold ", placeholders, " <image> placeholders (id ", o.image_token_id, ") but ", num_images,
               " images were given", images.defined() ? " (images " + shape_str(images.shape()) + ")" : "");
  }
  Tensor visual;  // [num_images, N', D]
  if (num_images > 0) {
    visual = images_are_features ? connector->forward(images) : encode_images(images);
  } else {
    visual = Tensor::zeros({0, 1, table.size(1)}, table.dtype(), table.device());
  }
  return splice_image_embeddings(input_ids, table, visual, labels, text_mask, o);
}

LlavaOutput LlavaModel::forward(const Tensor& input_ids, const Tensor& images, const Tensor& labels,
                                const Tensor& text_mask) {
  LlavaOutput out;
  out.inputs = prepare_inputs(input_ids, images, labels, text_mask);
  out.logits = llm->forward(out.inputs.inputs_embeds, out.inputs.attention_mask, out.inputs.position_ids);
  if (labels.defined()) out.loss = causal_lm_loss(out.logits, out.inputs.labels);
  return out;
}

Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels, int64_t ignore_index) {
  VLMC_CHECK(logits.dim() == 3, "causal_lm_loss: logits ", shape_str(logits.shape()), " must be [B, L, V]");
  VLMC_CHECK(labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
             "causal_lm_loss: labels ", shape_str(labels.shape()), " must be [B, L] for logits ",
             shape_str(logits.shape()));
  const int64_t batch = logits.size(0), length = logits.size(1), vocab = logits.size(2);
  VLMC_CHECK(length >= 2, "causal_lm_loss: logits ", shape_str(logits.shape()),
             " need at least 2 positions to predict a next token");
  // Position t predicts the token at t + 1.
  const Tensor pred = logits.narrow(1, 0, length - 1).reshape({batch * (length - 1), vocab});
  const Tensor target = labels.narrow(1, 1, length - 1).contiguous().reshape({batch * (length - 1)});
  return cross_entropy(pred, target, ignore_index);
}

}  // namespace vlmc::nn
