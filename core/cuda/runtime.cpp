// The CUDA build of core/cuda/runtime.h.
#include "core/cuda/runtime.h"

#include <cuda_runtime.h>

#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/cuda/deferred_check.h"
#include "core/error.h"
#include "kernels/cuda/check.h"

namespace vlmc::cuda {
namespace {

// Rounds requests so that blocks of similar size are interchangeable:
// 512 B granules below 1 MiB, 2 MiB granules above.
size_t round_size(size_t n) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20;
  if (n < (size_t(1) << 20)) return ((n + kSmall - 1) / kSmall) * kSmall;
  return ((n + kLarge - 1) / kLarge) * kLarge;
}

struct DeviceCache {
  std::multimap<size_t, void*> free_blocks;     // size -> block, for best fit
  std::unordered_map<void*, size_t> live;       // block -> size
  AllocatorStats stats;
  cudaStream_t stream = nullptr;
};

struct Allocator {
  std::mutex mutex;
  std::vector<DeviceCache> devices;

  DeviceCache& device(int index) {
    if (devices.empty()) devices.resize(static_cast<size_t>(device_count()));
    VLMC_CHECK(index >= 0 && index < static_cast<int>(devices.size()), "cuda: device cuda:", index,
               " does not exist (", devices.size(), " visible)");
    return devices[static_cast<size_t>(index)];
  }

  void free_cached(int index, DeviceCache& cache) {
    VLMC_CUDA_CHECK(cudaSetDevice(index));
    for (auto& [size, ptr] : cache.free_blocks) {
      VLMC_CUDA_CHECK(cudaFree(ptr));
      cache.stats.reserved_bytes -= size;
    }
    cache.free_blocks.clear();
  }
};

Allocator& allocator() {
  static Allocator* instance = new Allocator();  // never destroyed: tensors may outlive static teardown
  return *instance;
}

// Small host-to-device uploads (a batch's token ids, masks, index maps) go
// through a pinned staging ring so that the host does not wait for them: the
// bytes are copied into the ring at once (the caller may reuse its buffer),
// the DMA is queued on the device's stream, and an event marks when that part
// of the ring may be written again. The host waits only when the ring wraps
// onto an upload still in flight, which a training step's few kilobytes never
// reach. Larger uploads (weights, whole data sets) stay synchronous.
struct StagingRing {
  static constexpr size_t kCapacity = size_t(8) << 20;
  static constexpr size_t kMaxUpload = kCapacity / 8;
  static constexpr size_t kAlign = 256;
  struct InFlight {
    size_t begin, end;
    cudaEvent_t done;
  };
  std::mutex mutex;
  char* base = nullptr;  // pinned, kCapacity bytes, allocated on first use
  size_t head = 0;       // where the next upload starts looking
  std::deque<InFlight> in_flight;  // oldest first
  std::vector<cudaEvent_t> spare_events;

  // Queues dst <- src on `stream`; returns once src may be reused.
  void upload(void* dst, const void* src, size_t nbytes, int index, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex);
    VLMC_CUDA_CHECK(cudaSetDevice(index));
    if (base == nullptr) VLMC_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&base), kCapacity, cudaHostAllocDefault));
    // Recycle the events of uploads that have landed, oldest first.
    while (!in_flight.empty() && cudaEventQuery(in_flight.front().done) == cudaSuccess) retire_front();
    cudaGetLastError();  // cudaEventQuery's cudaErrorNotReady is not an error
    size_t begin = (head + kAlign - 1) / kAlign * kAlign;
    if (begin + nbytes > kCapacity) begin = 0;  // wrap
    const size_t end = begin + nbytes;
    // Wait for the newest in-flight upload that overlaps [begin, end): the
    // stream runs them in order, so every older one has landed too.
    for (size_t i = in_flight.size(); i-- > 0;) {
      if (in_flight[i].begin < end && begin < in_flight[i].end) {
        VLMC_CUDA_CHECK(cudaEventSynchronize(in_flight[i].done));
        for (size_t k = 0; k <= i; ++k) retire_front();
        check_deferred_errors(index);  // a host wait, like every other one
        break;
      }
    }
    std::memcpy(base + begin, src, nbytes);
    VLMC_CUDA_CHECK(cudaMemcpyAsync(dst, base + begin, nbytes, cudaMemcpyHostToDevice, stream));
    cudaEvent_t done;
    if (spare_events.empty()) {
      VLMC_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    } else {
      done = spare_events.back();
      spare_events.pop_back();
    }
    VLMC_CUDA_CHECK(cudaEventRecord(done, stream));
    in_flight.push_back({begin, end, done});
    head = end;
  }

  void retire_front() {
    spare_events.push_back(in_flight.front().done);
    in_flight.pop_front();
  }
};

StagingRing& staging_ring(int index) {
  static std::mutex mutex;
  static std::map<int, StagingRing*>* rings = new std::map<int, StagingRing*>();  // never destroyed, as the allocator
  std::lock_guard<std::mutex> lock(mutex);
  StagingRing*& ring = (*rings)[index];
  if (ring == nullptr) ring = new StagingRing();
  return *ring;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

bool is_available() { return device_count() > 0; }

cudaStream_t stream(int index) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  DeviceCache& d = a.device(index);
  if (d.stream == nullptr) {
    VLMC_CUDA_CHECK(cudaSetDevice(index));
    VLMC_CUDA_CHECK(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
  }
  return d.stream;
}

// After each host wait the device's deferred index checks are read: an op's
// bad index surfaces here (core/cuda/deferred_check.h). Every wait of this
// file goes through it, or calls check_deferred_errors after an event wait.
void synchronize(int index) {
  VLMC_CUDA_CHECK(cudaStreamSynchronize(stream(index)));
  check_deferred_errors(index);
}

void* allocate(size_t nbytes, int index) {
  const size_t size = round_size(nbytes == 0 ? 1 : nbytes);
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  DeviceCache& d = a.device(index);
  void* ptr = nullptr;
  // Best fit among cached blocks, accepting at most 25% slack so large
  // blocks are not burned on small requests.
  auto it = d.free_blocks.lower_bound(size);
  if (it != d.free_blocks.end() && it->first <= size + size / 4) {
    ptr = it->second;
    d.live[ptr] = it->first;
    d.stats.allocated_bytes += it->first;
    d.free_blocks.erase(it);
    ++d.stats.cache_hits;
  } else {
    VLMC_CUDA_CHECK(cudaSetDevice(index));
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      a.free_cached(index, d);  // give the cache back and try once more
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw Error(str("cuda:", index, ": out of memory allocating ", size, " bytes (",
                      d.stats.allocated_bytes, " bytes held by tensors): ", cudaGetErrorString(err)));
    }
    d.live[ptr] = size;
    d.stats.allocated_bytes += size;
    d.stats.reserved_bytes += size;
    ++d.stats.device_mallocs;
  }
  if (d.stats.allocated_bytes > d.stats.peak_allocated_bytes)
    d.stats.peak_allocated_bytes = d.stats.allocated_bytes;
  return ptr;
}

void release(void* ptr, int index) {
  if (ptr == nullptr) return;
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  DeviceCache& d = a.device(index);
  auto it = d.live.find(ptr);
  if (it == d.live.end()) return;  // not ours: nothing to do (never free foreign memory)
  d.stats.allocated_bytes -= it->second;
  d.free_blocks.emplace(it->second, ptr);
  d.live.erase(it);
}

void empty_cache() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  for (size_t i = 0; i < a.devices.size(); ++i) a.free_cached(static_cast<int>(i), a.devices[i]);
}

AllocatorStats allocator_stats(int index) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.device(index).stats;
}

void reset_peak_allocated(int index) {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  AllocatorStats& stats = a.device(index).stats;
  stats.peak_allocated_bytes = stats.allocated_bytes;
}

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int index) {
  if (nbytes == 0) return;
  cudaStream_t s = stream(index);
  if (nbytes <= StagingRing::kMaxUpload) {
    staging_ring(index).upload(dst, src, nbytes, index, s);  // no host wait
    return;
  }
  VLMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
  synchronize(index);  // src is pageable host memory the caller may reuse
}

void copy_device_to_host(void* dst, const void* src, size_t nbytes, int index) {
  cudaStream_t s = stream(index);
  VLMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  synchronize(index);
}

void copy_device_to_device(void* dst, const void* src, size_t nbytes, int index) {
  VLMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream(index)));
}

}  // namespace vlmc::cuda
