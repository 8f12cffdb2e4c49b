// A LLaVA training run on Hugging Face checkpoints and LLaVA's data files
// (data.format = "llava"; docs/llava-1.5.md):
//
//   model     model.vision_tower (CLIP, frozen) -> connector.type (fresh, or model.projector)
//             -> model.language_model (LLaMA; frozen in stage 1)
//   data      data.json + data.image_folder through the parallel loader (data/llava_loader.h):
//             CLIP preprocessing (data.image_aspect_ratio), the conversation template
//             (data.template) and LLaVA's label masking
//   stage     model.stage 1: the projector alone (stage1.*), LLaVA's feature alignment;
//             model.stage 2: the projector and the language model (stage2.*), instruction tuning.
//             A stage's steps = 0 means data.epochs passes over the data;
//             model.gradient_checkpointing recomputes each decoder layer in the backward
//
// Outputs under runs/<name>/: config.toml, metrics.jsonl, loss.png, checkpoints/
// (the trained parameters only, the optimizer state and, in state.json, every
// process's loader place: --resume continues at the exact sample), results.json
// (timing, the loader's counts: bad samples skipped and named, samples cut at
// data.model_max_length), and the trained model:
//   mm_projector.safetensors             LLaVA's names (its pretrain_mm_mlp_adapter)
//   multi_modal_projector.safetensors    Hugging Face's names
//   model/ (stage 2)                     the whole LLaVA in the original layout
//                                        (LlavaLlamaForCausalLM + its tokenizer; the tower is
//                                        model.vision_tower, named in mm_vision_tower), which
//                                        `vlmc generate --model runs/<name>/model` loads
//   model-hf/ (stage 2, mlp2x_gelu)      the same as transformers' LlavaForConditionalGeneration
//                                        (train/llava_to_hf.h: <image> added to the vocabulary)
#pragma once

#include "train/trainer.h"

namespace vlmc::train {

TrainResult run_llava_training(const TrainConfig& config, const TrainOptions& options);

}  // namespace vlmc::train
