// The weights of a Hugging Face model folder: one model.safetensors, or
// model.safetensors.index.json with the shards its weight_map names. Tensors
// are read one at a time from their shard (SafetensorsFile), never the whole
// checkpoint at once.
//
// Opening checks everything that can be checked without reading tensor bytes:
// the index's JSON, that every shard it names exists in the folder (no path
// outside it), that each shard's header is valid, and that the index and the
// shards agree (every name in the weight_map is in the shard it names, and no
// shard holds a tensor the index does not list, or one twice).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/io/safetensors.h"
#include "core/tensor.h"

namespace vlmc::io {

class SafetensorsFolder {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json (the index
  // wins when both are present, as transformers does). A folder with only
  // PyTorch pickles (pytorch_model*.bin) is an error that says how to convert.
  explicit SafetensorsFolder(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // The entry of `name`; an error naming the folder when absent.
  const TensorEntry& entry(const std::string& name) const;
  // The file that holds `name` (its path).
  const std::string& file_of(const std::string& name) const;
  // The shard files, in the order the index lists them (one without an index).
  std::vector<std::string> files() const;
  uint64_t total_bytes() const { return total_bytes_; }

  // The tensor as stored: a new CPU tensor of the file's dtype and shape.
  Tensor read(const std::string& name) const;
  // Reads `name` into dst (a CPU or CUDA tensor of the same shape, any
  // float dtype): the bytes go straight into dst when the dtypes match, and
  // through one temporary of the file's dtype otherwise.
  void read_into(const std::string& name, Tensor& dst) const;

 private:
  struct Location {
    size_t file;  // index into files_
    const TensorEntry* entry;
  };
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> where_;
  uint64_t total_bytes_ = 0;
};

}  // namespace vlmc::io
