#include "modules/projector_io.h"

#include <algorithm>
#include <optional>
#include <regex>
#include <sstream>
#include <vector>

#include "core/io/tensor_io.h"

namespace vlmc::nn {
namespace {

// One of our parameters and where it lives in the projector's nn.Sequential.
struct OurKey {
  std::string name;               // "mlp.2.weight", "0.bias", "proj.weight"
  std::optional<int64_t> index;   // 0, 2, ...; none for LinearProjection
  std::string suffix;             // "weight" or "bias"
  Tensor tensor;
};

// The four key families a checkpoint may use; the prefix tells the naming.
struct Family {
  const char* prefix;
  ProjectorNaming naming;
};
constexpr Family kFamilies[] = {
    {"model.mm_projector.", ProjectorNaming::llava},
    {"mm_projector.", ProjectorNaming::llava},
    {"model.multi_modal_projector.", ProjectorNaming::hugging_face},
    {"multi_modal_projector.", ProjectorNaming::hugging_face},
};

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// Classifies the projector's parameters; anything else is not a projector
// this file maps.
std::vector<OurKey> our_keys(const Module& projector, const char* op) {
  static const std::regex sequential(R"(^(mlp\.)?(\d+)\.(weight|bias)$)");
  static const std::regex linear(R"(^proj\.(weight|bias)$)");
  std::vector<OurKey> out;
  std::string names;
  bool foreign = false;
  for (const auto& [name, t] : projector.named_parameters()) {
    names += (names.empty() ? "" : ", ") + name;
    std::smatch m;
    if (std::regex_match(name, m, sequential)) {
      out.push_back({name, std::stoll(m[2].str()), m[3].str(), t});
    } else if (std::regex_match(name, m, linear)) {
      out.push_back({name, std::nullopt, m[1].str(), t});
    } else {
      foreign = true;
    }
  }
  bool mixed = false;
  for (const OurKey& k : out) mixed |= k.index.has_value() != out.front().index.has_value();
  VLMC_CHECK(!out.empty() && !foreign && !mixed, op, ": the module's parameters (", names.empty() ? "none" : names,
             ") are not a projector's (MLPConnector mlp.{i}.*, mlp{N}x_gelu {i}.* or LinearProjection proj.*)");
  return out;
}

// The checkpoint name of one of our parameters.
std::string file_key(const OurKey& k, ProjectorNaming naming, const std::string& prefix, const char* op) {
  if (naming == ProjectorNaming::llava)
    return prefix + (k.index ? std::to_string(*k.index) + "." : std::string()) + k.suffix;
  VLMC_CHECK(k.index.has_value(), op, ": Hugging Face's LLaVA has no linear projector (", k.name,
             "); use the LLaVA naming");
  return prefix + "linear_" + std::to_string(*k.index / 2 + 1) + "." + k.suffix;
}

void load_from(Module& projector, const std::map<std::string, Tensor>& tensors, const std::string& source) {
  const char* op = "load_projector";
  const std::vector<OurKey> ours = our_keys(projector, op);

  // Which key family the checkpoint uses: exactly one must be present.
  std::vector<const Family*> present;
  for (const Family& f : kFamilies)
    for (const auto& [name, t] : tensors)
      if (starts_with(name, f.prefix)) {
        present.push_back(&f);
        break;
      }
  VLMC_CHECK(!present.empty(), op, ": ", source, " holds no projector tensor (looked for keys starting with ",
             "model.mm_projector., mm_projector., model.multi_modal_projector. or multi_modal_projector.)");
  if (present.size() > 1) {
    std::string found;
    for (const Family* f : present) found += (found.empty() ? "" : ", ") + std::string(f->prefix);
    throw Error(str(op, ": ", source, " holds projector tensors under several namings (", found, "); keep one"));
  }
  const Family& family = *present.front();

  // Match every one of our parameters; report all problems at once.
  std::map<std::string, Tensor> state;
  std::vector<std::string> expected;
  std::string missing, mismatched, unexpected;
  for (const OurKey& k : ours) {
    const std::string key = file_key(k, family.naming, family.prefix, op);
    expected.push_back(key);
    const auto it = tensors.find(key);
    if (it == tensors.end()) {
      missing += (missing.empty() ? "" : ", ") + key + " (for " + k.name + " " + shape_str(k.tensor.shape()) + ")";
    } else if (it->second.shape() != k.tensor.shape()) {
      mismatched += (mismatched.empty() ? "" : ", ") + key + " is " + shape_str(it->second.shape()) + " but " +
                    k.name + " is " + shape_str(k.tensor.shape());
    } else {
      state[k.name] = it->second;
    }
  }
  for (const auto& [name, t] : tensors)
    if (starts_with(name, family.prefix) && std::find(expected.begin(), expected.end(), name) == expected.end())
      unexpected += (unexpected.empty() ? "" : ", ") + name + " " + shape_str(t.shape());
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream os;
    os << op << ": " << source << " does not fit the projector";
    if (!missing.empty()) os << "; missing keys: " << missing;
    if (!mismatched.empty()) os << "; shape mismatch: " << mismatched;
    if (!unexpected.empty()) os << "; unexpected keys: " << unexpected;
    throw Error(os.str());
  }
  projector.load_state_dict(state, true);
}

}  // namespace

void load_projector(Module& projector, const std::map<std::string, Tensor>& tensors) {
  load_from(projector, tensors, "the checkpoint");
}

void load_projector(Module& projector, const std::string& path) {
  load_from(projector, io::load_safetensors(path), path);
}

std::map<std::string, Tensor> export_projector(const Module& projector, ProjectorNaming naming) {
  const char* op = "export_projector";
  const std::string prefix =
      naming == ProjectorNaming::llava ? "model.mm_projector." : "multi_modal_projector.";
  std::map<std::string, Tensor> out;
  for (const OurKey& k : our_keys(projector, op)) out[file_key(k, naming, prefix, op)] = k.tensor.detach();
  return out;
}

void save_projector(const Module& projector, const std::string& path, ProjectorNaming naming) {
  io::save_safetensors(path, export_projector(projector, naming), {{"format", "pt"}});
}

}  // namespace vlmc::nn
