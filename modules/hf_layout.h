// Where each of vlmc's tensors lives in a Hugging Face checkpoint: the one
// table the loader (hf_checkpoint.cpp) and the writer (hf_export.cpp) share,
// so that what is written is exactly what is read back.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "modules/module.h"

namespace vlmc::nn {

enum class HfKeyLayout {
  llama,          // LlamaForCausalLM: model.*, lm_head.*
  clip,           // CLIPVisionModel / CLIPModel: vision_model.*
  llava_legacy,   // LlavaForConditionalGeneration, transformers <= 4.51
  llava_newer,    // LlavaForConditionalGeneration, newer transformers
  llava_original  // LlavaLlamaForCausalLM (the tower's part is `clip`, in its own folder)
};

// One module's tensors and how their state_dict names become file keys.
struct HfKeyGroup {
  const Module* module;
  std::string module_prefix;                            // in messages: "llm.", "connector.", ...
  std::function<std::string(const std::string&)> key;  // state_dict name -> file key
  bool in_tower_folder = false;                          // llava_original: read from --vision-tower
};

// The groups of a model with these parts (null where the layout has none).
std::vector<HfKeyGroup> hf_key_groups(HfKeyLayout layout, const Module* vision, const Module* llm,
                                      const Module* connector);

}  // namespace vlmc::nn
