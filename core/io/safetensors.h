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

// Reads and parses the file at `path` (all tensors into memory; a
// SafetensorsFile reads them one at a time).
SafetensorsData read_safetensors(const std::string& path);

// One tensor of an open file: where its bytes are, not the bytes.
struct TensorEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // of the first byte, from the start of the file
  uint64_t nbytes = 0;
};

// A safetensors file opened for reading tensor by tensor, so that a model
// loads from a multi-gigabyte checkpoint without the file ever being in memory
// at once. The header is read and checked as read_safetensors checks it when
// the file is opened; each read then checks that the file still holds the
// tensor's bytes (a file truncated after it was opened is an error naming the
// tensor, never zeros).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorEntry>& entries() const { return entries_; }  // in file order
  const TensorEntry* find(const std::string& name) const;               // nullptr when absent
  // Copies the entry's nbytes bytes to dst (chunked positional reads).
  void read(const TensorEntry& entry, void* dst) const;

 private:
  void read_at(void* dst, uint64_t bytes, uint64_t offset, const std::string& what) const;

  std::string path_;
  int fd_ = -1;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;  // name -> position in entries_
};

// Writes `data` to `path` atomically: a failed write leaves any previous file
// at `path` untouched and no temporary file behind.
void write_safetensors(const std::string& path, const SafetensorsData& data);

// "F32", "F64", "F16", "BF16", "I32", "I64", "U8".
std::string dtype_to_safetensors(DType t);
DType dtype_from_safetensors(const std::string& s, const std::string& source);

}  // namespace vlmc::io
