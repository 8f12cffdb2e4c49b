// Host-side CUDA services core/ needs: device discovery, the caching
// allocator, the per-device stream and host<->device copies.
//
// The header names no CUDA types so that a CPU-only build compiles it; in such
// a build is_available() is false and everything else throws vlmc::Error.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_stream.h"

namespace vlmc::cuda {

bool is_available();  // true when built with CUDA and at least one device is visible
int device_count();   // 0 when none

// The stream every vlmc op on this device is issued to (created on first use).
// One stream per device keeps the caching allocator's reuse stream-ordered.
cudaStream_t stream(int device);
void synchronize(int device);

// Caching allocator: freed blocks are kept and reused, so ops do not call
// cudaMalloc in steady state. Blocks are reused only on the device's stream.
void* allocate(size_t nbytes, int device);
void release(void* ptr, int device);
void empty_cache();  // returns cached (unused) blocks to the driver

struct AllocatorStats {
  size_t allocated_bytes = 0;       // held by live tensors
  size_t reserved_bytes = 0;        // allocated + cached
  size_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes
  int64_t device_mallocs = 0;       // cudaMalloc calls made
  int64_t cache_hits = 0;           // allocations served from the cache
};
AllocatorStats allocator_stats(int device);
// Starts a new high-water mark at what is allocated now (per stage, per benchmark).
void reset_peak_allocated(int device);

// Copies. Host to device returns once src may be reused; the bytes land in
// stream order (small copies are staged through pinned memory and do not make
// the host wait; large ones do). Device to host returns once the bytes are in
// place (the host may read them): the one copy that synchronises.
void copy_host_to_device(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int device);
void copy_device_to_device(void* dst, const void* src, size_t nbytes, int device);  // stream-ordered

}  // namespace vlmc::cuda
