// An original-layout LLaVA (LlavaLlamaForCausalLM: what LLaVA's repository and
// a `vlmc train` stage 2 write) as transformers' LlavaForConditionalGeneration,
// the step llava-hf's convert_llava_weights_to_hf.py takes:
//
//   "<image>"   becomes a token of the vocabulary: the tokenizer's own when it
//               has one, else the first free id (len(tokenizer)), added to
//               added_tokens.json and tokenizer_config.json's added_tokens_decoder
//               as a special token; config.json's image_token_index names it
//   vocabulary  when that id is past the model's rows, embed_tokens and lm_head
//               grow to the next multiple of 64 (32000 -> 32064 for LLaMA's),
//               the new rows the mean of the old ones (llava-hf samples around
//               that mean; the mean is its deterministic centre). The image
//               token's row is never read as an input: the splice replaces it
//   processor   preprocessor_config.json from the tower's folder, and a
//               processor_config.json (LlavaProcessor, patch_size, the feature
//               strategy) so AutoProcessor expands <image> as the model expects
//
// The model computes the same logits as before (tests/train/test_llava_to_hf.cpp).
// One difference stays, as with llava-hf's own conversions: transformers'
// CLIPImageProcessor does not pad to a square, so for LLaVA-1.5 (image_aspect_ratio
// "pad") its pixels differ from LLaVA's on non-square images; vlmc generate on the
// converted folder does as transformers does.
#pragma once

#include <string>

#include "modules/hf_checkpoint.h"

namespace vlmc::train {

// `model` must be an original-layout LLaVA (config.kind llava_original) whose
// tokenizer files are in model.dir; its processor is read from `tower_dir`.
// Writes `out` (a new folder, whole or not at all) in `layout` (llava_legacy:
// what transformers <= 4.51 loads; llava_newer). Returns the image token's id.
int64_t save_as_transformers_llava(const nn::PretrainedModel& model, const std::string& tower_dir,
                                   const std::string& out, nn::HfKeyLayout layout = nn::HfKeyLayout::llava_legacy);

}  // namespace vlmc::train
