// `vlmc export --checkpoint`: a model trained by `vlmc train` (a checkpoint
// folder, runs/<name>/checkpoints/...) out as
//   --format hf     a transformers LlavaForConditionalGeneration folder
//                   (transformers <= 4.51 keys, what 4.45 loads) with the
//                   mosaic language's tokenizer.json (a `tokenizers` WordLevel
//                   model) and a CLIPImageProcessor for the 56x56 grey mosaics,
//                   so that from_pretrained and AutoProcessor load it;
//   --format llava  the connector alone as LLaVA's mm_projector file.
//
// Two changes make the run's model one transformers can hold, neither of which
// changes a logit (docs/models.md, "Exporting a model trained by vlmc train"):
// - transformers' <image> is an id inside the vocabulary: one token is added
//   (id V = the old vocabulary size) with a zero embedding row (always replaced
//   by visual tokens) and a zero lm_head row (its logit is always 0; the first
//   V logits are unchanged).
// - CLIPImageProcessor always gives 3 channels while the run's encoder reads
//   one: the patch embedding is written with 3 input channels, each holding
//   w / 3, which on a grey image (R = G = B) sums to the same value.
#pragma once

#include <string>

#include "modules/hf_checkpoint.h"
#include "train/mosaic_models.h"
#include "train/tokenizer.h"
#include "train/train_config.h"

namespace vlmc::train {

// A checkpoint of a run, its models rebuilt from the config it recorded.
struct RunCheckpoint {
  std::string dir;
  TrainConfig config;
  MosaicModels models;  // on the CPU, eval mode
};

// Loads `dir` (checksums verified by load_checkpoint; a NaN or an infinity,
// or a state.json without the run's config, is refused).
RunCheckpoint load_run_checkpoint(const std::string& dir);

// The run's model as transformers' LLaVA (new modules; the run's are not
// changed): vocabulary V + 1, a 3-channel patch embedding, the connector as
// mlp2x_gelu. Throws for a connector transformers' LLaVA has not got.
nn::PretrainedModel hf_llava_of(const RunCheckpoint& run);

// The companion files of the folder (their text, as written).
std::string word_level_tokenizer_json(const Tokenizer& tokenizer);  // tokenizer.json
std::string mosaic_tokenizer_config_json(const TrainConfig& config);  // tokenizer_config.json
std::string mosaic_preprocessor_config_json(const TrainConfig& config);  // preprocessor_config.json
std::string mosaic_processor_config_json(const TrainConfig& config);  // processor_config.json
std::string mosaic_generation_config_json();                        // generation_config.json

// `--format hf`. The folder appears whole or not at all; an existing `out` is never replaced.
void export_checkpoint_hf(const RunCheckpoint& run, const std::string& out);
// `--format llava`: out/mm_projector.safetensors (model.mm_projector.*) and
// out/config.json (mm_projector_type, mm_hidden_size, hidden_size, ...), whole or not at all.
void export_checkpoint_llava(const RunCheckpoint& run, const std::string& out);

// A reference for checking an export from outside (tests/golden/
// check_hf_export_checkpoint.py): the first evaluation mosaic and its first
// question in the run's own prompt format, and what vlmc computes for them,
// as a safetensors file: image f32 [56, 56] (pixel / 255), pixel_values f32
// [1, 1, 56, 56] (the encoder's input), input_ids i64 [T] (<bos>, the prompt,
// -200 at <image>), logits f32 [T - 1 + N, V] (the prompt's logits, visual
// tokens spliced in) and answer_ids i64 [K] (the greedy answer, <eos> last
// unless 16 tokens came first); metadata "prompt" and "answer" (the truth),
// "texts" and "text_ids" (JSON: more prompts and answers of the run's format
// and vlmc's ids for them, <bos> first, -200 at <image>).
void write_reference_sample(RunCheckpoint& run, const std::string& path);

}  // namespace vlmc::train
