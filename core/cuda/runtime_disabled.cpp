// core/cuda/runtime.h for a build configured with -DVLMC_CUDA=OFF: no device
// is ever available, and asking for one is a clear error.
#include "core/cuda/runtime.h"

#include "core/error.h"

namespace vlmc::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw Error(str(what, ": this vlmc was built without CUDA (configure with -DVLMC_CUDA=ON)"));
}
}  // namespace

bool is_available() { return false; }
int device_count() { return 0; }
cudaStream_t stream(int) { no_cuda("cuda::stream"); }
void synchronize(int) { no_cuda("cuda::synchronize"); }
void* allocate(size_t, int) { no_cuda("cuda::allocate"); }
void release(void*, int) {}
void empty_cache() {}
AllocatorStats allocator_stats(int) { return {}; }
void reset_peak_allocated(int) {}
void copy_host_to_device(void*, const void*, size_t, int) { no_cuda("cuda::copy_host_to_device"); }
void copy_device_to_host(void*, const void*, size_t, int) { no_cuda("cuda::copy_device_to_host"); }
void copy_device_to_device(void*, const void*, size_t, int) { no_cuda("cuda::copy_device_to_device"); }

}  // namespace vlmc::cuda
