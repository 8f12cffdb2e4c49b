// Host memory for tensors: 64-byte aligned, with a cache of large freed
// blocks. A fresh large allocation comes from mmap and page-faults on first
// touch (about 30 ms for a [4,576,4096] f32 activation here), which would cost
// more than the kernel that fills it; reusing blocks avoids that, as the CUDA
// caching allocator does on the device.
#pragma once

#include <cstddef>

namespace vlmc::host {

void* allocate(size_t nbytes);
void release(void* ptr, size_t nbytes);

// Frees every cached block. The cache holds at most VLMC_HOST_CACHE_MB
// (default 1024) megabytes; 0 disables it.
void empty_cache();
size_t cached_bytes();

}  // namespace vlmc::host
