#include "modules/hf_checkpoint.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>

#include "core/autograd.h"
#include "core/error.h"
#include "core/host_allocator.h"
#include "core/io/safetensors_folder.h"
#include "modules/hf_layout.h"

namespace vlmc::nn {

namespace {

using io::SafetensorsFolder;

// A file key that is not part of the model, and why (nullopt: it should be).
using IgnoreRule = std::function<std::optional<std::string>(const std::string& key)>;

// Tensors transformers itself recomputes or drops when loading.
std::optional<std::string> ignored_everywhere(const std::string& key) {
  if (key.ends_with("rotary_emb.inv_freq")) return "rotary frequency tables (recomputed)";
  if (key.ends_with("embeddings.position_ids")) return "CLIP position ids (recomputed)";
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
  if (key.starts_with("text_model.") || key.starts_with("text_projection.") ||
      key.starts_with("visual_projection.") || key == "logit_scale")
    return "CLIPModel's text half and projections";
  return std::nullopt;
}

}  // namespace

std::string original_tower_dir(const HfModelConfig& config, const std::string& given) {
  if (!given.empty()) return given;
  const std::string& named = config.llava.vision_tower;
  // LLaVA's own files name a Hub id ("openai/clip-vit-large-patch14-336"),
  // which is no folder here; vlmc train writes a local path.
  if (!named.empty() && std::filesystem::is_directory(named) &&
      std::filesystem::is_regular_file(std::filesystem::path(named) / "config.json"))
    return named;
  return "";
}

namespace {

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
                                       std::shared_ptr<LlamaForCausalLM> llm, int stage, Generator& gen) {
  LlavaConfig lc;
  lc.stage = stage;
  lc.projector_type = c.llava.projector_type;
  lc.select_layer = c.llava.vision_feature_layer;
  lc.keep_cls = c.llava.keep_cls;
  lc.splice.image_token_id = c.llava.image_token_index;
  return std::make_shared<LlavaModel>(vision, llm, lc, gen);
}

bool is_low_precision(DType t) { return t == DType::bf16 || t == DType::f16; }

// Points the parameter `p` (a handle sharing the module member's TensorImpl,
// as named_parameters() gives) at a new contiguous storage of `dtype`, holding
// p's values rounded (keep_values) or uninitialised (a read fills it next),
// and freezes it. The module keeps its member; only what it holds changes.
void retype_in_place(const Tensor& p, DType dtype, bool keep_values) {
  VLMC_CHECK(p.is_leaf(), "load_pretrained: parameter ", describe(p), " is not a leaf");
  NoGradGuard no_grad;
  const Tensor fresh = keep_values ? p.detach().to(dtype).contiguous() : Tensor::empty(p.shape(), dtype, p.device());
  TensorImpl& impl = p.impl();
  impl.storage = fresh.storage();
  impl.dtype = dtype;
  impl.strides = fresh.strides();
  impl.offset = fresh.offset();
  impl.requires_grad = false;
  impl.grad.reset();
}

// Before the read: the frozen group's kept parameters take the dtype they
// will hold (the file's, or bf16), so that read_into fills them directly.
void prepare_frozen(const SafetensorsFolder& folder, const HfKeyGroup& group, WeightsDType weights) {
  for (const auto& [name, p] : group.module->named_parameters()) {
    if (!keeps_low_precision(name, p)) continue;
    const std::string key = group.key(name);
    if (!folder.contains(key)) continue;  // reported by the plan
    DType target = DType::bf16;
    if (weights == WeightsDType::file) {
      const DType file = folder.entry(key).dtype;
      if (!is_low_precision(file)) continue;  // F32 / F64 files: f32 as before
      target = file;
    }
    if (p.dtype() != target) retype_in_place(p, target, /*keep_values=*/false);
  }
}

std::string bytes_str(uint64_t bytes) {
  char out[64];
  if (bytes >= 1e9)
    std::snprintf(out, sizeof out, "%.3g GB", bytes / 1e9);
  else if (bytes >= 1e6)
    std::snprintf(out, sizeof out, "%.3g MB", bytes / 1e6);
  else
    std::snprintf(out, sizeof out, "%.3g KB", bytes / 1e3);
  return out;
}

}  // namespace

WeightsDType parse_weights_dtype(const std::string& name) {
  if (name == "f32") return WeightsDType::f32;
  if (name == "file") return WeightsDType::file;
  if (name == "bf16") return WeightsDType::bf16;
  throw Error(str("weights dtype '", name, "' is not one of file, f32, bf16"));
}

const char* weights_dtype_name(WeightsDType weights) {
  switch (weights) {
    case WeightsDType::f32: return "f32";
    case WeightsDType::file: return "file";
    case WeightsDType::bf16: return "bf16";
  }
  return "?";
}

bool keeps_low_precision(const std::string& name, const Tensor& parameter) {
  return parameter.dim() >= 2 && !name.ends_with("position_embedding.weight");
}

void convert_frozen_weights(Module& module, DType dtype) {
  VLMC_CHECK(is_low_precision(dtype), "convert_frozen_weights: dtype ", dtype_name(dtype), " must be bf16 or f16");
  for (const auto& [name, p] : module.named_parameters())
    if (keeps_low_precision(name, p) && p.dtype() != dtype) retype_in_place(p, dtype, /*keep_values=*/true);
  module.set_requires_grad(false);
}

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
  std::string memory;
  for (const auto& [dtype, n] : memory_by_dtype) memory += str(memory.empty() ? "" : " + ", dtype, " ", bytes_str(n));
  std::string out = str(kind, ": ", params, " parameters, ", tensors, " tensors (", dtypes, ", ", size,
                        " read; in memory ", memory.empty() ? std::string("nothing") : memory, ") from ", files.size(),
                        " file", files.size() == 1 ? "" : "s");
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
  const bool frozen = options.weights != WeightsDType::f32;
  const int stage = frozen ? 1 : 2;  // a LLaVA over 16-bit frozen parts trains its projector only
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
      out.llava = make_llava(c, out.vision, out.llama, stage, gen);
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
      const std::string tower_dir = original_tower_dir(c, options.vision_tower);
      const HfModelConfig tower = tower_config(tower_dir, c);
      out.config.vision = tower.vision;
      tower_weights.emplace(tower_dir);
      out.vision = std::make_shared<CLIPVisionModel>(tower.vision, gen);
      out.llama = std::make_shared<LlamaForCausalLM>(c.text, gen);
      out.llava = make_llava(out.config, out.vision, out.llama, stage, gen);
      layout = HfKeyLayout::llava_original;
      main_rule = [](const std::string& key) -> std::optional<std::string> {
        if (key.starts_with("model.vision_tower."))
          return "the checkpoint's own copy of the vision tower (the tower is read from --vision-tower)";
        return std::nullopt;
      };
      tower_rule = clip_text_half;
      break;
    }
  }
  out.layout = layout;
  for (const HfKeyGroup& group :
       hf_key_groups(layout, out.vision.get(), out.llama.get(), out.llava ? out.llava->connector.get() : nullptr)) {
    const SafetensorsFolder& folder = group.in_tower_folder ? *tower_weights : weights;
    const bool frozen_part = group.module == out.llama.get() || group.module == out.vision.get();
    if (frozen && frozen_part) prepare_frozen(folder, group, options.weights);
    plan.bind(folder, group);
  }
  plan.account_for_rest(weights, main_rule, report);
  if (tower_weights) plan.account_for_rest(*tower_weights, tower_rule, report);
  plan.check(dir, report.kind);
  plan.execute(report);
  // The models were built with f32 blocks, mapped but never touched, that
  // the frozen weights' bf16 replaced: unmap them, and keep the host cache
  // from counting them in the high-water mark that bounds it.
  host::empty_cache();

  for (auto* m : std::initializer_list<Module*>{out.llama.get(), out.vision.get()})
    if (m) {
      m->eval();
      if (frozen) m->set_requires_grad(false);
    }
  if (out.llava) {
    out.llava->eval();
    report.parameters = out.llava->num_parameters();
  } else {
    report.parameters = (out.llama ? out.llama->num_parameters() : 0) + (out.vision ? out.vision->num_parameters() : 0);
  }
  const Module* whole = out.llava ? static_cast<const Module*>(out.llava.get()) : nullptr;
  for (const Module* m : {whole, whole ? nullptr : static_cast<const Module*>(out.llama.get()),
                          whole ? nullptr : static_cast<const Module*>(out.vision.get())})
    if (m)
      for (const Tensor& p : m->parameters()) report.memory_by_dtype[dtype_name(p.dtype())] += p.nbytes();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace vlmc::nn
