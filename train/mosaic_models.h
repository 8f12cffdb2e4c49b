// The models of a fashion-mosaic run and what the trainer and the evaluation
// both do with them: build them from the settings, pool the encoder's
// features per quadrant, compute frozen features once per mosaic, and fill
// the image slots with text for the language model's stage 0.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "modules/clip_vision.h"
#include "modules/llama.h"
#include "modules/llava.h"
#include "train/batches.h"
#include "train/mosaic.h"
#include "train/tokenizer.h"
#include "train/train_config.h"

namespace vlmc::train {

// Generator seeds derived from run.seed (seed * 1000003 + these), one per use,
// so that no two sets or draws share numbers.
namespace seeds {
inline constexpr uint64_t kPool = 11, kPoolQuestions = 12, kEval = 13, kEvalQuestions = 14,
                          kVisionMosaics = 15, kWeights = 16, kExtraQuestions = 17,
                          kValidation = 18, kValidationQuestions = 19;
inline uint64_t derive(int64_t run_seed, uint64_t use) { return static_cast<uint64_t>(run_seed) * 1000003u + use; }
}  // namespace seeds

// The models of a run, wired as LLaVA: llava->vision_encoder is `vision`,
// llava->llm is `language`.
struct MosaicModels {
  std::shared_ptr<nn::CLIPVisionModel> vision;
  // [10, Dv]: stage 0's per-cell classifier (named for the 2x2 job: "quadrant_head.*"
  // is the key checkpoints and stage-0 caches hold it under)
  std::shared_ptr<nn::Linear> quadrant_head;
  std::shared_ptr<nn::LlamaForCausalLM> language;
  std::shared_ptr<nn::LlavaModel> llava;
  Device device = Device::cpu();  // where every parameter and buffer lives

  // Moves every model (parameters, buffers) to `to`.
  void to(Device to);

  // llava's names ("vision_encoder.*", "connector.*", "llm.*") and "quadrant_head.*".
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);
};

MosaicModels build_models(const TrainConfig& config, const Tokenizer& tokenizer);

// features [B, N, Dv] of a g x g patch grid -> class logits [B * G*G, 10] of
// a G x G mosaic's cells, row-major (for 2x2: top left, top right, bottom
// left, bottom right): each cell's patches averaged (g a multiple of G). In
// the 4x4 task with one patch per item the head reads single patches: the
// encoder never learns the 2x2-pooled layout a pooling connector reads.
Tensor cell_logits(const nn::Linear& head, const Tensor& features, int64_t mosaic_grid = 2);

// Hidden state `select_layer` (Python indexing) without its CLS token: [B, N, Dv].
Tensor patch_features(const std::vector<Tensor>& hidden, int64_t select_layer);

// begin, begin + 1, ..., end - 1.
std::vector<int64_t> row_range(int64_t begin, int64_t end);

// The frozen encoder's features of every mosaic of a set, computed once
// without a graph, on the models' device: [M, N, Dv].
Tensor features_of(MosaicModels& models, const MosaicSet& set);

// Stage 0's language-model inputs: the batch's <image> replaced by the true
// classes as text (slot_word_ids on a grid x grid layout).
SpliceResult text_slot_inputs(const MosaicModels& models, const Tokenizer& tokenizer, const MosaicSet& set,
                              const TextBatch& batch, int64_t grid);

}  // namespace vlmc::train
