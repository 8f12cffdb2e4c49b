#include "train/idx.h"

#include <zlib.h>

#include <filesystem>
#include <vector>

namespace vlmc::train {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // u8, 3 dims
constexpr uint32_t kLabelsMagic = 0x00000801;  // u8, 1 dim
// Far above Fashion-MNIST's 47 MB of images; stops a corrupt or hostile
// stream from inflating without bound.
constexpr size_t kMaxBytes = size_t{1} << 30;

// The whole decompressed content of a gzip file.
std::vector<uint8_t> read_gzip(const std::string& path) {
  VLMC_CHECK(std::filesystem::is_regular_file(path), "idx: ", path, ": no such file");
  gzFile file = gzopen(path.c_str(), "rb");
  VLMC_CHECK(file != nullptr, "idx: ", path, ": cannot open");
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> chunk(size_t{1} << 20);
  std::string error;
  for (;;) {
    const int n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      error = gzerror(file, &code);
      break;
    }
    if (n == 0) {
      // zlib reports a stream cut short as Z_BUF_ERROR with a 0 return, not -1.
      int code = Z_OK;
      const char* message = gzerror(file, &code);
      if (code != Z_OK) error = message;
      break;
    }
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
    if (bytes.size() > kMaxBytes) {
      error = "more than 1 GiB of data";
      break;
    }
  }
  // zlib reads a file without a gzip header as plain bytes; IDX files here are
  // always compressed, so a "direct" file is the wrong file.
  const bool direct = gzdirect(file) != 0;
  gzclose(file);
  VLMC_CHECK(!direct, "idx: ", path, ": not a gzip file");
  VLMC_CHECK(error.empty(), "idx: ", path, ": corrupt gzip stream (", error, ")");
  return bytes;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Checks magic and sizes; returns the dims. The payload starts at 4 + 4 * dims.
std::vector<int64_t> parse_header(const std::string& path, const std::vector<uint8_t>& bytes,
                                  uint32_t magic, const char* what) {
  VLMC_CHECK(bytes.size() >= 4, "idx: ", path, ": ", bytes.size(),
             " bytes, too short for an IDX header");
  const uint32_t got = be32(bytes.data());
  VLMC_CHECK(got == magic, "idx: ", path, ": bad magic 0x", std::hex, got, " (expected 0x", magic,
             std::dec, " for ", what, ")");
  const size_t ndim = magic & 0xff;
  const size_t header = 4 + 4 * ndim;
  VLMC_CHECK(bytes.size() >= header, "idx: ", path, ": truncated header (", bytes.size(),
             " bytes, need ", header, ")");
  std::vector<int64_t> dims(ndim);
  uint64_t payload = 1;
  for (size_t d = 0; d < ndim; ++d) {
    dims[d] = be32(bytes.data() + 4 + 4 * d);
    payload *= static_cast<uint64_t>(dims[d]);
  }
  VLMC_CHECK(payload <= kMaxBytes, "idx: ", path, ": dims ", shape_str(dims), " too large");
  const uint64_t expected = header + payload;
  VLMC_CHECK(bytes.size() >= expected, "idx: ", path, ": truncated: dims ", shape_str(dims),
             " need ", expected, " bytes, file has ", bytes.size());
  VLMC_CHECK(bytes.size() == expected, "idx: ", path, ": ", bytes.size() - expected,
             " trailing bytes after dims ", shape_str(dims));
  return dims;
}

}  // namespace

const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

Tensor read_idx_images(const std::string& path) {
  const std::vector<uint8_t> bytes = read_gzip(path);
  const std::vector<int64_t> dims = parse_header(path, bytes, kImagesMagic, "u8 images, 3 dims");
  VLMC_CHECK(dims[1] == kFashionMnistSide && dims[2] == kFashionMnistSide, "idx: ", path,
             ": images are ", dims[1], "x", dims[2], ", expected 28x28 (dims ", shape_str(dims),
             ")");
  std::vector<uint8_t> pixels(bytes.begin() + 16, bytes.end());
  return Tensor::from_vector(pixels, dims);
}

Tensor read_idx_labels(const std::string& path) {
  const std::vector<uint8_t> bytes = read_gzip(path);
  const std::vector<int64_t> dims = parse_header(path, bytes, kLabelsMagic, "u8 labels, 1 dim");
  std::vector<int64_t> labels(static_cast<size_t>(dims[0]));
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = bytes[8 + i];
    VLMC_CHECK(labels[i] < kFashionMnistClasses, "idx: ", path, ": label ", labels[i],
               " at index ", i, " is not a class id (< 10)");
  }
  return Tensor::from_vector(labels, dims);
}

FashionMnistFiles locate_fashion_mnist(Split split, const std::string& dir) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  FashionMnistFiles files{dir + "/" + prefix + "-images-idx3-ubyte.gz",
                          dir + "/" + prefix + "-labels-idx1-ubyte.gz"};
  for (const std::string* path : {&files.images, &files.labels}) {
    VLMC_CHECK(std::filesystem::is_regular_file(*path), "fashion-mnist: ", *path,
               " not found; install the Debian package dataset-fashion-mnist "
               "(scripts/install-deps.sh or apt-get install dataset-fashion-mnist)");
  }
  return files;
}

FashionMnist load_fashion_mnist(Split split, const std::string& dir) {
  const FashionMnistFiles files = locate_fashion_mnist(split, dir);
  FashionMnist data;
  data.split = split;
  data.images = read_idx_images(files.images);
  data.labels = read_idx_labels(files.labels);
  VLMC_CHECK(data.images.size(0) == data.labels.size(0), "fashion-mnist: ", files.images, " has ",
             data.images.size(0), " images but ", files.labels, " has ", data.labels.size(0),
             " labels");
  return data;
}

}  // namespace vlmc::train
