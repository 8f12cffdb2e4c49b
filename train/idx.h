// Fashion-MNIST in the IDX format, read from Debian's dataset-fashion-mnist
// package (gzip files under /usr/share/datasets/fashion-mnist). Nothing is
// downloaded: a missing package is an error that says how to install it.
//
// IDX: a big-endian header (magic 0x0000 08 NN: u8 elements, NN dims; then NN
// u32 sizes) followed by exactly prod(sizes) bytes. Every deviation (bad magic,
// wrong dims, truncation, trailing bytes, a label >= 10, a file that is not
// gzip) throws vlmc::Error naming the file and the problem.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace vlmc::train {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int64_t kFashionMnistSide = 28;
inline constexpr int64_t kFashionMnistClasses = 10;

enum class Split { train, test };
const char* split_name(Split split);

// Images: magic 0x00000803, dims [N, 28, 28] -> u8 Tensor [N, 28, 28].
Tensor read_idx_images(const std::string& path);
// Labels: magic 0x00000801, dims [N], values < 10 -> i64 Tensor [N].
Tensor read_idx_labels(const std::string& path);

struct FashionMnistFiles {
  std::string images;  // e.g. <dir>/train-images-idx3-ubyte.gz
  std::string labels;  // e.g. <dir>/train-labels-idx1-ubyte.gz
};
// The two files of a split; throws (naming the package) when either is absent.
FashionMnistFiles locate_fashion_mnist(Split split, const std::string& dir = kFashionMnistDir);

struct FashionMnist {
  Split split = Split::train;
  Tensor images;  // u8 [N, 28, 28]
  Tensor labels;  // i64 [N]
  int64_t first = 0;  // the split file's index of item 0 (a part of a split starts later)
  int64_t size() const { return labels.numel(); }
};
// Reads and cross-checks one split (image and label counts must agree).
FashionMnist load_fashion_mnist(Split split, const std::string& dir = kFashionMnistDir);

}  // namespace vlmc::train
