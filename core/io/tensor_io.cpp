#include "core/io/tensor_io.h"

#include <cstring>

#include "core/io/safetensors.h"

namespace vlmc::io {

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  const SafetensorsData data = read_safetensors(path);
  std::map<std::string, Tensor> out;
  for (const auto& [name, raw] : data.tensors) {
    Tensor t = Tensor::empty(Shape(raw.shape.begin(), raw.shape.end()), raw.dtype);
    if (!raw.bytes.empty()) std::memcpy(t.data_ptr(), raw.bytes.data(), raw.bytes.size());
    out.emplace(name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  return read_safetensors(path).metadata;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  SafetensorsData data;
  data.metadata = metadata;
  for (const auto& [name, tensor] : tensors) {
    VLMC_CHECK(tensor.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined");
    const Tensor host = tensor.detach().to(Device::cpu()).contiguous();
    RawTensor raw;
    raw.dtype = host.dtype();
    raw.shape.assign(host.shape().begin(), host.shape().end());
    raw.bytes.resize(host.nbytes());
    if (!raw.bytes.empty()) std::memcpy(raw.bytes.data(), host.data_ptr(), raw.bytes.size());
    data.tensors.emplace_back(name, std::move(raw));
  }
  write_safetensors(path, data);
}

}  // namespace vlmc::io
