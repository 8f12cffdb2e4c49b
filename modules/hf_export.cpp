#include "modules/hf_export.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/output_folder.h"
#include "core/io/tensor_io.h"

namespace vlmc::nn {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// The files besides the weights that make a folder usable by AutoTokenizer /
// AutoProcessor; copied as they are from the source folder when present.
constexpr const char* kCompanionFiles[] = {
    "tokenizer.model",         "tokenizer.json",        "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json",       "preprocessor_config.json", "processor_config.json", "chat_template.json",
    "generation_config.json"};

void put_ids(json& j, const HfTokenIds& ids) {
  if (ids.bos >= 0) j["bos_token_id"] = ids.bos;
  if (ids.eos.size() == 1) j["eos_token_id"] = ids.eos[0];
  if (ids.eos.size() > 1) j["eos_token_id"] = ids.eos;
  if (ids.pad >= 0) j["pad_token_id"] = ids.pad;
}

json llama_json(const LlamaConfig& c, const HfTokenIds& ids) {
  json j;
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = nullptr;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["initializer_range"] = c.initializer_range;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  put_ids(j, ids);
  return j;
}

json clip_json(const CLIPVisionConfig& c) {
  json j;
  j["model_type"] = "clip_vision_model";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_channels"] = c.num_channels;
  j["image_size"] = c.image_size;
  j["patch_size"] = c.patch_size;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["hidden_act"] = c.hidden_act;
  return j;
}

// The layout a model is written in.
HfKeyLayout output_layout(const PretrainedModel& m, const ExportOptions& options) {
  switch (m.config.kind) {
    case HfKind::llama: return HfKeyLayout::llama;
    case HfKind::clip:
    case HfKind::clip_vision: return HfKeyLayout::clip;
    case HfKind::llava:
      VLMC_CHECK(options.llava_layout == HfKeyLayout::llava_legacy || options.llava_layout == HfKeyLayout::llava_newer,
                 "save_pretrained: a LlavaForConditionalGeneration is written in the transformers <= 4.51 or the "
                 "newer key layout");
      return options.llava_layout;
    case HfKind::llava_original: return HfKeyLayout::llava_original;
  }
  throw Error("save_pretrained: unknown model kind");
}

}  // namespace

std::string hf_config_json(const PretrainedModel& m, HfKeyLayout layout) {
  const HfModelConfig& c = m.config;
  json j;
  switch (layout) {
    case HfKeyLayout::llama:
      j["architectures"] = {"LlamaForCausalLM"};
      j.update(llama_json(c.text, c.ids));
      break;
    case HfKeyLayout::clip:
      j["architectures"] = {"CLIPVisionModel"};
      j.update(clip_json(c.vision));
      break;
    case HfKeyLayout::llava_legacy:
    case HfKeyLayout::llava_newer: {
      VLMC_CHECK(c.llava.projector_type == "mlp2x_gelu", "save_pretrained: transformers' LLaVA has only the "
                 "mlp2x_gelu projector (Linear, GELU, Linear); this model's is ", c.llava.projector_type);
      VLMC_CHECK(c.llava.image_token_index >= 0 && c.llava.image_token_index < c.text.vocab_size,
                 "save_pretrained: transformers' LLaVA needs an <image> id in the vocabulary (image_token_index ",
                 c.llava.image_token_index, ", vocab_size ", c.text.vocab_size, ")");
      j["architectures"] = {"LlavaForConditionalGeneration"};
      j["model_type"] = "llava";
      j["image_token_index"] = c.llava.image_token_index;
      j["projector_hidden_act"] = "gelu";
      j["vision_feature_layer"] = c.llava.vision_feature_layer;
      j["vision_feature_select_strategy"] = c.llava.keep_cls ? "full" : "default";
      // transformers 4.45 takes fewer <image> tokens than this for the legacy
      // one-placeholder-per-image prompt: it must be the visual token count.
      j["image_seq_length"] = c.vision.num_patches() + (c.llava.keep_cls ? 1 : 0);
      j["ignore_index"] = -100;
      j["tie_word_embeddings"] = c.text.tie_word_embeddings;
      j["text_config"] = llama_json(c.text, c.ids);
      j["vision_config"] = clip_json(c.vision);
      break;
    }
    case HfKeyLayout::llava_original:
      j["architectures"] = {"LlavaLlamaForCausalLM"};
      j.update(llama_json(c.text, c.ids));
      j["model_type"] = "llava_llama";
      j["mm_projector_type"] = c.llava.projector_type;
      j["mm_vision_select_layer"] = c.llava.vision_feature_layer;
      j["mm_vision_select_feature"] = c.llava.keep_cls ? "cls_patch" : "patch";
      j["mm_hidden_size"] = c.vision.hidden_size;
      if (!c.llava.vision_tower.empty()) j["mm_vision_tower"] = c.llava.vision_tower;
      if (!c.llava.image_aspect_ratio.empty()) j["image_aspect_ratio"] = c.llava.image_aspect_ratio;
      j["mm_use_im_start_end"] = false;
      j["mm_use_im_patch_token"] = false;
      break;
  }
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void save_pretrained(const PretrainedModel& m, const std::string& dir, const ExportOptions& options) {
  const HfKeyLayout layout = output_layout(m, options);
  const std::string config = hf_config_json(m, layout);  // the config's errors before anything is written
  std::map<std::string, Tensor> tensors;
  size_t replaced = 0;
  for (const HfKeyGroup& group :
       hf_key_groups(layout, m.vision.get(), m.llama.get(), m.llava ? m.llava->connector.get() : nullptr)) {
    // The original layout keeps its tower in another folder: not written.
    if (group.in_tower_folder || group.module == nullptr) continue;
    for (const auto& [name, t] : group.module->state_dict()) {
      const auto it = options.replace.find(group.module_prefix + name);
      if (it != options.replace.end()) ++replaced;
      tensors.emplace(group.key(name), it != options.replace.end() ? it->second : t);
    }
  }

  VLMC_CHECK(replaced == options.replace.size(), "save_pretrained: ", options.replace.size() - replaced,
             " of the tensors to replace name no parameter of the model (\"", options.replace.begin()->first, "\", ...)");
  io::write_new_folder(dir, "save_pretrained", [&](const fs::path& tmp) {
    io::write_file(tmp / "config.json", config, "save_pretrained");
    io::save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    if (!m.dir.empty())
      for (const char* name : kCompanionFiles) {
        const fs::path src = fs::path(m.dir) / name;
        if (fs::is_regular_file(src) && !options.extra_files.count(name)) fs::copy_file(src, tmp / name);
      }
    for (const auto& [name, text] : options.extra_files) io::write_file(tmp / name, text, "save_pretrained");
  });
}

}  // namespace vlmc::nn
