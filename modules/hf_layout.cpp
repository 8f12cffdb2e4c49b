#include "modules/hf_layout.h"

#include "core/error.h"

namespace vlmc::nn {

namespace {

std::function<std::string(const std::string&)> prefixed(const std::string& prefix) {
  return [prefix](const std::string& name) { return prefix + name; };
}

// Our projector's Sequential index i (0, 2, ...) -> Hugging Face's linear_{i/2+1}.
std::function<std::string(const std::string&)> hf_projector_key(const std::string& prefix) {
  return [prefix](const std::string& name) {
    const size_t dot = name.find('.');
    const int64_t i = std::stoll(name.substr(0, dot));
    return str(prefix, "linear_", i / 2 + 1, name.substr(dot));
  };
}

}  // namespace

std::vector<HfKeyGroup> hf_key_groups(HfKeyLayout layout, const Module* vision, const Module* llm,
                                      const Module* connector) {
  switch (layout) {
    case HfKeyLayout::llama:
      return {{llm, "", prefixed("")}};
    case HfKeyLayout::clip:
      return {{vision, "", prefixed("")}};
    case HfKeyLayout::llava_legacy:
      return {{vision, "vision_encoder.", prefixed("vision_tower.")},
              {llm, "llm.", prefixed("language_model.")},
              {connector, "connector.", hf_projector_key("multi_modal_projector.")}};
    case HfKeyLayout::llava_newer:
      return {{vision, "vision_encoder.", prefixed("model.vision_tower.")},
              {llm, "llm.",
               [](const std::string& name) {  // model.X -> model.language_model.X; lm_head.* as is
                 return name.starts_with("model.") ? "model.language_model." + name.substr(6) : name;
               }},
              {connector, "connector.", hf_projector_key("model.multi_modal_projector.")}};
    case HfKeyLayout::llava_original:
      return {{llm, "llm.", prefixed("")},
              {connector, "connector.",
               [](const std::string& name) {  // LinearProjection's proj.* is LLaVA's bare mm_projector.*
                 return "model.mm_projector." + (name.starts_with("proj.") ? name.substr(5) : name);
               }},
              {vision, "vision_encoder.", prefixed(""), /*in_tower_folder=*/true}};
  }
  throw Error("hf_key_groups: unknown layout");
}

}  // namespace vlmc::nn
