#include "train/llava_sources.h"

#include "core/error.h"
#include "modules/hf_checkpoint.h"

namespace vlmc::train {

LlavaSources resolve_llava_sources(const TrainConfig& c) {
  LlavaSources s;
  if (c.model_pretrained.empty()) {
    VLMC_CHECK(!c.model_vision_tower.empty(), "model.vision_tower: a data.format = \"llava\" run needs a CLIP folder "
               "(or model.pretrained, a whole LLaVA)");
    VLMC_CHECK(!c.model_language_model.empty(), "model.language_model: a data.format = \"llava\" run needs a LLaMA "
               "folder (or model.pretrained, a whole LLaVA)");
    s.tower = nn::read_hf_config(c.model_vision_tower);
    VLMC_CHECK(s.tower.kind == nn::HfKind::clip_vision || s.tower.kind == nn::HfKind::clip, "model.vision_tower: ",
               s.tower.path, " is a ", nn::hf_kind_name(s.tower.kind), ", not a CLIPVisionModel or CLIPModel");
    s.language = nn::read_hf_config(c.model_language_model);
    VLMC_CHECK(s.language.kind == nn::HfKind::llama, "model.language_model: ", s.language.path, " is a ",
               nn::hf_kind_name(s.language.kind), ", not a LlamaForCausalLM");
    s.tower_dir = c.model_vision_tower;
    s.tokenizer_dir = c.model_language_model;
    s.processor_dir = c.model_vision_tower;
    return s;
  }

  VLMC_CHECK(c.model_language_model.empty(), "model.language_model (", c.model_language_model,
             ") and model.pretrained (", c.model_pretrained, ") both name a language model: keep one");
  VLMC_CHECK(c.model_projector.empty(), "model.projector (", c.model_projector, ") and model.pretrained (",
             c.model_pretrained, ") both name a projector: keep one");
  s.pretrained = c.model_pretrained;
  s.language = nn::read_hf_config(c.model_pretrained);
  s.pretrained_kind = s.language.kind;
  VLMC_CHECK(s.language.kind == nn::HfKind::llava || s.language.kind == nn::HfKind::llava_original,
             "model.pretrained: ", s.language.path, " is a ", nn::hf_kind_name(s.language.kind),
             ", not a LLaVA (transformers' LlavaForConditionalGeneration or LLaVA's original layout)");
  const nn::HfLlavaFields& llava = s.language.llava;
  VLMC_CHECK(llava.projector_type == c.connector, "model.pretrained: ", s.language.path, " holds a ",
             llava.projector_type, " projector but connector is \"", c.connector, "\": set connector = \"",
             llava.projector_type, "\"");
  VLMC_CHECK(llava.vision_feature_layer == c.model_vision_select_layer, "model.vision_select_layer ",
             c.model_vision_select_layer, " differs from ", s.language.path, "'s ", llava.vision_feature_layer,
             ", the layer its projector was trained on: set model.vision_select_layer = ",
             llava.vision_feature_layer);
  const std::string feature = llava.keep_cls ? "cls_patch" : "patch";
  VLMC_CHECK(feature == c.model_vision_select_feature, "model.vision_select_feature \"",
             c.model_vision_select_feature, "\" differs from ", s.language.path, "'s \"", feature,
             "\": set model.vision_select_feature = \"", feature, "\"");
  s.tokenizer_dir = c.model_pretrained;
  if (s.language.kind == nn::HfKind::llava) {
    VLMC_CHECK(c.model_vision_tower.empty(), "model.vision_tower (", c.model_vision_tower, "): ", s.language.path,
               " is a transformers LLaVA, whose tower is inside it: leave model.vision_tower empty");
    s.tower = s.language;
    s.processor_dir = c.model_pretrained;
    return s;
  }
  s.tower_dir = nn::original_tower_dir(s.language, c.model_vision_tower);
  VLMC_CHECK(!s.tower_dir.empty(), "model.pretrained: ", s.language.path, " names its vision tower '",
             llava.vision_tower, "', which is not a folder here: set model.vision_tower to the downloaded CLIP folder");
  s.tower = nn::read_hf_config(s.tower_dir);
  VLMC_CHECK(s.tower.kind == nn::HfKind::clip_vision || s.tower.kind == nn::HfKind::clip, "the vision tower ",
             s.tower.path, " of ", s.language.path, " is a ", nn::hf_kind_name(s.tower.kind),
             ", not a CLIPVisionModel or CLIPModel");
  s.processor_dir = s.tower_dir;
  return s;
}

}  // namespace vlmc::train
