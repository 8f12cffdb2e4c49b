// Where a data.format = "llava" run's model comes from, resolved once from the
// config and shared by the trainer and the memory plan:
//
//   model.vision_tower + model.language_model (+ model.projector): a CLIP
//       folder and a LLaMA folder, as LLaVA's own stage 1 starts;
//   model.pretrained: a whole LLaVA, transformers' LlavaForConditionalGeneration
//       folder (llava-hf/llava-1.5-7b-hf) or LLaVA's original layout (what
//       `vlmc train` stage 2 writes as model/, liuhaotian/llava-v1.5-7b), to
//       fine-tune further; its tower comes from model.vision_tower when given
//       (an original-layout folder names its tower by mm_vision_tower).
//
// Nothing large is read here: only config.json files.
#pragma once

#include <string>

#include "modules/hf_config.h"
#include "train/train_config.h"

namespace vlmc::train {

struct LlavaSources {
  std::string pretrained;      // the LLaVA folder, or "" (two folders)
  nn::HfKind pretrained_kind = nn::HfKind::llava;
  nn::HfModelConfig tower;     // the tower's config (.vision)
  nn::HfModelConfig language;  // the language model's config (.text, .ids)
  std::string tower_dir;       // the tower's folder: "" for a transformers LLaVA (its tower is inside)
  std::string tokenizer_dir;   // tokenizer.model and its files
  std::string processor_dir;   // preprocessor_config.json
};

// Checks the keys against each other and the folders' kinds, naming what is
// wrong: model.pretrained with model.language_model or model.projector; a
// folder of another kind; a pretrained projector other than `connector`; a
// vision_select_layer or vision_select_feature other than the folder's.
LlavaSources resolve_llava_sources(const TrainConfig& c);

}  // namespace vlmc::train
