// libFuzzer target for the IDX/gzip reader (train/idx.cpp): the input is a
// file given as Fashion-MNIST's images and as its labels.
//
// Either read must return a tensor of the promised shape and values, or
// throw vlmc::Error; any other exception, crash or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "tests/fuzz/fuzz_files.h"
#include "train/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vlmc::fuzz::write_scratch("input-idx.gz", data, size);
  try {
    const vlmc::Tensor images = vlmc::train::read_idx_images(path);
    // [N, 28, 28] u8
    if (images.dim() != 3 || images.size(1) != 28 || images.size(2) != 28) std::abort();
    if (images.dtype() != vlmc::DType::u8) std::abort();
  } catch (const vlmc::Error&) {
  }
  try {
    const vlmc::Tensor labels = vlmc::train::read_idx_labels(path);
    // [N] i64, each < 10
    if (labels.dim() != 1 || labels.dtype() != vlmc::DType::i64) std::abort();
    const int64_t* values = labels.data<int64_t>();
    for (int64_t i = 0; i < labels.numel(); ++i) {
      if (values[i] < 0 || values[i] >= 10) std::abort();
    }
  } catch (const vlmc::Error&) {
  }
  return 0;
}
