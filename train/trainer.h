// The fashion-mosaic training run: LLaVA's recipe on 2x2 Fashion-MNIST mosaics.
//
//   stage 0  (cached per stage-0 settings under run.cache_dir)
//     vision:   the CLIP-architecture encoder learns the four quadrants' classes
//               (a linear head on the quadrant-pooled features the connector reads)
//     language: the LLaMA-architecture model learns captions and answers from
//               text placed where the image will stand (batches.h: slot_word_ids),
//               so it reads its context, and later what the connector writes there
//   both are then frozen; their features are computed once per mosaic
//   stage 1  connector only, on captions (LLaVA's feature alignment)
//   stage 2  connector + language model, on questions (LLaVA's instruction tuning)
//   eval     exact-match answers on held-out test-split mosaics, per question
//            kind, beside the frozen encoder's own per-quadrant accuracy
//
// Outputs under runs/<name>/: config.toml, metrics.jsonl, loss.png,
// checkpoints/, results.json. See docs/training.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "modules/clip_vision.h"
#include "modules/llama.h"
#include "modules/llava.h"
#include "train/mosaic.h"
#include "train/tokenizer.h"
#include "train/train_config.h"

namespace vlmc::train {

// The models of a run, wired as LLaVA: llava->vision_encoder is `vision`,
// llava->llm is `language`.
struct MosaicModels {
  std::shared_ptr<nn::CLIPVisionModel> vision;
  std::shared_ptr<nn::Linear> quadrant_head;  // [10, Dv]: stage 0's classifier
  std::shared_ptr<nn::LlamaForCausalLM> language;
  std::shared_ptr<nn::LlavaModel> llava;

  // llava's names ("vision_encoder.*", "connector.*", "llm.*") and "quadrant_head.*".
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);
};

MosaicModels build_models(const TrainConfig& config, const Tokenizer& tokenizer);

// features [B, N, Dv] of a g x g patch grid -> class logits [B * 4, 10], quadrants
// in the order top left, top right, bottom left, bottom right.
Tensor quadrant_logits(const nn::Linear& head, const Tensor& features);

struct KindScore {
  int64_t correct = 0, total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

struct EvalReport {
  int64_t mosaics = 0;
  KindScore encoder;                        // per-quadrant classification (4 per mosaic)
  KindScore answers;                        // every question, exact match
  // The language model alone: the same questions with the true classes as
  // text in the image slots (stage 0's input), i.e. a perfect encoder and connector.
  KindScore oracle;
  std::map<std::string, KindScore> oracle_kinds;
  std::map<std::string, KindScore> kinds;   // "what", "where", "count", "exists", "caption"
  nlohmann::json to_json() const;
};

// Greedy exact match without generating: the answer is produced exactly (then
// <eos>) iff the argmax at every answer position is the answer's next token,
// so one teacher-forced forward scores a whole batch.
EvalReport evaluate(MosaicModels& models, const TrainConfig& config, const Tokenizer& tokenizer);

// Prints the report: per-kind lines, then "answer accuracy: NN.N %" and
// "encoder accuracy: NN.N %".
void print_report(const EvalReport& report, std::FILE* out);

struct TrainOptions {
  bool resume = false;       // continue runs/<name> from its last checkpoint
  std::string config_toml;   // the effective settings, written to runs/<name>/config.toml
  nlohmann::json config_json;
};

struct StageTiming {
  double seconds = 0.0;       // wall time of the steps run by this process
  double tokens_per_s = 0.0;  // language-model tokens (text + visual) per second
  double final_loss = 0.0;    // mean loss over the last 10 % of the steps
};

struct TrainResult {
  EvalReport eval;
  std::map<std::string, StageTiming> stages;  // the stages this process ran
  int64_t connector_parameters = 0;
  int64_t visual_tokens = 0;                  // per image, what the connector writes
};

// Runs stage 0 (or loads it from the cache), stages 1 and 2, and the evaluation.
TrainResult run_training(const TrainConfig& config, const TrainOptions& options);

}  // namespace vlmc::train
