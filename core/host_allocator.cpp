#include "core/host_allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "core/error.h"

namespace vlmc::host {
namespace {

constexpr size_t kAlign = 64;                 // a cache line, and enough for any SIMD load
constexpr size_t kCacheMin = size_t(1) << 18;  // smaller blocks come from malloc's own free lists
constexpr size_t kGranule = size_t(1) << 16;   // large sizes rounded so similar shapes share blocks

size_t rounded(size_t nbytes) {
  const size_t n = nbytes == 0 ? 1 : nbytes;
  if (n < kCacheMin) return (n + kAlign - 1) / kAlign * kAlign;
  return (n + kGranule - 1) / kGranule * kGranule;
}

size_t cache_limit() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;  // under AddressSanitizer every block goes back, so use-after-free is caught
#endif
  static const size_t limit = [] {
    const char* env = std::getenv("VLMC_HOST_CACHE_MB");
    if (!env) return size_t(1024) << 20;
    char* end = nullptr;
    const long mb = std::strtol(env, &end, 10);
    VLMC_CHECK(end != env && *end == '\0' && mb >= 0, "VLMC_HOST_CACHE_MB: expected a non-negative integer, got '",
               env, "'");
    return static_cast<size_t>(mb) << 20;
  }();
  return limit;
}

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> blocks;  // exact rounded size -> block
  size_t bytes = 0;
};

Cache& cache() {
  static Cache* instance = new Cache();  // never destroyed: tensors may outlive static teardown
  return *instance;
}

}  // namespace

void* allocate(size_t nbytes) {
  // rounded() must not wrap: no host allocation comes near this anyway.
  VLMC_CHECK(nbytes <= (size_t(1) << 62), "cpu: cannot allocate ", nbytes, " bytes");
  const size_t size = rounded(nbytes);
  if (size >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.blocks.find(size);
    if (it != c.blocks.end()) {
      void* ptr = it->second;
      c.blocks.erase(it);
      c.bytes -= size;
      return ptr;
    }
  }
  void* ptr = std::aligned_alloc(kAlign, size);
  VLMC_CHECK(ptr != nullptr, "cpu: out of memory allocating ", nbytes, " bytes (",
             static_cast<double>(nbytes) / double(1 << 30), " GiB)");
  return ptr;
}

void release(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const size_t size = rounded(nbytes);
  if (size >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.bytes + size <= cache_limit()) {
      c.blocks.emplace(size, ptr);
      c.bytes += size;
      return;
    }
  }
  std::free(ptr);
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto& [size, ptr] : c.blocks) std::free(ptr);
  c.blocks.clear();
  c.bytes = 0;
}

size_t cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.bytes;
}

}  // namespace vlmc::host
