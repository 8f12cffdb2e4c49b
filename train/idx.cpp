#include "train/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <vector>

namespace vlmc::train {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // u8, 3 dims
constexpr uint32_t kLabelsMagic = 0x00000801;  // u8, 1 dim
// Far above Fashion-MNIST's 47 MB of images; stops a corrupt or hostile
// stream from inflating without bound.
constexpr size_t kMaxBytes = size_t{1} << 30;

// One IDX file, decompressed: its dims and exactly prod(dims) payload bytes.
struct IdxContent {
  std::vector<int64_t> dims;
  std::vector<uint8_t> payload;
};

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// A gzFile that is closed on every path out, including a thrown check.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    VLMC_CHECK(std::filesystem::is_regular_file(path), "idx: ", path, ": no such file");
    file_ = gzopen(path.c_str(), "rb");
    VLMC_CHECK(file_ != nullptr, "idx: ", path, ": cannot open");
  }
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `size` bytes into `out`; returns how many came (fewer only at
  // the end of the stream). A corrupt stream, or a file that is not gzip at
  // all, throws naming the file.
  size_t read(uint8_t* out, size_t size) {
    size_t done = 0;
    while (done < size) {
      const size_t want = std::min<size_t>(size - done, size_t{1} << 20);
      const int n = gzread(file_, out + done, static_cast<unsigned>(want));
      // zlib reads a file without a gzip header as plain bytes; IDX files here
      // are always compressed, so a "direct" file is the wrong file.
      VLMC_CHECK(gzdirect(file_) == 0, "idx: ", path_, ": not a gzip file");
      int code = Z_OK;
      const char* message = gzerror(file_, &code);
      // A stream cut short is reported as Z_BUF_ERROR with a 0 return, not -1.
      VLMC_CHECK(n >= 0 && code == Z_OK, "idx: ", path_, ": corrupt gzip stream (", message, ")");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

// Reads the header first and checks magic and dims, so memory is bounded by
// the declared payload (itself at most kMaxBytes) and never by how far a
// corrupt or hostile stream would inflate.
IdxContent read_idx(const std::string& path, uint32_t magic, const char* what) {
  GzReader reader(path);
  uint8_t head[4 + 4 * 3];
  size_t got = reader.read(head, 4);
  VLMC_CHECK(got == 4, "idx: ", path, ": ", got, " bytes, too short for an IDX header");
  const uint32_t file_magic = be32(head);
  VLMC_CHECK(file_magic == magic, "idx: ", path, ": bad magic 0x", std::hex, file_magic,
             " (expected 0x", magic, std::dec, " for ", what, ")");
  const size_t ndim = magic & 0xff;
  const size_t header = 4 + 4 * ndim;
  got += reader.read(head + 4, header - 4);
  VLMC_CHECK(got == header, "idx: ", path, ": truncated header (", got, " bytes, need ", header,
             ")");

  IdxContent content;
  content.dims.resize(ndim);
  uint64_t payload = 1;
  for (size_t d = 0; d < ndim; ++d) {
    content.dims[d] = be32(head + 4 + 4 * d);
    // Each dim < 2^32, so the product is checked after every factor before it
    // can wrap.
    payload *= static_cast<uint64_t>(content.dims[d]);
    VLMC_CHECK(payload <= kMaxBytes, "idx: ", path, ": dims ", shape_str(content.dims),
               " too large (more than 1 GiB of data)");
  }
  content.payload.resize(payload);
  const size_t body = reader.read(content.payload.data(), payload);
  VLMC_CHECK(body == payload, "idx: ", path, ": truncated: dims ", shape_str(content.dims),
             " need ", header + payload, " bytes, file has ", header + body);
  // Anything after the payload means the dims do not describe this file.
  std::vector<uint8_t> tail(4096);
  size_t trailing = 0;
  for (size_t n; (n = reader.read(tail.data(), tail.size())) > 0;) {
    trailing += n;
    VLMC_CHECK(trailing < kMaxBytes, "idx: ", path, ": more than 1 GiB of trailing bytes after dims ",
               shape_str(content.dims));
  }
  VLMC_CHECK(trailing == 0, "idx: ", path, ": ", trailing, " trailing bytes after dims ",
             shape_str(content.dims));
  return content;
}

}  // namespace

const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

Tensor read_idx_images(const std::string& path) {
  IdxContent content = read_idx(path, kImagesMagic, "u8 images, 3 dims");
  const std::vector<int64_t>& dims = content.dims;
  VLMC_CHECK(dims[1] == kFashionMnistSide && dims[2] == kFashionMnistSide, "idx: ", path,
             ": images are ", dims[1], "x", dims[2], ", expected 28x28 (dims ", shape_str(dims),
             ")");
  return Tensor::from_vector(content.payload, dims);
}

Tensor read_idx_labels(const std::string& path) {
  const IdxContent content = read_idx(path, kLabelsMagic, "u8 labels, 1 dim");
  const std::vector<int64_t>& dims = content.dims;
  std::vector<int64_t> labels(static_cast<size_t>(dims[0]));
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = content.payload[i];
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
