#include "core/storage.h"

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/host_allocator.h"

namespace vlmc {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  void* data = nullptr;
  if (device.is_cuda()) {
    data = cuda::allocate(nbytes, device.index);
  } else {
    data = host::allocate(nbytes);
  }
  return std::shared_ptr<Storage>(new Storage(data, nbytes, device));
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    cuda::release(data_, device_.index);
  } else {
    host::release(data_, nbytes_);
  }
}

}  // namespace vlmc
