#include "modules/hf_checkpoint.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/io/safetensors_folder.h"
#include "modules/hf_layout.h"

namespace vlmc::nn {

namespace {

using io::SafetensorsFolder;

// A file key that is not part of the model, and why (nullopt: it should be).
using IgnoreRule = std::function<std::optional<std::string>(const std::string& key)>;

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Tensors transformers itself recomputes or drops when loading.
std::optional<std::string> ignored_everywhere(const std::string& key) {
  if (ends_with(key, "rotary_emb.inv_freq")) return "rotary frequency tables (recomputed)";
  if (ends_with(key, "embeddings.position_ids")) return "CLIP position ids (recomputed)";
  return std::nullopt;
}

bool is_float(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

// Which file tensor goes into which model tensor, checked in full before any
// byte is read.
class LoadPlan {
 public:
  // Every tensor of `module` (state_dict names, prefixed with `module_name` in
  // messages) from `folder`, under the file key `file_key(name)`.
  void bind(const SafetensorsFolder& folder, const HfKeyGroup& group) {
    for (const auto& [name, tensor] : group.module->state_dict()) {
      const std::string key = group.key(name), ours = group.module_prefix + name;
      if (!folder.contains(key)) {
        problems_.push_back(str("missing tensor '", key, "' (vlmc's ", ours, " ", shape_str(tensor.shape()), ")"));
        continue;
      }
      const io::TensorEntry& e = folder.entry(key);
      if (e.shape != tensor.shape())
        problems_.push_back(str(folder.file_of(key), ": tensor '", key, "' has shape ", shape_str(e.shape),
                                ", vlmc's ", ours, " is ", shape_str(tensor.shape())));
      else if (!is_float(e.dtype))
        problems_.push_back(str(folder.file_of(key), ": tensor '", key, "' is ", io::dtype_to_safetensors(e.dtype),
                                ", not a float type (F32, F16, BF16, F64)"));
      used_.insert({&folder, key});
      bindings_.push_back({&folder, key, tensor});
    }
  }

  // File keys of `folder` no binding took: ignored when a rule explains them,
  // a problem otherwise.
  void account_for_rest(const SafetensorsFolder& folder, const IgnoreRule& rule, PretrainedReport& report) {
    std::vector<std::string> unexpected;
    for (const auto& key : folder.names()) {
      if (used_.count({&folder, key})) continue;
      auto why = ignored_everywhere(key);
      if (!why && rule) why = rule(key);
      if (why)
        ++report.ignored[*why];
      else
        unexpected.push_back(key);
    }
    const size_t shown = std::min<size_t>(unexpected.size(), 10);
    for (size_t i = 0; i < shown; ++i)
      problems_.push_back(str(folder.file_of(unexpected[i]), ": unexpected tensor '", unexpected[i],
                              "' (no part of the model reads it)"));
    if (unexpected.size() > shown)
      problems_.push_back(str("... and ", unexpected.size() - shown, " more unexpected tensors in ", folder.dir()));
  }

  void check(const std::string& dir, const std::string& kind) const {
    if (problems_.empty()) return;
    std::string msg = str(dir, ": the checkpoint does not fit ", kind, " (", problems_.size(), " problem",
                          problems_.size() == 1 ? "" : "s", ", nothing was loaded):");
    const size_t shown = std::min<size_t>(problems_.size(), 20);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems_[i];
    if (problems_.size() > shown) msg += str("\n  ... and ", problems_.size() - shown, " more");
    throw Error(msg);
  }

  void execute(PretrainedReport& report) {
    std::set<std::string> files;
    for (auto& b : bindings_) {
      b.folder->read_into(b.key, b.target);
      const io::TensorEntry& e = b.folder->entry(b.key);
      report.bytes_by_dtype[io::dtype_to_safetensors(e.dtype)] += e.nbytes;
      files.insert(b.folder->file_of(b.key));
      ++report.tensors;
    }
    report.files.assign(files.begin(), files.end());
  }

 private:
  struct Binding {
    const SafetensorsFolder* folder;
    std::string key;
    Tensor target;  // shares the parameter's storage: reading into it fills the model
  };
  std::vector<Binding> bindings_;
  std::set<std::pair<const SafetensorsFolder*, std::string>> used_;
  std::vector<std::string> problems_;
};

std::optional<std::string> clip_text_half(const std::string& key) {
  if (starts_with(key, "text_model.") || starts_with(key, "text_projection.") ||
      starts_with(key, "visual_projection.") || key == "logit_scale")
    return "CLIPModel's text half and projections";
  return std::nullopt;
}

// The vision tower's folder of an original-layout LLaVA checkpoint.
HfModelConfig tower_config(const std::string& dir, const HfModelConfig& main) {
  if (dir.empty())
    throw Error(str(main.path, ": an original-layout LLaVA checkpoint (LlavaLlamaForCausalLM) keeps its vision tower "
                    "elsewhere (mm_vision_tower = \"", main.llava.vision_tower,
                    "\"): pass --vision-tower DIR, a CLIPModel or CLIPVisionModel folder"));
  HfModelConfig tower = read_hf_config(dir);
  if (tower.kind != HfKind::clip && tower.kind != HfKind::clip_vision)
    throw Error(str(tower.path, ": --vision-tower must be a CLIPModel or CLIPVisionModel folder, this is ",
                    hf_kind_name(tower.kind)));
  if (main.llava.mm_hidden_size != 0 && main.llava.mm_hidden_size != tower.vision.hidden_size)
    throw Error(str(main.path, ": mm_hidden_size = ", main.llava.mm_hidden_size, " but the vision tower in ", dir,
                    " has hidden_size ", tower.vision.hidden_size));
  return tower;
}

std::shared_ptr<LlavaModel> make_llava(const HfModelConfig& c, std::shared_ptr<CLIPVisionModel> vision,
                                       std::shared_ptr<LlamaForCausalLM> llm, Generator& gen) {
  LlavaConfig lc;
  lc.projector_type = c.llava.projector_type;
  lc.select_layer = c.llava.vision_feature_layer;
  lc.keep_cls = c.llava.keep_cls;
  lc.splice.image_token_id = c.llava.image_token_index;
  return std::make_shared<LlavaModel>(vision, llm, lc, gen);
}

}  // namespace

std::string PretrainedReport::summary() const {
  uint64_t bytes = 0;
  std::string dtypes;
  for (const auto& [dtype, n] : bytes_by_dtype) {
    bytes += n;
    dtypes += str(dtypes.empty() ? "" : " + ", dtype);
  }
  char size[64], params[64];
  std::snprintf(size, sizeof size, "%.3g %s", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6, bytes >= 1e9 ? "GB" : "MB");
  if (parameters >= 1e9)
    std::snprintf(params, sizeof params, "%.3g B", parameters / 1e9);
  else if (parameters >= 1e6)
    std::snprintf(params, sizeof params, "%.3g M", parameters / 1e6);
  else
    std::snprintf(params, sizeof params, "%lld", static_cast<long long>(parameters));
  std::string out = str(kind, ": ", params, " parameters, ", tensors, " tensors (", dtypes, ", ", size,
                        " read, f32 in memory) from ", files.size(), " file", files.size() == 1 ? "" : "s");
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f s", seconds);
  out += str(" in ", secs);
  for (const auto& [why, n] : ignored) out += str("; ignored ", n, " tensor", n == 1 ? "" : "s", ": ", why);
  return out;
}

PretrainedModel load_pretrained(const std::string& dir, const PretrainedOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PretrainedModel out;
  out.dir = dir;
  out.config = read_hf_config(dir);
  const HfModelConfig& c = out.config;
  const SafetensorsFolder weights(dir);
  LoadPlan plan;
  PretrainedReport& report = out.report;
  report.kind = hf_kind_name(c.kind);
  std::optional<SafetensorsFolder> tower_weights;

  // Builds the models, then binds every tensor through the layout's key table.
  // Nothing is drawn at random: every tensor is read from the files below (a
  // tensor the files lack is an error before anything is returned).
  Generator gen = Generator::unfilled();
  HfKeyLayout layout = HfKeyLayout::llama;
  IgnoreRule main_rule, tower_rule;
  switch (c.kind) {
    case HfKind::llama: {
      out.llama = std::make_shared<LlamaForCausalLM>(c.text, gen);
      const bool tied = c.text.tie_word_embeddings;
      main_rule = [tied](const std::string& key) -> std::optional<std::string> {
        if (tied && key == "lm_head.weight") return "lm_head.weight (tied: the embedding table is the head)";
        return std::nullopt;
      };
      break;
    }
    case HfKind::clip_vision:
    case HfKind::clip:
      out.vision = std::make_shared<CLIPVisionModel>(c.vision, gen);
      layout = HfKeyLayout::clip;
      main_rule = clip_text_half;
      break;
    case HfKind::llava: {
      out.vision = std::make_shared<CLIPVisionModel>(c.vision, gen);
      out.llama = std::make_shared<LlamaForCausalLM>(c.text, gen);
      out.llava = make_llava(c, out.vision, out.llama, gen);
      const bool legacy = weights.contains("language_model.model.embed_tokens.weight");
      const bool newer = weights.contains("model.language_model.embed_tokens.weight");
      if (legacy == newer)
        throw Error(str(dir, ": cannot tell the LLaVA key layout: expected language_model.model.embed_tokens.weight "
                        "(transformers <= 4.51) or model.language_model.embed_tokens.weight (newer), found ",
                        legacy ? "both" : "neither"));
      layout = legacy ? HfKeyLayout::llava_legacy : HfKeyLayout::llava_newer;
      report.kind += legacy ? " (transformers <= 4.51 keys)" : " (newer transformers keys)";
      break;
    }
    case HfKind::llava_original: {
      const HfModelConfig tower = tower_config(options.vision_tower, c);
      out.config.vision = tower.vision;
      tower_weights.emplace(options.vision_tower);
      out.vision = std::make_shared<CLIPVisionModel>(tower.vision, gen);
      out.llama = std::make_shared<LlamaForCausalLM>(c.text, gen);
      out.llava = make_llava(out.config, out.vision, out.llama, gen);
      layout = HfKeyLayout::llava_original;
      main_rule = [](const std::string& key) -> std::optional<std::string> {
        if (starts_with(key, "model.vision_tower."))
          return "the checkpoint's own copy of the vision tower (the tower is read from --vision-tower)";
        return std::nullopt;
      };
      tower_rule = clip_text_half;
      break;
    }
  }
  out.layout = layout;
  for (const HfKeyGroup& group :
       hf_key_groups(layout, out.vision.get(), out.llama.get(), out.llava ? out.llava->connector.get() : nullptr))
    plan.bind(group.in_tower_folder ? *tower_weights : weights, group);
  plan.account_for_rest(weights, main_rule, report);
  if (tower_weights) plan.account_for_rest(*tower_weights, tower_rule, report);
  plan.check(dir, report.kind);
  plan.execute(report);

  for (auto* m : std::initializer_list<Module*>{out.llama.get(), out.vision.get()})
    if (m) m->eval();
  if (out.llava) {
    out.llava->eval();
    report.parameters = out.llava->num_parameters();
  } else {
    report.parameters = (out.llama ? out.llama->num_parameters() : 0) + (out.vision ? out.vision->num_parameters() : 0);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace vlmc::nn
