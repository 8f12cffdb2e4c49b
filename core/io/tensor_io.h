// safetensors files <-> Tensors. The format rules are enforced by the raw
// reader in core/io/safetensors.h; this layer only converts.
#pragma once

#include <map>
#include <string>

#include "core/tensor.h"

namespace vlmc::io {

// All tensors of a file, on the CPU, keyed by name.
std::map<std::string, Tensor> load_safetensors(const std::string& path);
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

// Writes tensors (any device; copied to the host) atomically: the file is
// either complete or untouched.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace vlmc::io
