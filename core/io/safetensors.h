// The safetensors file format at the raw-bytes level.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// mapping tensor names to {"dtype", "shape", "data_offsets"} (plus an optional
// "__metadata__" object of strings), then the data buffer that the offsets
// index into. This layer only moves bytes; the Tensor layer wraps it.
//
// Reading is strict: every structural rule of the format is checked and a
// violation throws vlmc::Error whose message starts with the source name and
// says what is wrong, so a corrupt or hostile file never yields a half-valid
// result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/dtype.h"

namespace vlmc::io {

// One tensor's element type, shape and little-endian element bytes, exactly as
// stored in the file.
struct RawTensor {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  std::vector<uint8_t> bytes;  // numel(shape) * dtype_size(dtype) bytes
};

struct SafetensorsData {
  std::map<std::string, std::string> metadata;            // "__metadata__": string -> string only
  std::vector<std::pair<std::string, RawTensor>> tensors;  // in file order when read
  const RawTensor* find(const std::string& name) const;    // nullptr when absent
};

// Headers longer than this are rejected before parsing, to bound memory.
inline constexpr uint64_t kMaxSafetensorsHeader = 100u * 1000u * 1000u;

// Parses a whole safetensors file held in memory. `source` names the file (or
// "<buffer>") at the start of every error message.
SafetensorsData parse_safetensors(const uint8_t* data, size_t size, const std::string& source);

// Reads and parses the file at `path`.
SafetensorsData read_safetensors(const std::string& path);

// Writes `data` to `path` atomically: a failed write leaves any previous file
// at `path` untouched and no temporary file behind.
void write_safetensors(const std::string& path, const SafetensorsData& data);

// "F32", "F64", "F16", "BF16", "I32", "I64", "U8".
std::string dtype_to_safetensors(DType t);
DType dtype_from_safetensors(const std::string& s, const std::string& source);

}  // namespace vlmc::io
