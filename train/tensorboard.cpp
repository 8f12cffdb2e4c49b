#include "train/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include "core/error.h"
#include "core/io/read_file.h"

namespace vlmc::train {

namespace fs = std::filesystem;

namespace {

// One entry per byte value: the CRC of that byte alone, reflected.
constexpr std::array<uint32_t, 256> kCrc32cTable = [] {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}();

// TFRecord stores CRCs rotated and offset ("masked"), so that the CRC of data
// which itself contains CRCs is not degenerate.
uint32_t masked_crc(std::string_view bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>(v >> (8 * i));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// ---- protobuf encoding: wire types 0 (varint), 1 (64-bit), 2 (bytes), 5 (32-bit)

void put_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += static_cast<char>(v | 0x80);
  out += static_cast<char>(v);
}
void put_key(std::string& out, int field, int wire) { put_varint(out, uint64_t(field) << 3 | wire); }
void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_double(std::string& out, int field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_key(out, field, 1);
  put_le(out, bits, 8);
}
void put_float(std::string& out, int field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  put_key(out, field, 5);
  put_le(out, bits, 4);
}

// ---- protobuf decoding: a bounds-checked cursor over one message. Malformed
// input throws Malformed, which the record loop turns into an Error with the
// file and offset.

struct Malformed {
  std::string what;
};

struct Field {
  uint64_t number;
  int wire;
};

struct ProtoReader {
  std::string_view rest;

  bool done() const { return rest.empty(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest.empty()) throw Malformed{"varint runs past the end of its message"};
      const auto byte = static_cast<unsigned char>(rest.front());
      rest.remove_prefix(1);
      v |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    throw Malformed{"varint longer than 10 bytes"};
  }
  std::string_view take(uint64_t n) {
    if (n > rest.size()) throw Malformed{str("a field of ", n, " bytes runs past the end of its message")};
    const std::string_view head = rest.substr(0, n);
    rest.remove_prefix(n);
    return head;
  }
  std::string_view bytes() { return take(varint()); }
  float f32() {
    const auto bits = static_cast<uint32_t>(get_le(take(4).data(), 4));
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  double f64() {
    const uint64_t bits = get_le(take(8).data(), 8);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  Field key() {
    const uint64_t k = varint();
    if ((k >> 3) == 0) throw Malformed{"field number 0"};
    return {k >> 3, int(k & 7)};
  }
  void skip(int wire) {
    if (wire == 0) varint();
    else if (wire == 1) take(8);
    else if (wire == 2) bytes();
    else if (wire == 5) take(4);
    else throw Malformed{str("unsupported wire type ", wire)};
  }
};

// True when f is field `number`; throws when it is, but not with the wire type
// the .proto declares for it.
bool is(Field f, uint64_t number, int wire, const char* name) {
  if (f.number != number) return false;
  if (f.wire != wire) throw Malformed{str(name, " (field ", number, ") has wire type ", f.wire, ", not ", wire)};
  return true;
}

// A TensorProto holding one float: dtype (1) DT_FLOAT = 1, a shape (2) without
// dims, and float_val (5, packed or not) or tensor_content (4) of 4 bytes.
// Anything else (histograms, images, text) is not a scalar: nullopt.
std::optional<float> tensor_scalar(std::string_view message) {
  uint64_t dtype = 0;
  bool rank0 = true;
  std::vector<float> values;
  std::string_view content;
  for (ProtoReader r{message}; !r.done();) {
    const Field f = r.key();
    if (f.number == 5 && f.wire == 5) values.push_back(r.f32());
    else if (is(f, 5, 2, "TensorProto.float_val"))
      for (ProtoReader packed{r.bytes()}; !packed.done();) values.push_back(packed.f32());
    else if (is(f, 1, 0, "TensorProto.dtype")) dtype = r.varint();
    else if (is(f, 4, 2, "TensorProto.tensor_content")) content = r.bytes();
    else if (is(f, 2, 2, "TensorProto.tensor_shape"))
      for (ProtoReader shape{r.bytes()}; !shape.done();) {
        const Field g = shape.key();
        if (g.number == 2) rank0 = false;  // a dim
        if (is(g, 3, 0, "TensorShapeProto.unknown_rank")) rank0 = rank0 && shape.varint() == 0;
        else shape.skip(g.wire);
      }
    else r.skip(f.wire);
  }
  if (dtype != 1 || !rank0) return std::nullopt;
  if (values.size() == 1) return values[0];
  if (values.empty() && content.size() == 4) return ProtoReader{content}.f32();
  return std::nullopt;
}

// Appends the scalars of one serialised Event, one per scalar Summary.Value.
void decode_event(std::string_view message, std::vector<ScalarEvent>& out) {
  double wall_time = 0;
  int64_t step = 0;
  std::vector<std::pair<std::string, float>> scalars;
  for (ProtoReader r{message}; !r.done();) {
    const Field f = r.key();
    if (is(f, 1, 1, "Event.wall_time")) wall_time = r.f64();
    else if (is(f, 2, 0, "Event.step")) step = static_cast<int64_t>(r.varint());
    else if (!is(f, 5, 2, "Event.summary")) r.skip(f.wire);
    else
      for (ProtoReader summary{r.bytes()}; !summary.done();) {
        const Field s = summary.key();
        if (!is(s, 1, 2, "Summary.value")) {
          summary.skip(s.wire);
          continue;
        }
        std::string tag;
        std::optional<float> value;
        for (ProtoReader v{summary.bytes()}; !v.done();) {
          const Field g = v.key();
          if (is(g, 1, 2, "Summary.Value.tag")) tag = std::string(v.bytes());
          else if (is(g, 2, 5, "Summary.Value.simple_value")) value = v.f32();
          else if (is(g, 8, 2, "Summary.Value.tensor")) value = tensor_scalar(v.bytes());
          else v.skip(g.wire);
        }
        if (value) scalars.emplace_back(std::move(tag), *value);
      }
  }
  for (auto& [tag, value] : scalars) out.push_back({std::move(tag), step, wall_time, value});
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  uint32_t c = 0xffffffffu;
  for (const char ch : bytes) c = kCrc32cTable[(c ^ static_cast<unsigned char>(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

namespace {

// An Event's wall_time (field 1) and step (field 2), the fields every record here opens with.
std::string event_head(double wall_time, int64_t step) {
  std::string event;
  put_double(event, 1, wall_time);
  put_key(event, 2, 0);
  put_varint(event, static_cast<uint64_t>(step));
  return event;
}

}  // namespace

double TensorBoardWriter::now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t start_step) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(str(dir, ": cannot create TensorBoard directory: ", ec.message()));
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
  char stem[64];
  std::snprintf(stem, sizeof stem, "events.out.tfevents.%010lld.", static_cast<long long>(now()));
  const std::string base = (fs::path(dir) / (stem + std::string(host))).string();
  // "x": fail instead of opening a file that exists, so two writers (or a
  // resumed run) never share one.
  for (int n = 0; !file_; ++n) {
    path_ = n == 0 ? base : str(base, ".", n);
    errno = 0;
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_ && errno != EEXIST) throw Error(str(path_, ": cannot create TensorBoard events file: ", errno_text()));
  }
  std::string version;
  const double wall_time = now();
  put_double(version, 1, wall_time);
  put_bytes(version, 3, "brain.Event:2");
  write_record(version);
  std::string start = event_head(wall_time, start_step);
  put_bytes(start, 7, std::string{0x08, 0x01});  // SessionLog.status (1) = START (1)
  write_record(start);
  flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value, double wall_time) {
  std::string summary_value, summary;
  put_bytes(summary_value, 1, tag);
  put_float(summary_value, 2, static_cast<float>(value));
  put_bytes(summary, 1, summary_value);
  std::string event = event_head(wall_time, step);
  put_bytes(event, 5, summary);
  write_record(event);
  flush();
}

void TensorBoardWriter::write_record(std::string_view data) {
  std::string record;
  put_le(record, data.size(), 8);
  put_le(record, masked_crc(record), 4);
  record += data;
  put_le(record, masked_crc(data), 4);
  errno = 0;
  if (std::fwrite(record.data(), 1, record.size(), file_.get()) != record.size())
    throw Error(str(path_, ": writing TensorBoard event failed: ", errno_text()));
}

void TensorBoardWriter::flush() {
  errno = 0;
  if (std::fflush(file_.get()) != 0)
    throw Error(str(path_, ": flushing TensorBoard events file failed: ", errno_text()));
}

std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path) {
  const std::string data = io::read_file(path, "TensorBoard events file");

  std::vector<ScalarEvent> out;
  for (size_t off = 0; off < data.size();) {
    const auto fail = [&](const std::string& what) {
      throw Error(str(path, ": TensorBoard record at byte offset ", off, ": ", what));
    };
    const size_t left = data.size() - off;
    if (left < 12) fail(str("truncated: ", left, " bytes left, a record header takes 12"));
    const std::string_view header(data.data() + off, 8);
    if (get_le(data.data() + off + 8, 4) != masked_crc(header)) fail("CRC of the length does not match");
    const uint64_t length = get_le(header.data(), 8);
    if (left < 16 || length > left - 16)
      fail(str("truncated: the header announces ", length, " bytes of data + 4 of CRC, only ", left - 12, " follow"));
    const std::string_view body(data.data() + off + 12, length);
    if (get_le(body.data() + length, 4) != masked_crc(body)) fail("CRC of the data does not match");
    try {
      decode_event(body, out);
    } catch (const Malformed& m) {
      fail("malformed Event protobuf: " + m.what);
    }
    off += 16 + length;
  }
  return out;
}

std::vector<std::string> tensorboard_event_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind("events.out.tfevents.", 0) == 0 && it->is_regular_file())
      files.push_back(it->path().string());
  if (ec) throw Error(str(dir, ": cannot list TensorBoard directory: ", ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace vlmc::train
