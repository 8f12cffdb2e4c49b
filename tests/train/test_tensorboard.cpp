// TensorBoard events files: our writer read back by our reader (exact values,
// file naming, damage detection), the CRC32C check value, hand-built tensor
// scalars, and a file written by PyTorch's SummaryWriter
// (tests/golden/tensorboard/, make_golden_tensorboard.py).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "train/tensorboard.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;
using vlmc::test::read_file_bytes;
using vlmc::test::write_file_bytes;

namespace {

std::string le(uint64_t v, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out += static_cast<char>(v >> (8 * i));
  return out;
}

uint32_t masked(const std::string& bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// One TFRecord around `data`, framed independently of the writer.
std::string frame(const std::string& data) {
  const std::string header = le(data.size(), 8);
  return header + le(masked(header), 4) + data + le(masked(data), 4);
}

// A length-delimited protobuf field (lengths < 128 only).
std::string field(int number, const std::string& bytes) {
  return std::string(1, static_cast<char>(number << 3 | 2)) + static_cast<char>(bytes.size()) + bytes;
}

// Event{step, summary{value{tag "x", tensor}}}.
std::string tensor_event(int step, const std::string& tensor) {
  return std::string{0x10, static_cast<char>(step)} + field(5, field(1, field(1, "x") + field(8, tensor)));
}

constexpr int64_t kBigStep = int64_t(1) << 40;
float f32(double v) { return static_cast<float>(v); }

// Same scalars, values compared exactly as floats, wall times exactly as doubles.
void check_scalars(const std::vector<ScalarEvent>& got, const std::vector<ScalarEvent>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("scalar " << i << ": " << want[i].tag << " at step " << want[i].step);
    CHECK(got[i].tag == want[i].tag);
    CHECK(got[i].step == want[i].step);
    CHECK(got[i].wall_time == want[i].wall_time);
    CHECK(got[i].value == want[i].value);
  }
}

// The byte offset of the record that holds byte `pos`.
size_t record_at(const std::string& file, size_t pos) {
  size_t off = 0;
  for (;;) {
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= uint64_t(static_cast<unsigned char>(file[off + i])) << (8 * i);
    if (pos < off + 16 + length) return off;
    off += 16 + length;
  }
}

}  // namespace

TEST_CASE("tensorboard: CRC32C check value", "[tensorboard]") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
}

TEST_CASE("tensorboard: scalars read back exactly", "[tensorboard]") {
  TempDir tmp("tensorboard");
  const std::string dir = (tmp.path / "run" / "tb").string();  // created by the writer
  std::string path;
  {
    TensorBoardWriter tb(dir);
    path = tb.path();
    tb.add_scalar("train/loss", 0, 2.5, 1700000000.125);
    tb.add_scalar("train/lr", 0, 1e-4, 1700000000.5);
    tb.add_scalar("train/loss", 10, 1.0 / 3.0, 1700000001.75);
    tb.add_scalar("eval/accuracy", 10, -0.1, 1700000002.0);
    tb.add_scalar("train/loss", kBigStep, 123456.789, 1700000003.0);
    tb.add_scalar("neg", -3, 7.0);  // wall time now
  }
  const std::string name = fs::path(path).filename().string();
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  CHECK(name.size() > 31);
  CHECK(name.substr(20, 10).find_first_not_of("0123456789") == std::string::npos);
  CHECK(tensorboard_event_files(dir) == std::vector<std::string>{path});

  const std::vector<ScalarEvent> got = read_tensorboard_scalars(path);
  REQUIRE(got.size() == 6);
  check_scalars({got.begin(), got.begin() + 5}, {{"train/loss", 0, 1700000000.125, 2.5f},
                                                 {"train/lr", 0, 1700000000.5, f32(1e-4)},
                                                 {"train/loss", 10, 1700000001.75, f32(1.0 / 3.0)},
                                                 {"eval/accuracy", 10, 1700000002.0, f32(-0.1)},
                                                 {"train/loss", kBigStep, 1700000003.0, f32(123456.789)}});
  CHECK(got[5].tag == "neg");
  CHECK(got[5].step == -3);
  CHECK(got[5].value == 7.0f);
  CHECK(std::abs(got[5].wall_time - TensorBoardWriter::now()) < 60);
}

TEST_CASE("tensorboard: a second writer in the same directory makes a second file", "[tensorboard]") {
  TempDir tmp("tensorboard");
  const std::string dir = tmp.path.string();
  TensorBoardWriter first(dir), second(dir, /*start_step=*/1);
  first.add_scalar("a", 1, 1.5);
  second.add_scalar("b", 2, 2.5);
  CHECK(first.path() != second.path());
  const std::vector<std::string> files = tensorboard_event_files(dir);
  REQUIRE(files.size() == 2);
  CHECK(files[0] == std::min(first.path(), second.path()));
  CHECK(files[1] == std::max(first.path(), second.path()));
  REQUIRE(read_tensorboard_scalars(first.path()).size() == 1);
  CHECK(read_tensorboard_scalars(second.path())[0].tag == "b");
  CHECK_THROWS_WITH(tensorboard_event_files(tmp.file("missing")), Catch::Contains("missing"));
  const std::string under_file = tmp.write("plain", "x") + "/tb";  // a directory under a regular file
  CHECK_THROWS_WITH(TensorBoardWriter(under_file), Catch::Contains(under_file));
}

TEST_CASE("tensorboard: a flipped byte or a truncated file names the file and the offset", "[tensorboard]") {
  TempDir tmp("tensorboard");
  std::string path;
  {
    TensorBoardWriter tb(tmp.path.string());
    path = tb.path();
    for (int step = 0; step < 20; ++step) tb.add_scalar("train/loss", step, 1.0 / (step + 1));
  }
  const std::string good = read_file_bytes(path);
  REQUIRE(read_tensorboard_scalars(path).size() == 20);

  std::string bad = good;
  const size_t middle = bad.size() / 2;
  bad[middle] ^= 0x10;
  write_file_bytes(path, bad);
  const std::string offset = "byte offset " + std::to_string(record_at(good, middle)) + ":";
  CHECK_THROWS_WITH(read_tensorboard_scalars(path), Catch::Contains(path) && Catch::Contains(offset) &&
                                                        Catch::Contains("CRC"));

  const size_t last = record_at(good, good.size() - 1);
  for (const size_t keep : {good.size() - 3, last + 5}) {  // cut in the data CRC, then in the header
    INFO("kept " << keep << " of " << good.size() << " bytes");
    write_file_bytes(path, good.substr(0, keep));
    CHECK_THROWS_WITH(read_tensorboard_scalars(path),
                      Catch::Contains(path) && Catch::Contains("byte offset " + std::to_string(last) + ":") &&
                          Catch::Contains("truncated"));
  }
  write_file_bytes(path, good.substr(0, last));  // cut between records: the complete ones
  CHECK(read_tensorboard_scalars(path).size() == 19);
  CHECK_THROWS_WITH(read_tensorboard_scalars(tmp.file("none")), Catch::Contains(tmp.file("none")));
}

TEST_CASE("tensorboard: scalars stored as tensors are read, other tensors skipped, malformed events refused", "[tensorboard]") {
  TempDir tmp("tensorboard");
  const std::string f15 = le(0x3fc00000, 4);   // 1.5f
  const std::string f25 = le(0x40200000, 4);   // 2.5f
  const std::string dt_float = {0x08, 0x01};
  const std::string dt_double = {0x08, 0x02};
  const std::string file =
      frame(tensor_event(1, dt_float + field(2, "") + field(4, f15))) +                 // tensor_content
      frame(tensor_event(2, dt_float + std::string(1, 0x2d) + f25)) +                   // float_val, not packed
      frame(tensor_event(3, dt_float + field(5, f15))) +                                // float_val, packed
      frame(tensor_event(4, dt_float + field(2, field(2, {0x08, 0x01})) + field(5, f15))) +  // shape [1]
      frame(tensor_event(5, dt_double + field(4, le(0, 8)))) +                          // DT_DOUBLE
      frame(tensor_event(6, dt_float + field(5, f15 + f25)));                           // two values
  const std::string path = tmp.file("events.out.tfevents.hand");
  write_file_bytes(path, file);
  const std::vector<ScalarEvent> got = read_tensorboard_scalars(path);
  REQUIRE(got.size() == 3);
  CHECK((got[0].step == 1 && got[0].tag == "x" && got[0].value == 1.5f));
  CHECK((got[1].step == 2 && got[1].value == 2.5f));
  CHECK((got[2].step == 3 && got[2].value == 1.5f));

  // Valid framing around bad protobuf: a step with the wrong wire type, a
  // field longer than its message, a group (wire type 3).
  const std::string first = frame(tensor_event(1, dt_float + field(5, f15)));
  for (const std::string& event : {std::string{0x15, 0, 0, 0, 0}, field(5, "") + std::string{0x2a, 0x05, 0x0a},
                                   std::string{0x1b}}) {
    write_file_bytes(path, first + frame(event));
    CHECK_THROWS_WITH(read_tensorboard_scalars(path),
                      Catch::Contains(path) && Catch::Contains("byte offset " + std::to_string(first.size()) + ":") &&
                          Catch::Contains("malformed Event"));
  }
}

TEST_CASE("tensorboard: reads the file PyTorch's SummaryWriter wrote", "[tensorboard]") {
  const std::string path = (fs::path(VLMC_GOLDEN_DIR) / "tensorboard" / "events.out.tfevents.golden").string();
  const std::vector<ScalarEvent> got = read_tensorboard_scalars(path);
  // SCALARS of make_golden_tensorboard.py, wall times 1700000000.25 + index; two
  // in SummaryWriter's new_style (a rank-0 DT_FLOAT tensor), as noted.
  // The text and histogram summaries are skipped.
  check_scalars(got, {{"train/loss", 0, 1700000000.25, 2.5f},
                      {"train/lr", 0, 1700000001.25, f32(1e-4)},
                      {"train/loss", 10, 1700000002.25, f32(1.0 / 3.0)},
                      {"train/lr", 10, 1700000003.25, f32(2e-5)},
                      {"eval/accuracy", 10, 1700000004.25, 0.8125f},  // new_style
                      {"train/loss", 20, 1700000005.25, f32(-0.1)},   // new_style
                      {"train/loss", kBigStep, 1700000006.25, f32(123456.789)}});
}
