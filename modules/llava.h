// The LLaVA pipeline (seed section 5.2.3, with LLaVA's own behaviour where the
// seed simplifies): a frozen vision encoder, a connector chosen by name, and a
// language model that reads the text embeddings with the visual tokens spliced
// in at each <image> placeholder.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "modules/connector.h"
#include "modules/layers.h"

namespace vlmc::nn {

// ---- the two models LlavaModel wires together --------------------------------------

// A vision tower that exposes every layer's hidden states, as Hugging Face's
// CLIPVisionModel(output_hidden_states=True): element 0 is the embeddings'
// output and element i the i-th transformer layer's, each [B, 1+N, Dv] with
// the CLS token first. LLaVA reads element -2 (the second-to-last layer).
class VisionEncoder : public Module {
 public:
  virtual std::vector<Tensor> hidden_states(const Tensor& images) = 0;
  virtual int64_t hidden_size() const = 0;  // Dv
};

// A causal language model seen from LLaVA: its token embedding table and a
// forward over embeddings (the splice replaces the embedding lookup).
class LanguageModel : public Module {
 public:
  // The input embedding table [V, D] itself (a parameter, so that the splice's
  // gradient reaches it in stage 2).
  virtual Tensor embed_tokens() const = 0;
  // inputs_embeds [B, L, D], attention_mask i64 [B, L] (1 = real token),
  // position_ids i64 [B, L] -> logits [B, L, V].
  virtual Tensor forward(const Tensor& inputs_embeds, const Tensor& attention_mask,
                         const Tensor& position_ids) = 0;
  int64_t hidden_size() const { return embed_tokens().size(1); }
  int64_t vocab_size() const { return embed_tokens().size(0); }
};

// The smallest language model with that interface, for tests and examples:
// logits = lm_head(inputs_embeds), each position on its own (it ignores the
// mask and the positions). state_dict: embed_tokens.weight [V, D],
// lm_head.weight [V, D] (no bias, as LLaMA's head).
class TinyLanguageModel : public LanguageModel {
 public:
  TinyLanguageModel(int64_t vocab_size, int64_t hidden_size, Generator& gen = default_generator());
  Tensor embed_tokens() const override { return embedding->weight; }
  Tensor forward(const Tensor& inputs_embeds, const Tensor& attention_mask,
                 const Tensor& position_ids) override;

  // An embedding table as nn.Embedding holds it: weight [V, D], N(0, 1) init.
  class Embedding : public Module {
   public:
    Embedding(int64_t num, int64_t dim, Generator& gen);
    Tensor weight;
  };
  std::shared_ptr<Embedding> embedding;  // "embed_tokens"
  std::shared_ptr<Linear> lm_head;       // "lm_head"
};

// ---- LLaVA's projectors beside the seed's connectors -------------------------------

// LLaVA's mlp{N}x_gelu: Linear(Dv, Dllm), then (GELU, Linear(Dllm, Dllm)) N-1
// times, an nn.Sequential whose Linear layers are named 0, 2, 4, ...
// (mlp2x_gelu is LLaVA-1.5's projector, the seed's MLPConnector without its
// "mlp." prefix).
class MlpGeluProjector : public Connector {
 public:
  MlpGeluProjector(int64_t depth, int64_t dim_vision, int64_t dim_llm,
                   Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;
  int64_t depth() const { return static_cast<int64_t>(linears_.size()); }

 private:
  std::vector<std::shared_ptr<Linear>> linears_;  // children "0", "2", ...
};

// LLaVA's identity projector: the features pass through unchanged (Dv == Dllm).
class IdentityProjector : public Connector {
 public:
  explicit IdentityProjector(int64_t dim) : dim_(dim) {}
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

 private:
  int64_t dim_;
};

// "linear", "mlp", "mlp{N}x_gelu" (N >= 1), "identity", "downsample",
// "c-abstractor", "dynamic", "ocr".
std::vector<std::string> projector_types();

// "mlp{N}x_gelu" -> N (digits only, as LLaVA's regex); nullopt for any other name.
std::optional<int64_t> mlp_gelu_depth(const std::string& name);

// Builds a projector by name. The dims are dim_vision -> dim_llm; the other
// fields of `config` (grid_size, max_tokens, ...) go to the seed's connectors
// through make_connector, whose type is set from `name`. An unknown name, or
// identity with dim_vision != dim_llm, is an error.
std::shared_ptr<Connector> make_projector(const std::string& name, int64_t dim_vision,
                                          int64_t dim_llm, const ConnectorConfig& config = {},
                                          Generator& gen = default_generator());

// ---- the model ------------------------------------------------------------------------

struct LlavaConfig {
  std::string projector_type = "mlp2x_gelu";  // see projector_types()
  ConnectorConfig connector;                  // the seed connectors' other arguments
  // Which hidden state of the vision encoder feeds the projector (Python
  // indexing into hidden_states(): -2 = the second-to-last layer, as LLaVA).
  int64_t select_layer = -2;
  bool keep_cls = false;   // false: LLaVA's "patch" features (CLS dropped)
  int stage = 2;           // 2 = the seed's defaults (freeze_vision, not freeze_llm)
  SpliceOptions splice;    // image_token_id -200, max_length, ...
};

// What LlavaModel::forward returns.
struct LlavaOutput {
  Tensor logits;           // [B, L, V]
  Tensor loss;             // scalar; undefined without labels
  SpliceResult inputs;     // the spliced inputs the language model read
};

class LlavaModel : public Module {
 public:
  // state_dict names as the seed's LLaVAModel: vision_encoder.*, connector.*, llm.*.
  LlavaModel(std::shared_ptr<VisionEncoder> vision_encoder, std::shared_ptr<LanguageModel> llm,
             const LlavaConfig& config = {}, Generator& gen = default_generator());

  // images [num_images, ...] -> visual tokens [num_images, N', Dllm]. The
  // encoder runs without autograd (it is frozen); the projector records.
  // encode_images(x) == connector->forward(vision_features(x)).
  Tensor encode_images(const Tensor& images);
  // The frozen encoder alone: images -> the features the projector reads,
  // [num_images, N, Dv] (hidden state select_layer, CLS dropped unless
  // keep_cls), contiguous and without a graph. A trainer may compute them
  // once and reuse them in every epoch (prepare_inputs_from_features).
  Tensor vision_features(const Tensor& images);

  // LLaVA's prepare_inputs_labels_for_multimodal: input_ids i64 [B, T] with
  // image_token_id at each <image>; images hold one image per placeholder, in
  // order across the batch (undefined when there is none); labels i64 [B, T]
  // or undefined; text_mask [B, T] (0 = padding) or undefined. Labels are -100
  // on image tokens and padding; `truncated` counts tokens cut by max_length.
  SpliceResult prepare_inputs(const Tensor& input_ids, const Tensor& images,
                              const Tensor& labels = Tensor(), const Tensor& text_mask = Tensor());
  // The same from precomputed vision_features() [num_images, N, Dv] (or
  // undefined when there is no image): the projector and the splice run here.
  SpliceResult prepare_inputs_from_features(const Tensor& input_ids, const Tensor& features,
                                            const Tensor& labels = Tensor(),
                                            const Tensor& text_mask = Tensor());

  // prepare_inputs, then the language model. With labels, the loss is LLaVA's
  // (Hugging Face's causal LM loss): cross-entropy of logits[:, :-1] against
  // labels[:, 1:], positions labelled -100 skipped, mean over the rest.
  LlavaOutput forward(const Tensor& input_ids, const Tensor& images,
                      const Tensor& labels = Tensor(), const Tensor& text_mask = Tensor());

  // The seed's two stages: the vision encoder is always frozen; stage 1
  // trains the connector only; stage 2 the connector and the language model.
  void set_stage(int stage);
  int stage() const { return stage_; }
  // The parameters an optimizer should get in the current stage.
  std::vector<Tensor> trainable_parameters() const;

  const LlavaConfig& config() const { return config_; }

  std::shared_ptr<VisionEncoder> vision_encoder;
  std::shared_ptr<Connector> connector;
  std::shared_ptr<LanguageModel> llm;

 private:
  SpliceResult prepare_inputs_impl(const Tensor& input_ids, const Tensor& images, const Tensor& labels,
                                   const Tensor& text_mask, bool images_are_features);

  LlavaConfig config_;
  int stage_ = 2;
};

// LLaVA's shifted next-token loss: logits [B, L, V], labels i64 [B, L].
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels, int64_t ignore_index = -100);

}  // namespace vlmc::nn
