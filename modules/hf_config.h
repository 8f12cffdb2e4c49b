// Hugging Face config.json files -> the configs vlmc's models are built from.
//
// The kinds vlmc loads (detected from "architectures", else "model_type"):
//   LlamaForCausalLM (llama)                       a language model on its own
//   CLIPVisionModel (clip_vision_model)            a vision tower on its own
//   CLIPModel (clip)                               its vision half (what LLaVA's --vision-tower names)
//   LlavaForConditionalGeneration (llava)          transformers' LLaVA: text_config, vision_config, projector
//   LlavaLlamaForCausalLM (llava_llama)            the original LLaVA repository's layout: LLaMA's keys at the
//                                                  top, mm_* keys for the projector, the tower in another folder
// Missing keys take transformers 4.45's defaults (LlavaConfig's default vision
// tower is CLIP ViT-L/14-336). A key vlmc cannot honour (rope_scaling,
// attention_bias, a non-LLaMA text model, a SigLIP tower, several feature
// layers) is an error naming the file and the key, never silently ignored.
#pragma once

#include <string>
#include <vector>

#include "modules/clip_vision.h"
#include "modules/llama.h"

namespace vlmc::nn {

enum class HfKind { llama, clip_vision, clip, llava, llava_original };
const char* hf_kind_name(HfKind kind);  // the architectures name, e.g. "LlavaForConditionalGeneration"

// What LLaVA adds on top of its two models, from either layout.
struct HfLlavaFields {
  int64_t image_token_index = -200;        // HF: an id in the vocabulary (32000); original: -200
  int64_t vision_feature_layer = -2;       // mm_vision_select_layer
  bool keep_cls = false;                   // strategy "full" / select_feature "cls_patch"
  std::string projector_type = "mlp2x_gelu";  // vlmc's projector name (modules/llava.h)
  std::string image_aspect_ratio;          // original layout: "pad", "square", ... ("" when absent)
  std::string vision_tower;                // original layout: mm_vision_tower, as written
  int64_t mm_hidden_size = 0;              // original layout: the tower's width (0 when absent)
};

// The language model's special ids (text_config or the top level; -1 when
// absent). transformers allows a list of EOS ids: all are kept.
struct HfTokenIds {
  int64_t bos = -1, pad = -1;
  std::vector<int64_t> eos;
};

struct HfModelConfig {
  std::string path;  // the config.json read
  HfKind kind = HfKind::llama;
  HfTokenIds ids;
  LlamaConfig text;         // llama, llava, llava_original
  CLIPVisionConfig vision;  // clip_vision, clip, llava
  HfLlavaFields llava;      // llava, llava_original
};

// Reads DIR/config.json. Errors name the file and the key.
HfModelConfig read_hf_config(const std::string& dir);

}  // namespace vlmc::nn
