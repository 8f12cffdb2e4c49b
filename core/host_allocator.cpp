#include "core/host_allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/error.h"

namespace vlmc::host {
namespace {

constexpr size_t kAlign = 64;                 // a cache line, and enough for any SIMD load
constexpr size_t kCacheMin = size_t(1) << 18;  // smaller blocks come from malloc's own free lists
constexpr size_t kGranule = size_t(1) << 16;   // large sizes rounded so similar shapes share blocks
// A batch's sequence length moves a few positions from step to step, and with
// it the size of every activation, so exact sizes would rarely meet again: a
// request takes the smallest cached block that holds it, whole when at most
// 1/8 of the block would be left over, else split (the tail stays cached).
constexpr size_t kFitSlack = 8;
// The cache may hold this much beyond the high-water mark: a stage whose
// models and data sit near its peak (the main job: 130 MB resident, a step of
// a few MB) would otherwise have no room to keep a step's blocks, and would
// unmap and map them again every step.
constexpr size_t kCacheSlack = size_t(64) << 20;

// Large blocks are mapped and unmapped here rather than malloc'd. glibc's
// malloc raises its mmap threshold (to 32 MiB) after the first large free,
// and from then on keeps freed blocks below it in its arenas, where they
// fragment: a TinyLlama stage-1 step at batch 2 peaked at 5.1 GB resident for
// 4.36 GB of live tensors (docs/plan.md), beyond what any plan could predict.
// Here the freed blocks are kept for reuse only while the tensors and the
// cache together stay within the tensors' own high-water mark (plus
// kCacheSlack), so the resident set of large blocks stays within 64 MiB of
// the peak of live tensors, and a step reuses the previous step's blocks
// instead of faulting in (and zeroing) fresh pages. Under AddressSanitizer
// malloc keeps them and nothing is cached, so out-of-bounds and
// use-after-free are still caught.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMapLargeBlocks = false;
#else
constexpr bool kMapLargeBlocks = true;
#endif

// Blocks of at least this many bytes ask for transparent huge pages
// (madvise(MADV_HUGEPAGE); under the kernel's usual THP mode, `madvise`, nothing
// else gets them). A product's operands and output then take a 2 MiB TLB entry
// where they took 512: oneDNN's AMX kernel reads a transposed operand and
// writes 16 KiB rows of an f32 output, page after page. The seed's MLP
// connector in bf16 ran 1.063x faster with them (8 of 8 alternating pairs,
// 1.043-1.075; docs/perf.md, sixteenth session). VLMC_HUGE_PAGES=off leaves
// the pages to the kernel's default.
constexpr size_t kHugeMin = size_t(4) << 20;

bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* env = std::getenv("VLMC_HUGE_PAGES");
    if (env == nullptr || *env == '\0' || std::string(env) == "on") return true;
    VLMC_CHECK(std::string(env) == "off", "VLMC_HUGE_PAGES: expected 'on' or 'off', got '", env, "'");
    return false;
  }();
  return wanted;
}

size_t rounded(size_t nbytes) {
  const size_t n = nbytes == 0 ? 1 : nbytes;
  if (n < kCacheMin) return (n + kAlign - 1) / kAlign * kAlign;
  return (n + kGranule - 1) / kGranule * kGranule;
}

// VLMC_HOST_CACHE_MB caps the cache further (0 turns it off); unset, only
// the high-water rule bounds it.
size_t cache_cap() {
#if defined(__SANITIZE_ADDRESS__)
  return 0;  // under AddressSanitizer every block goes back, so use-after-free is caught
#endif
  static const size_t cap = [] {
    const char* env = std::getenv("VLMC_HOST_CACHE_MB");
    if (!env) return ~size_t(0);
    char* end = nullptr;
    const long mb = std::strtol(env, &end, 10);
    VLMC_CHECK(end != env && *end == '\0' && mb >= 0, "VLMC_HOST_CACHE_MB: expected a non-negative integer, got '",
               env, "'");
    return static_cast<size_t>(mb) << 20;
  }();
  return cap;
}

// The large blocks, under one lock: those handed out (by address, with the
// size they really have, which may exceed the request they served) and the
// freed ones kept for reuse (by size, for best fit, and by address, to merge
// neighbours).
struct Large {
  std::mutex mutex;
  std::unordered_map<void*, size_t> live;
  std::multimap<size_t, void*> cached;
  std::map<char*, size_t> cached_at;  // the same blocks as `cached`, by address
  size_t cached_bytes = 0;
  size_t live_bytes = 0;
  size_t high_water = 0;  // the most live_bytes has been: the cache never takes the total kCacheSlack past it
};

Large& large() {
  static Large* instance = new Large();  // never destroyed: tensors may outlive static teardown
  return *instance;
}

std::atomic<size_t> g_live{0};  // every tensor block, small and large
std::atomic<size_t> g_peak_live{0};

void count_allocated(size_t size) {
  const size_t live = g_live.fetch_add(size, std::memory_order_relaxed) + size;
  size_t peak = g_peak_live.load(std::memory_order_relaxed);
  while (live > peak && !g_peak_live.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}

void* checked(void* ptr, size_t nbytes) {
  VLMC_CHECK(ptr != nullptr, "cpu: out of memory allocating ", nbytes, " bytes (",
             static_cast<double>(nbytes) / double(1 << 30), " GiB)");
  return ptr;
}

void* map_block(size_t size) {
  if (!kMapLargeBlocks) return std::aligned_alloc(kAlign, size);
  void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  // page-aligned
  if (ptr == MAP_FAILED) return nullptr;
  if (size >= kHugeMin && huge_pages_wanted()) madvise(ptr, size, MADV_HUGEPAGE);  // refused or ignored: as good
  return ptr;
}

void unmap_block(void* ptr, size_t size) {
  if (!kMapLargeBlocks) return std::free(ptr);
  munmap(ptr, size);
}

// Unmaps every cached block. Called with the lock held.
void unmap_cached(Large& l) {
  for (auto& [size, ptr] : l.cached) unmap_block(ptr, size);
  l.cached.clear();
  l.cached_at.clear();
  l.cached_bytes = 0;
}

// The cache's two indexes change together. Called with the lock held.
void add_cached(Large& l, char* ptr, size_t size) {
  l.cached.emplace(size, ptr);
  l.cached_at.emplace(ptr, size);
  l.cached_bytes += size;
}

void remove_cached(Large& l, char* ptr, size_t size) {
  auto [first, last] = l.cached.equal_range(size);
  for (auto it = first; it != last; ++it) {
    if (it->second == ptr) {
      l.cached.erase(it);
      break;
    }
  }
  l.cached_at.erase(ptr);
  l.cached_bytes -= size;
}

// Caches a freed block, merged with the cached blocks right before and after
// it in the address space. A split leaves a block's head and tail apart, and
// the sizes of a step's tensors move with its sequence length: without the
// merge, the fragments of last step's large blocks could not serve this
// step's, and each step mapped (and the kernel zeroed) fresh pages while
// evicting the fragments: 80 huge-page faults a step of a TinyLlama LLaVA
// stage 1 (docs/perf.md, seventeenth session). Two anonymous mappings that
// touch are one range to use and to unmap, whichever mmap made each.
// Called with the lock held.
void cache_merged(Large& l, char* ptr, size_t size) {
  auto next = l.cached_at.find(ptr + size);
  if (next != l.cached_at.end()) {
    const size_t next_size = next->second;
    remove_cached(l, ptr + size, next_size);
    size += next_size;
  }
  auto after = l.cached_at.lower_bound(ptr);
  if (after != l.cached_at.begin()) {
    auto before = std::prev(after);
    if (before->first + before->second == ptr) {
      char* start = before->first;
      const size_t before_size = before->second;
      remove_cached(l, start, before_size);
      ptr = start;
      size += before_size;
    }
  }
  add_cached(l, ptr, size);
}

// Unmaps cached blocks, the smallest first (the tails splits leave, the least
// likely to serve a request), until `budget` bytes fit beside live + cached
// under the high-water mark and the slack. Called with the lock held.
void evict_for(Large& l, size_t budget) {
  while (!l.cached.empty() &&
         l.live_bytes + l.cached_bytes + budget > std::max(l.high_water, l.live_bytes + budget) + kCacheSlack) {
    const auto [size, ptr] = *l.cached.begin();
    remove_cached(l, static_cast<char*>(ptr), size);
    unmap_block(ptr, size);
  }
}

void* allocate_large(size_t size, size_t nbytes) {
  Large& l = large();
  std::lock_guard<std::mutex> lock(l.mutex);
  void* ptr = nullptr;
  size_t got = size;
  auto fit = l.cached.lower_bound(size);  // the smallest cached block that holds the request
  if (fit != l.cached.end()) {
    ptr = fit->second;
    const size_t block = fit->first;
    remove_cached(l, static_cast<char*>(ptr), block);
    const size_t rest = block - size;
    if (rest <= block / kFitSlack || !kMapLargeBlocks) {
      got = block;  // a near fit (or a malloc'd block, which cannot be split): taken whole
    } else if (rest >= kCacheMin) {
      // Split: the tail is a block of its own from now on, cached for the next
      // request, and merged back when the head returns while it is still cached.
      add_cached(l, static_cast<char*>(ptr) + size, rest);
    } else {
      unmap_block(static_cast<char*>(ptr) + size, rest);
    }
  } else {
    evict_for(l, size);
    ptr = map_block(size);
    if (ptr == nullptr && !l.cached.empty()) {
      // The cached blocks may be what stands in the way (an address-space or
      // overcommit limit): all of them go back, and the request is tried once more.
      unmap_cached(l);
      ptr = map_block(size);
    }
    checked(ptr, nbytes);
  }
  l.live.emplace(ptr, got);
  l.live_bytes += got;
  l.high_water = std::max(l.high_water, l.live_bytes);
  count_allocated(got);
  return ptr;
}

void release_large(void* ptr) {
  Large& l = large();
  std::lock_guard<std::mutex> lock(l.mutex);
  auto it = l.live.find(ptr);
  VLMC_CHECK(it != l.live.end(), "cpu: releasing a block the host allocator did not hand out");
  const size_t size = it->second;
  l.live.erase(it);
  l.live_bytes -= size;
  g_live.fetch_sub(size, std::memory_order_relaxed);
  // live + cached is unchanged by caching the block, so it stays within the
  // high-water mark and the slack; only the user's cap can refuse it.
  if (l.cached_bytes + size <= cache_cap()) {
    if (kMapLargeBlocks) {
      cache_merged(l, static_cast<char*>(ptr), size);
    } else {
      add_cached(l, static_cast<char*>(ptr), size);  // malloc'd blocks: never merged
    }
  } else {
    unmap_block(ptr, size);
  }
}

}  // namespace

void* allocate(size_t nbytes) {
  // rounded() must not wrap: no host allocation comes near this anyway.
  VLMC_CHECK(nbytes <= (size_t(1) << 62), "cpu: cannot allocate ", nbytes, " bytes");
  const size_t size = rounded(nbytes);
  if (size >= kCacheMin) return allocate_large(size, nbytes);
  void* ptr = checked(std::aligned_alloc(kAlign, size), nbytes);
  count_allocated(size);
  return ptr;
}

void release(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const size_t size = rounded(nbytes);
  if (size >= kCacheMin) return release_large(ptr);
  g_live.fetch_sub(size, std::memory_order_relaxed);
  std::free(ptr);
}

void empty_cache() {
  Large& l = large();
  std::lock_guard<std::mutex> lock(l.mutex);
  unmap_cached(l);
  l.high_water = l.live_bytes;
}

size_t cached_bytes() {
  Large& l = large();
  std::lock_guard<std::mutex> lock(l.mutex);
  return l.cached_bytes;
}

size_t live_bytes() { return g_live.load(std::memory_order_relaxed); }

size_t peak_live_bytes() { return g_peak_live.load(std::memory_order_relaxed); }

void reset_peak_live() { g_peak_live.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

size_t mapped_bytes() {
  if (!kMapLargeBlocks) return 0;
  Large& l = large();
  std::lock_guard<std::mutex> lock(l.mutex);
  return l.live_bytes + l.cached_bytes;  // every mapped block is handed out or cached
}

}  // namespace vlmc::host
