#include "core/io/safetensors_folder.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/autograd.h"
#include "core/error.h"
#include "core/io/json_file.h"

namespace vlmc::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// The weight_map of an index file: tensor name -> shard file name. A shard
// name must be a plain file name: an index must not make vlmc read files
// outside the model's folder.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  const nlohmann::json root = read_json_object(index_path.string());
  const auto it = root.find("weight_map");
  if (it == root.end() || !it->is_object())
    throw Error(str(index_path.string(), ": has no \"weight_map\" object (tensor name -> shard file)"));
  std::map<std::string, std::string> map;
  for (const auto& [name, file] : it->items()) {
    if (!file.is_string())
      throw Error(str(index_path.string(), ": weight_map[\"", name, "\"] is ", file.type_name(), ", not a file name"));
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      throw Error(str(index_path.string(), ": weight_map[\"", name, "\"] = \"", f,
                      "\" is not a file name in the model's folder"));
    map.emplace(name, f);
  }
  if (map.empty()) throw Error(str(index_path.string(), ": weight_map is empty"));
  return map;
}

}  // namespace

SafetensorsFolder::SafetensorsFolder(const std::string& dir) : dir_(dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw Error(str(dir, ": not a directory (expected a Hugging Face model folder)"));
  const fs::path index = root / kIndexFile, single = root / kSingleFile;
  if (fs::exists(index, ec)) {
    const auto map = read_weight_map(index);
    std::vector<std::string> order;  // shard files in first-mention order
    for (const auto& [name, file] : map)
      if (std::find(order.begin(), order.end(), file) == order.end()) order.push_back(file);
    std::sort(order.begin(), order.end());
    std::map<std::string, size_t> file_index;
    for (const auto& file : order) {
      const fs::path p = root / file;
      if (!fs::exists(p, ec))
        throw Error(str(index.string(), ": names shard \"", file, "\", which is not in ", dir));
      file_index.emplace(file, files_.size());
      files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    }
    for (const auto& [name, file] : map) {
      const size_t f = file_index.at(file);
      const TensorEntry* e = files_[f]->find(name);
      if (e == nullptr)
        throw Error(str(index.string(), ": weight_map puts tensor '", name, "' in ", file, ", which does not hold it"));
      where_.emplace(name, Location{f, e});
    }
    for (size_t f = 0; f < files_.size(); ++f)
      for (const auto& e : files_[f]->entries()) {
        const auto it = map.find(e.name);
        if (it == map.end())
          throw Error(str(files_[f]->path(), ": holds tensor '", e.name, "', which ", kIndexFile, " does not list"));
        if (it->second != order[f])
          throw Error(str(files_[f]->path(), ": holds tensor '", e.name, "', which ", kIndexFile, " puts in ",
                          it->second, " (a tensor in two shards)"));
      }
  } else if (fs::exists(single, ec)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const auto& e : files_[0]->entries()) where_.emplace(e.name, Location{0, &e});
  } else {
    bool pickles = false;
    for (const auto& item : fs::directory_iterator(root, ec))
      if (item.path().extension() == ".bin" || item.path().extension() == ".pt") pickles = true;
    if (pickles)
      throw Error(str(dir, ": holds PyTorch pickle weights (*.bin), which vlmc does not read (unpickling can run "
                      "code); convert them once to safetensors: python3 scripts/bin_to_safetensors.py ", dir,
                      " NEW_DIR"));
    throw Error(str(dir, ": has neither ", kSingleFile, " nor ", kIndexFile));
  }
  for (const auto& [name, loc] : where_) total_bytes_ += loc.entry->nbytes;
}

std::vector<std::string> SafetensorsFolder::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, loc] : where_) out.push_back(name);
  return out;
}

const TensorEntry& SafetensorsFolder::entry(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw Error(str(dir_, ": has no tensor '", name, "'"));
  return *it->second.entry;
}

const std::string& SafetensorsFolder::file_of(const std::string& name) const {
  entry(name);  // the error when absent
  return files_[where_.at(name).file]->path();
}

std::vector<std::string> SafetensorsFolder::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

Tensor SafetensorsFolder::read(const std::string& name) const {
  const TensorEntry& e = entry(name);
  Tensor t = Tensor::empty(e.shape, e.dtype);
  if (e.nbytes > 0) files_[where_.at(name).file]->read(e, t.data_ptr());
  return t;
}

void SafetensorsFolder::read_into(const std::string& name, Tensor& dst) const {
  const TensorEntry& e = entry(name);
  VLMC_CHECK(dst.shape() == e.shape, file_of(name), ": tensor '", name, "' has shape ", shape_str(e.shape),
             ", the model expects ", shape_str(dst.shape()));
  NoGradGuard no_grad;  // dst may be a parameter: filling it is not an op to record
  if (dst.device().is_cpu() && dst.dtype() == e.dtype && dst.is_contiguous()) {
    if (e.nbytes > 0) files_[where_.at(name).file]->read(e, dst.data_ptr());
    return;
  }
  dst.copy_(read(name));
}

}  // namespace vlmc::io
