// libFuzzer target for a sharded Hugging Face folder's
// model.safetensors.index.json (core/io/safetensors_folder.cpp). Two small
// shards are written at start; the input is the index beside them. Paths in
// the weight_map may try anything ("../x", "/etc/passwd", "", a directory).
//
// Opening must either give a folder whose every listed tensor reads back with
// the shape and size its entry promises, from a shard inside the folder, or
// throw vlmc::Error; any other exception, crash or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/io/safetensors_folder.h"
#include "core/io/tensor_io.h"
#include "tests/fuzz/fuzz_files.h"

namespace {

using namespace vlmc;

const std::string& folder() {
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/model";
    std::filesystem::create_directories(d + "/sub");
    io::save_safetensors(d + "/model-00001-of-00002.safetensors",
                         {{"a.weight", Tensor::ones({2, 3})}, {"a.bias", Tensor::zeros({3}).to(DType::bf16)}});
    io::save_safetensors(d + "/model-00002-of-00002.safetensors", {{"b.weight", Tensor::ones({1, 1}).to(DType::f16)}});
    io::save_safetensors(d + "/sub/extra.safetensors", {{"c", Tensor::ones({4})}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = folder();
  fuzz::write_scratch("model/model.safetensors.index.json", data, size);
  try {
    const io::SafetensorsFolder weights(dir);
    const std::string root = std::filesystem::weakly_canonical(dir).string() + "/";
    for (const std::string& name : weights.names()) {
      const io::TensorEntry& entry = weights.entry(name);
      const std::string shard = std::filesystem::weakly_canonical(weights.file_of(name)).string();
      if (shard.compare(0, root.size(), root) != 0) std::abort();  // a shard outside the folder was opened
      const Tensor t = weights.read(name);
      if (t.shape() != entry.shape || t.dtype() != entry.dtype) std::abort();
      if (static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype()) != entry.nbytes) std::abort();
    }
  } catch (const Error&) {
  }
  return 0;
}
