// Host memory for tensors: 64-byte aligned, with a cache of large freed
// blocks. A fresh large allocation comes from mmap and page-faults on first
// touch (about 30 ms for a [4,576,4096] f32 activation here), which would cost
// more than the kernel that fills it; reusing blocks avoids that, as the CUDA
// caching allocator does on the device. A request takes the smallest cached
// block that holds it, split when much larger; a freed block merges with the
// cached blocks beside it in the address space. The cache keeps a freed block only
// while live tensors and cached blocks together stay within the tensors'
// high-water mark plus 64 MiB, so it adds at most that to a run's peak
// (host_allocator.cpp). When the system refuses a new mapping (an address
// space or overcommit limit), every cached block is given back and the
// mapping is tried once more before the out-of-memory error.
#pragma once

#include <cstddef>

namespace vlmc::host {

void* allocate(size_t nbytes);
void release(void* ptr, size_t nbytes);

// Frees every cached block, and starts the high-water mark that bounds the
// cache afresh from the live tensors: after a phase whose peak the next one
// need not reach (loading, where a model's f32 blocks were mapped and never
// touched before its frozen weights became bf16; a stage with larger
// batches). VLMC_HOST_CACHE_MB caps the cache (unset: only the high-water
// rule bounds it); 0 disables it.
void empty_cache();
size_t cached_bytes();

// Bytes of tensor storage handed out and not yet released (blocks rounded
// up as allocate() rounds them; the cache's free blocks are not counted),
// and their high-water mark since the last reset_peak_live(). These are
// what a step's memory plan estimates (train/memory_plan.h): unlike the
// resident set they do not depend on malloc's arenas or on the cache.
size_t live_bytes();
size_t peak_live_bytes();
void reset_peak_live();

// Bytes of the large blocks this allocator maps itself, live or cached
// (malloc's statistics do not see them); 0 under AddressSanitizer.
size_t mapped_bytes();

}  // namespace vlmc::host
