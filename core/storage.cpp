#include "core/storage.h"

#include <cstdlib>

#include "core/cuda/runtime.h"
#include "core/error.h"

namespace vlmc {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  void* data = nullptr;
  if (device.is_cuda()) {
    data = cuda::allocate(nbytes, device.index);
  } else {
    constexpr size_t kAlign = 64;  // a cache line, and enough for any SIMD load
    const size_t rounded = ((nbytes == 0 ? 1 : nbytes) + kAlign - 1) / kAlign * kAlign;
    data = std::aligned_alloc(kAlign, rounded);
    VLMC_CHECK(data != nullptr, "cpu: out of memory allocating ", nbytes, " bytes");
  }
  return std::shared_ptr<Storage>(new Storage(data, nbytes, device));
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    cuda::release(data_, device_.index);
  } else {
    std::free(data_);
  }
}

}  // namespace vlmc
