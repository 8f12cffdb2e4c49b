#include "modules/hf_config.h"

#include <cmath>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/json_file.h"
#include "modules/llava.h"

namespace vlmc::nn {

namespace {

using json = nlohmann::json;

// A JSON number that is a whole number (5, 5.0, 1e300).
bool is_whole_number(const json& v) {
  return v.is_number_integer() || (v.is_number_float() && v.get<double>() == std::trunc(v.get<double>()));
}

// The value of a whole JSON number that int64 holds, else nothing. Unsigned
// integers above INT64_MAX and floats outside int64's range are caught before
// any conversion: a float-to-integer cast out of range is undefined
// behaviour, and an unsigned one would wrap to a negative size.
std::optional<int64_t> as_int64(const json& v) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (!is_whole_number(v)) return std::nullopt;
  const double d = v.get<double>();
  if (!(d >= -0x1p63 && d < 0x1p63)) return std::nullopt;
  return static_cast<int64_t>(d);
}

// A JSON object read from `file`, with typed lookups whose errors name the
// file and the key ("text_config.hidden_size"). null counts as absent, as
// transformers' configs write null for "use the default".
class ConfigObject {
 public:
  ConfigObject(const json& obj, std::string file, std::string prefix)
      : obj_(obj), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }
  std::string key_name(const char* key) const { return prefix_ + key; }

  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (const std::optional<int64_t> i = as_int64(v)) return *i;
    if (is_whole_number(v))
      throw Error(str(file_, ": ", key_name(key), " is ", v.dump(), ", not an integer vlmc can hold (int64)"));
    throw Error(str(file_, ": ", key_name(key), " is ", v.dump(), ", not an integer"));
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_number()) throw Error(str(file_, ": ", key_name(key), " is ", v.dump(), ", not a number"));
    return v.get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_boolean()) throw Error(str(file_, ": ", key_name(key), " is ", v.dump(), ", not true or false"));
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    if (!v.is_string()) throw Error(str(file_, ": ", key_name(key), " is ", v.dump(), ", not a string"));
    return v.get<std::string>();
  }
  // A nested object (text_config, vision_config), or an empty one when absent.
  ConfigObject child(const char* key, const json& empty) const {
    if (!has(key)) return ConfigObject(empty, file_, prefix_ + key + ".");
    const json& v = obj_.at(key);
    if (!v.is_object()) throw Error(str(file_, ": ", key_name(key), " is ", v.type_name(), ", not an object"));
    return ConfigObject(v, file_, prefix_ + key + ".");
  }
  const json& raw(const char* key) const { return obj_.at(key); }
  [[noreturn]] void unsupported(const char* key, const std::string& why) const {
    // The key may be absent: its default is what did not fit.
    const std::string value = obj_.contains(key) ? obj_.at(key).dump() : std::string("(absent: the default)");
    throw Error(str(file_, ": ", key_name(key), " = ", value, ": ", why));
  }

 private:
  const json& obj_;
  std::string file_;
  std::string prefix_;
};

HfTokenIds token_ids(const ConfigObject& c) {
  HfTokenIds ids;
  ids.bos = c.integer("bos_token_id", -1);
  ids.pad = c.integer("pad_token_id", -1);
  if (c.has("eos_token_id") && c.raw("eos_token_id").is_array()) {
    for (const json& v : c.raw("eos_token_id")) {
      const std::optional<int64_t> id = as_int64(v);
      if (!id) c.unsupported("eos_token_id", "expected an id or a list of ids");
      ids.eos.push_back(*id);
    }
  } else if (c.has("eos_token_id")) {
    ids.eos.push_back(c.integer("eos_token_id", -1));
  }
  return ids;
}

const json& empty_object() {
  static const json empty = json::object();
  return empty;
}

// `own_type`: the model_type of a config whose LLaMA keys are at the top
// level under another name (the original LLaVA's "llava_llama").
LlamaConfig llama_config(const ConfigObject& c, const char* own_type = "llama") {
  const std::string type = c.string("model_type", "llama");
  if (type != "llama" && type != own_type)
    c.unsupported("model_type", "vlmc's language model is LLaMA's architecture (model_type \"llama\"; Vicuna and "
                                "TinyLlama are llama too)");
  LlamaConfig out;  // LlamaConfig's own defaults are transformers'
  out.vocab_size = c.integer("vocab_size", out.vocab_size);
  out.hidden_size = c.integer("hidden_size", out.hidden_size);
  out.intermediate_size = c.integer("intermediate_size", out.intermediate_size);
  out.num_hidden_layers = c.integer("num_hidden_layers", out.num_hidden_layers);
  out.num_attention_heads = c.integer("num_attention_heads", out.num_attention_heads);
  out.num_key_value_heads = c.integer("num_key_value_heads", out.num_attention_heads);
  out.max_position_embeddings = c.integer("max_position_embeddings", out.max_position_embeddings);
  out.rms_norm_eps = c.number("rms_norm_eps", out.rms_norm_eps);
  out.rope_theta = c.number("rope_theta", out.rope_theta);
  out.initializer_range = c.number("initializer_range", out.initializer_range);
  out.tie_word_embeddings = c.boolean("tie_word_embeddings", out.tie_word_embeddings);
  // What the model would compute differently: refused rather than ignored.
  if (c.has("rope_scaling")) c.unsupported("rope_scaling", "scaled rotary positions are not implemented");
  if (c.boolean("attention_bias", false)) c.unsupported("attention_bias", "q/k/v/o projections with bias are not implemented");
  if (c.boolean("mlp_bias", false)) c.unsupported("mlp_bias", "MLP projections with bias are not implemented");
  if (c.string("hidden_act", "silu") != "silu") c.unsupported("hidden_act", "LLaMA's MLP is SwiGLU (silu)");
  out.validate();  // first: head_dim() divides by num_attention_heads
  if (c.has("head_dim") && c.integer("head_dim", 0) != out.head_dim())
    c.unsupported("head_dim", str("only hidden_size / num_attention_heads = ", out.head_dim(), " is implemented"));
  return out;
}

CLIPVisionConfig clip_vision_config(const ConfigObject& c, const CLIPVisionConfig& defaults) {
  const std::string type = c.string("model_type", "clip_vision_model");
  if (type != "clip_vision_model")
    c.unsupported("model_type", "vlmc's vision tower is CLIP's (model_type \"clip_vision_model\")");
  CLIPVisionConfig out = defaults;
  out.hidden_size = c.integer("hidden_size", out.hidden_size);
  out.intermediate_size = c.integer("intermediate_size", out.intermediate_size);
  out.num_attention_heads = c.integer("num_attention_heads", out.num_attention_heads);
  out.num_hidden_layers = c.integer("num_hidden_layers", out.num_hidden_layers);
  out.num_channels = c.integer("num_channels", out.num_channels);
  out.image_size = c.integer("image_size", out.image_size);
  out.patch_size = c.integer("patch_size", out.patch_size);
  out.layer_norm_eps = c.number("layer_norm_eps", out.layer_norm_eps);
  out.hidden_act = c.string("hidden_act", out.hidden_act);
  out.validate();
  return out;
}

// LlavaConfig's default tower (transformers 4.45): CLIP ViT-L/14 at 336 pixels.
CLIPVisionConfig llava_default_tower() {
  CLIPVisionConfig v;
  v.hidden_size = 1024;
  v.intermediate_size = 4096;
  v.num_attention_heads = 16;
  v.num_hidden_layers = 24;
  v.image_size = 336;
  v.patch_size = 14;
  return v;
}

// The feature layer must index hidden_states (num_hidden_layers + 1 entries).
void check_feature_layer(const ConfigObject& c, const char* key, int64_t layer, int64_t num_layers) {
  const int64_t n = num_layers + 1;
  if (layer < -n || layer >= n)
    c.unsupported(key, str("the vision tower has ", n, " hidden states (embeddings + ", num_layers, " layers)"));
}

void read_llava(const ConfigObject& c, HfModelConfig& out) {
  out.text = llama_config(c.child("text_config", empty_object()));
  out.ids = token_ids(c.child("text_config", empty_object()));
  out.vision = c.has("vision_config") ? clip_vision_config(c.child("vision_config", empty_object()), {})
                                      : llava_default_tower();
  auto& l = out.llava;
  l.image_token_index = c.integer("image_token_index", 32000);
  if (l.image_token_index < 0 || l.image_token_index >= out.text.vocab_size)
    c.unsupported("image_token_index", str("must be an id of the vocabulary (size ", out.text.vocab_size, ")"));
  if (c.has("vision_feature_layer") && !c.raw("vision_feature_layer").is_number_integer())
    c.unsupported("vision_feature_layer", "only one feature layer (an integer) is implemented");
  l.vision_feature_layer = c.integer("vision_feature_layer", -2);
  check_feature_layer(c, "vision_feature_layer", l.vision_feature_layer, out.vision.num_hidden_layers);
  const std::string strategy = c.string("vision_feature_select_strategy", "default");
  if (strategy != "default" && strategy != "full")
    c.unsupported("vision_feature_select_strategy", "expected \"default\" (drop CLS) or \"full\" (keep it)");
  l.keep_cls = strategy == "full";
  const std::string act = c.string("projector_hidden_act", "gelu");
  if (act != "gelu") c.unsupported("projector_hidden_act", "vlmc's HF projector is Linear-GELU(erf)-Linear");
  if (!c.boolean("multimodal_projector_bias", true))
    c.unsupported("multimodal_projector_bias", "a projector without biases is not implemented");
  l.projector_type = "mlp2x_gelu";
}

void read_llava_original(const ConfigObject& c, HfModelConfig& out) {
  out.text = llama_config(c, "llava_llama");  // LLaMA's keys at the top level
  out.ids = token_ids(c);
  auto& l = out.llava;
  l.image_token_index = -200;  // LLaVA's IMAGE_TOKEN_INDEX: not an id of the vocabulary
  l.projector_type = c.string("mm_projector_type", "linear");  // LLaVA's builder default
  const auto depth = mlp_gelu_depth(l.projector_type);
  if (l.projector_type != "linear" && l.projector_type != "identity" && !(depth && *depth >= 1))
    c.unsupported("mm_projector_type", "expected linear, identity or mlp{N}x_gelu");
  l.vision_feature_layer = c.integer("mm_vision_select_layer", -2);
  const std::string feature = c.string("mm_vision_select_feature", "patch");
  if (feature != "patch" && feature != "cls_patch")
    c.unsupported("mm_vision_select_feature", "expected \"patch\" (drop CLS) or \"cls_patch\" (keep it)");
  l.keep_cls = feature == "cls_patch";
  l.image_aspect_ratio = c.string("image_aspect_ratio", "");
  l.vision_tower = c.string("mm_vision_tower", "");
  l.mm_hidden_size = c.integer("mm_hidden_size", 0);
}

HfKind detect_kind(const ConfigObject& c, const std::string& file) {
  struct Known {
    const char* architecture;
    const char* model_type;
    HfKind kind;
  };
  static const Known known[] = {{"LlamaForCausalLM", "llama", HfKind::llama},
                                {"CLIPVisionModel", "clip_vision_model", HfKind::clip_vision},
                                {"CLIPModel", "clip", HfKind::clip},
                                {"LlavaForConditionalGeneration", "llava", HfKind::llava},
                                {"LlavaLlamaForCausalLM", "llava_llama", HfKind::llava_original}};
  std::string list;
  for (const auto& k : known) list += str(list.empty() ? "" : ", ", k.architecture);
  if (c.has("architectures")) {
    const json& a = c.raw("architectures");
    if (!a.is_array() || a.size() != 1 || !a[0].is_string())
      c.unsupported("architectures", "expected a list of one architecture name");
    const std::string name = a[0].get<std::string>();
    for (const auto& k : known)
      if (name == k.architecture) return k.kind;
    c.unsupported("architectures", str("vlmc loads ", list));
  }
  const std::string type = c.string("model_type", "");
  for (const auto& k : known)
    if (type == k.model_type) return k.kind;
  if (type.empty()) throw Error(str(file, ": has neither \"architectures\" nor \"model_type\": which model is it?"));
  c.unsupported("model_type", str("vlmc loads ", list));
}

}  // namespace

const char* hf_kind_name(HfKind kind) {
  switch (kind) {
    case HfKind::llama: return "LlamaForCausalLM";
    case HfKind::clip_vision: return "CLIPVisionModel";
    case HfKind::clip: return "CLIPModel";
    case HfKind::llava: return "LlavaForConditionalGeneration";
    case HfKind::llava_original: return "LlavaLlamaForCausalLM";
  }
  return "?";
}

HfModelConfig read_hf_config(const std::string& dir) {
  const std::string file = (std::filesystem::path(dir) / "config.json").string();
  if (!std::filesystem::exists(file))
    throw Error(str(file, ": cannot open (is ", dir, " a Hugging Face model folder?)"));
  const json root = io::read_json_object(file);
  const ConfigObject c(root, file, "");
  HfModelConfig out;
  out.path = file;
  out.kind = detect_kind(c, file);
  try {
    switch (out.kind) {
      case HfKind::llama:
        out.text = llama_config(c);
        out.ids = token_ids(c);
        break;
      case HfKind::clip_vision: out.vision = clip_vision_config(c, {}); break;
      case HfKind::clip: out.vision = clip_vision_config(c.child("vision_config", empty_object()), {}); break;
      case HfKind::llava: read_llava(c, out); break;
      case HfKind::llava_original: read_llava_original(c, out); break;
    }
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(file, 0) == 0) throw;
    throw Error(str(file, ": ", what));
  }
  return out;
}

}  // namespace vlmc::nn
