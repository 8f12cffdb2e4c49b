#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <system_error>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/output_path.h"

namespace vlmc::io {

// The header length is encoded byte by byte below, so the file layout does not
// depend on the host. The tensor bytes, however, are copied verbatim and the
// Tensor layer reinterprets them as native elements, which is only right on a
// little-endian host (every platform vlmc targets).
static_assert(std::endian::native == std::endian::little,
              "safetensors element bytes are little-endian and are used without swapping");

namespace {

using json = nlohmann::json;

constexpr size_t kLengthBytes = 8;
// A valid header nests three deep (root, entry, shape array); anything much
// deeper is malformed, and the limit keeps hostile nesting from costing stack
// or time anywhere downstream.
constexpr int kMaxJsonDepth = 16;
// Untrusted names and values are clipped in messages so a hostile header
// cannot produce a gigantic exception string.
constexpr size_t kMaxQuoted = 120;

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {{DType::f32, "F32"},  {DType::f64, "F64"}, {DType::bf16, "BF16"},
                                     {DType::f16, "F16"},  {DType::i32, "I32"}, {DType::i64, "I64"},
                                     {DType::u8, "U8"}};
constexpr const char* kSupportedList = "F32, F64, BF16, F16, I32, I64, U8";

std::optional<DType> lookup_dtype(const std::string& s) {
  for (const auto& e : kDTypeNames)
    if (s == e.name) return e.dtype;
  return std::nullopt;
}

std::string clip(const std::string& s, size_t max = kMaxQuoted) {
  return s.size() <= max ? s : s.substr(0, max) + "...";
}

std::string squote(const std::string& s) { return "'" + clip(s) + "'"; }

// A JSON value for an error message: scalars verbatim (clipped), containers by
// type only, since dumping one could be arbitrarily large.
std::string describe(const json& v) {
  if (v.is_structured()) return v.type_name();
  return clip(v.dump());
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string offsets_str(uint64_t begin, uint64_t end) { return str("[", begin, ",", end, "]"); }

// Element count of `shape`, or nullopt when it overflows 64 bits. A zero
// dimension makes the count zero however large the others are, so it is
// checked before multiplying.
std::optional<uint64_t> checked_numel(const std::vector<int64_t>& shape) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  uint64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  return n;
}

std::optional<uint64_t> checked_nbytes(const std::vector<int64_t>& shape, DType t) {
  const auto numel = checked_numel(shape);
  uint64_t bytes = 0;
  if (!numel || __builtin_mul_overflow(*numel, static_cast<uint64_t>(dtype_size(t)), &bytes))
    return std::nullopt;
  return bytes;
}

// A JSON integer >= 0, or nullopt for floats (even 2.0), negatives and non-numbers.
std::optional<uint64_t> nonneg_int(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void append_le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Returns the offset of the first byte that breaks UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included), or npos when valid.
// nlohmann checks strings itself, but checking up front gives a clearer message.
size_t find_invalid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return std::string::npos;
}

// ---------------------------------------------------------------- reading --

struct ParsedHeader {
  json root;
  std::vector<std::string> order;  // top-level keys in file order (json objects sort them)
};

// Parses the header JSON. nlohmann silently keeps the last of duplicate keys
// and sorts object keys, so a parse callback records the top-level key order
// and rejects duplicates at every level.
ParsedHeader parse_header_json(const uint8_t* text, size_t n, const std::string& source) {
  ParsedHeader out;
  std::vector<std::set<std::string>> open_objects;  // keys seen, one set per open object
  int depth = 0;
  auto callback = [&](int, json::parse_event_t event, json& parsed) -> bool {
    using E = json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        if (++depth > kMaxJsonDepth)
          throw Error(str(source, ": header JSON nests deeper than ", kMaxJsonDepth, " levels"));
        if (event == E::object_start) open_objects.emplace_back();
        break;
      case E::object_end:
        open_objects.pop_back();
        --depth;
        break;
      case E::array_end:
        --depth;
        break;
      case E::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        const bool top = open_objects.size() == 1;
        if (!open_objects.back().insert(key).second) {
          if (top) throw Error(str(source, ": duplicate key ", squote(key), " in header"));
          throw Error(str(source, ": duplicate key ", squote(key), " in entry ", squote(out.order.back())));
        }
        if (top) out.order.push_back(key);
        break;
      }
      case E::value:
        break;
    }
    return true;
  };
  try {
    out.root = json::parse(text, text + n, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw Error(str(source, ": header is not valid JSON: ", clip(e.what(), 4 * kMaxQuoted)));
  }
  return out;
}

// One tensor entry after validation; bytes are copied once the layout is known good.
struct Entry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

const json& require_field(const json& obj, const char* key, const std::string& name,
                          const std::string& source) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw Error(str(source, ": tensor ", squote(name), " is missing \"", key, "\""));
  return *it;
}

DType check_dtype(const json& v, const std::string& name, const std::string& source) {
  if (!v.is_string())
    throw Error(str(source, ": tensor ", squote(name), " dtype must be a string, got ", describe(v)));
  const auto& s = v.get_ref<const std::string&>();
  const auto t = lookup_dtype(s);
  if (!t)
    throw Error(str(source, ": tensor ", squote(name), " has unsupported dtype ", squote(s),
                    " (supported: ", kSupportedList, ")"));
  return *t;
}

std::vector<int64_t> check_shape(const json& v, const std::string& name, const std::string& source) {
  if (!v.is_array())
    throw Error(str(source, ": tensor ", squote(name),
                    " shape must be an array of non-negative integers, got ", describe(v)));
  std::vector<int64_t> shape;
  shape.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const auto d = nonneg_int(v[i]);
    if (!d)
      throw Error(str(source, ": tensor ", squote(name), " shape[", i, "] is ", describe(v[i]),
                      ", not a non-negative integer"));
    if (*d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(str(source, ": tensor ", squote(name), " shape[", i, "] = ", *d, " does not fit in int64"));
    shape.push_back(static_cast<int64_t>(*d));
  }
  return shape;
}

void check_offsets(const json& v, Entry& e, uint64_t data_size, const std::string& source) {
  std::optional<uint64_t> begin, end;
  if (v.is_array() && v.size() == 2) {
    begin = nonneg_int(v[0]);
    end = nonneg_int(v[1]);
  }
  if (!begin || !end)
    throw Error(str(source, ": tensor ", squote(e.name),
                    " data_offsets must be an array of two non-negative integers, got ",
                    v.is_array() ? str("an array of ", v.size(), " elements") : describe(v)));
  e.begin = *begin;
  e.end = *end;
  if (e.begin > e.end)
    throw Error(str(source, ": tensor ", squote(e.name), " data_offsets ", offsets_str(e.begin, e.end),
                    " begin after they end"));
  if (e.end > data_size)
    throw Error(str(source, ": tensor ", squote(e.name), " data_offsets ", offsets_str(e.begin, e.end),
                    " end past the ", data_size, "-byte data buffer"));
}

Entry check_entry(const std::string& name, const json& v, uint64_t data_size, const std::string& source) {
  if (!v.is_object())
    throw Error(str(source, ": tensor ", squote(name), " entry must be an object, got ", describe(v)));
  // Unknown keys are rejected rather than ignored: the format defines exactly
  // three, and a typo ("data_offset") should not pass silently.
  for (const auto& [key, _] : v.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw Error(str(source, ": tensor ", squote(name), " has unexpected key ", squote(key),
                      " (expected dtype, shape, data_offsets)"));
  Entry e;
  e.name = name;
  e.dtype = check_dtype(require_field(v, "dtype", name, source), name, source);
  e.shape = check_shape(require_field(v, "shape", name, source), name, source);
  check_offsets(require_field(v, "data_offsets", name, source), e, data_size, source);

  const auto needed = checked_nbytes(e.shape, e.dtype);
  const std::string what = str("shape ", shape_str(e.shape), " of ", dtype_to_safetensors(e.dtype));
  if (!needed)
    throw Error(str(source, ": tensor ", squote(name), " ", what, " needs more bytes than fit in 64 bits"));
  if (*needed != e.end - e.begin)
    throw Error(str(source, ": tensor ", squote(name), " data_offsets ", offsets_str(e.begin, e.end), " hold ",
                    e.end - e.begin, " bytes but ", what, " needs ", *needed));
  return e;
}

std::map<std::string, std::string> check_metadata(const json& v, const std::string& source) {
  if (!v.is_object())
    throw Error(str(source, ": __metadata__ must be an object of string to string, got ", describe(v)));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string())
      throw Error(str(source, ": __metadata__ value for key ", squote(key), " must be a string, got ",
                      describe(value)));
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// The tensors, taken in offset order, must tile the data buffer exactly:
// no overlap (two tensors aliasing bytes), no hole and no trailing bytes
// (unaccounted data a reader would silently ignore).
void check_layout(const std::vector<Entry>& entries, uint64_t data_size, const std::string& source) {
  std::vector<const Entry*> sorted;
  sorted.reserve(entries.size());
  for (const auto& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : sorted) {
    if (e->begin < expected)
      throw Error(str(source, ": tensor ", squote(e->name), " data_offsets ", offsets_str(e->begin, e->end),
                      " overlap tensor ", squote(prev->name), " data_offsets ",
                      offsets_str(prev->begin, prev->end)));
    if (e->begin > expected)
      throw Error(str(source, ": data buffer has a hole: bytes [", expected, ",", e->begin,
                      ") before tensor ", squote(e->name), " belong to no tensor"));
    expected = e->end;
    prev = e;
  }
  if (expected != data_size)
    throw Error(str(source, ": data buffer has ", data_size - expected, " trailing bytes after the last tensor (",
                    "tensors end at ", expected, " of ", data_size, ")"));
}

// ---------------------------------------------------------------- writing --

// Serialises a string as a JSON string literal; nlohmann handles escaping and
// rejects invalid UTF-8, which the format forbids.
std::string json_string(const std::string& s, const std::string& path, const char* what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    throw Error(str(path, ": ", what, " ", squote(s), " is not valid UTF-8"));
  }
}

// Validates every tensor and builds the padded header text (without the
// length prefix). Everything that can be wrong with `data` is found here,
// before any file is touched.
std::string build_header(const SafetensorsData& data, const std::string& path) {
  std::string header = "{";
  bool first = true;
  if (!data.metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first_kv = true;
    for (const auto& [k, v] : data.metadata) {
      header += (first_kv ? "" : ",") + json_string(k, path, "metadata key") + ":" +
                json_string(v, path, str("metadata value for key ", squote(k)).c_str());
      first_kv = false;
    }
    header += "}";
    first = false;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : data.tensors) {
    if (name == "__metadata__") throw Error(str(path, ": tensor name '__metadata__' is reserved"));
    if (!seen.insert(name).second) throw Error(str(path, ": duplicate tensor name ", squote(name)));
    for (int64_t d : t.shape)
      if (d < 0) throw Error(str(path, ": tensor ", squote(name), " has negative dim in shape ", shape_str(t.shape)));
    const std::string dt = dtype_to_safetensors(t.dtype);
    const auto needed = checked_nbytes(t.shape, t.dtype);
    if (!needed || *needed != t.bytes.size())
      throw Error(str(path, ": tensor ", squote(name), " has ", t.bytes.size(), " bytes but shape ",
                      shape_str(t.shape), " of ", dt, " needs ",
                      needed ? std::to_string(*needed) : std::string("more than 2^64")));
    header += (first ? "" : ",") + json_string(name, path, "tensor name") + ":{\"dtype\":\"" + dt +
              "\",\"shape\":" + shape_str(t.shape) + ",\"data_offsets\":" + offsets_str(offset, offset + *needed) +
              "}";
    offset += *needed;
    first = false;
  }
  header += "}";
  // Padding keeps the data buffer 8-byte aligned within the file, as the
  // reference writer does, so mapped tensors can be used in place.
  while (header.size() % 8 != 0) header += ' ';
  if (header.size() > kMaxSafetensorsHeader)
    throw Error(str(path, ": header would be ", header.size(), " bytes, over the ", kMaxSafetensorsHeader,
                    "-byte limit readers enforce"));
  return header;
}

}  // namespace

const RawTensor* SafetensorsData::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

std::string dtype_to_safetensors(DType t) {
  for (const auto& e : kDTypeNames)
    if (e.dtype == t) return e.name;
  throw Error(str("dtype_to_safetensors: unknown DType value ", static_cast<int>(t)));
}

DType dtype_from_safetensors(const std::string& s, const std::string& source) {
  const auto t = lookup_dtype(s);
  if (!t) throw Error(str(source, ": unsupported dtype ", squote(s), " (supported: ", kSupportedList, ")"));
  return *t;
}

namespace {

// The header of a file whose total size is `size`, checked against it before
// any tensor byte is looked at: the metadata and the entries, in file order,
// with their byte ranges within the data buffer (which follows the header).
struct CheckedHeader {
  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;
  uint64_t header_bytes = 0;  // n: the JSON's length
};

// `prefix` holds the file's first min(size, 8 + n) bytes (at least 8 when size allows).
uint64_t header_length(const uint8_t* prefix, uint64_t size, const std::string& source) {
  if (size < kLengthBytes)
    throw Error(str(source, ": file is ", size, " bytes, too short for the 8-byte header length"));
  const uint64_t n = read_le64(prefix);
  if (n > kMaxSafetensorsHeader)
    throw Error(str(source, ": header length ", n, " exceeds the ", kMaxSafetensorsHeader, "-byte limit"));
  if (n > size - kLengthBytes)
    throw Error(str(source, ": header length ", n, " runs past the end of the ", size, "-byte file"));
  return n;
}

CheckedHeader check_header(const uint8_t* header, uint64_t n, uint64_t size, const std::string& source) {
  // The reference implementation insists on '{' first (no leading whitespace).
  if (n == 0 || header[0] != '{')
    throw Error(str(source, ": header must be a JSON object starting with '{'"));
  if (const size_t bad = find_invalid_utf8(header, n); bad != std::string::npos)
    throw Error(str(source, ": header is not valid UTF-8 (bad byte at header offset ", bad, ")"));
  const ParsedHeader parsed = parse_header_json(header, n, source);
  const uint64_t buffer_size = size - kLengthBytes - n;
  CheckedHeader out;
  out.header_bytes = n;
  out.entries.reserve(parsed.order.size());
  for (const auto& key : parsed.order) {
    const json& value = parsed.root.at(key);
    if (key == "__metadata__")
      out.metadata = check_metadata(value, source);
    else
      out.entries.push_back(check_entry(key, value, buffer_size, source));
  }
  check_layout(out.entries, buffer_size, source);
  return out;
}

}  // namespace

SafetensorsData parse_safetensors(const uint8_t* data, size_t size, const std::string& source) {
  const uint64_t n = header_length(data, size, source);
  CheckedHeader checked = check_header(data + kLengthBytes, n, size, source);
  const uint8_t* buffer = data + kLengthBytes + n;
  SafetensorsData out;
  out.metadata = std::move(checked.metadata);
  out.tensors.reserve(checked.entries.size());
  for (auto& e : checked.entries) {
    RawTensor t;
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.bytes.assign(buffer + e.begin, buffer + e.end);
    out.tensors.emplace_back(std::move(e.name), std::move(t));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // The length prefix and the header are read and checked against the file's
  // size first: a file with a bad header costs its first bytes, not its size.
  errno = 0;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(str(path, ": cannot open: ", errno_text()));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error(str(path, ": cannot stat: ", errno_text()));
    if (S_ISDIR(st.st_mode)) throw Error(str(path, ": is a directory, not a safetensors file"));
    // A pipe or a device has no size to check the header against (and the zero
    // device never ends): only regular files are read.
    if (!S_ISREG(st.st_mode))
      throw Error(str(path, ": is not a regular file (a pipe, a device?): cannot read it as safetensors"));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    uint8_t prefix[kLengthBytes] = {};
    if (size >= kLengthBytes) read_at(prefix, kLengthBytes, 0, "the header length");
    const uint64_t n = header_length(prefix, size, path);
    std::vector<uint8_t> header(n);
    read_at(header.data(), n, kLengthBytes, "the header");
    CheckedHeader checked = check_header(header.data(), n, size, path);
    metadata_ = std::move(checked.metadata);
    entries_.reserve(checked.entries.size());
    for (auto& e : checked.entries) {
      index_.emplace(e.name, entries_.size());
      entries_.push_back(TensorEntry{std::move(e.name), e.dtype, std::move(e.shape), kLengthBytes + n + e.begin,
                                     e.end - e.begin});
    }
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      metadata_(std::move(other.metadata_)),
      entries_(std::move(other.entries_)),
      index_(std::move(other.index_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    metadata_ = std::move(other.metadata_);
    entries_ = std::move(other.entries_);
    index_ = std::move(other.index_);
  }
  return *this;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void SafetensorsFile::read_at(void* dst, uint64_t bytes, uint64_t offset, const std::string& what) const {
  // pread in chunks: one call may return less than asked (and Linux moves at
  // most about 2 GiB per call), and EINTR is retried.
  auto* out = static_cast<uint8_t*>(dst);
  uint64_t done = 0;
  while (done < bytes) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(bytes - done, uint64_t(1) << 30));
    errno = 0;
    const ssize_t got = ::pread(fd_, out + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw Error(str(path_, ": reading ", what, " failed: ", errno_text()));
    if (got == 0)
      throw Error(str(path_, ": reading ", what, " failed: the file ended early, after ", offset + done,
                      " bytes (was it truncated or changed while being read?)"));
    done += static_cast<uint64_t>(got);
  }
}

void SafetensorsFile::read(const TensorEntry& entry, void* dst) const {
  read_at(dst, entry.nbytes, entry.offset, "tensor " + squote(entry.name));
}

SafetensorsData read_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  SafetensorsData out;
  out.metadata = file.metadata();
  out.tensors.reserve(file.entries().size());
  for (const auto& e : file.entries()) {
    RawTensor t;
    t.dtype = e.dtype;
    t.shape = e.shape;
    t.bytes.resize(e.nbytes);
    file.read(e, t.bytes.data());
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const SafetensorsData& data) {
  check_output_path(path, "write_safetensors");
  const std::string header = build_header(data, path);
  std::string prefix;
  append_le64(prefix, header.size());

  // Beside the target, renamed over it once complete and on disk.
  AtomicFile file(path, "write_safetensors");
  file.write(prefix);
  file.write(header);
  for (const auto& [name, t] : data.tensors) file.write(t.bytes.data(), t.bytes.size());
  file.commit();
}

}  // namespace vlmc::io
