// The host allocator: alignment, reuse of large blocks, the cache limit.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <fstream>

#include "core/host_allocator.h"
#include "core/tensor.h"

using namespace vlmc;

TEST_CASE("host blocks are 64-byte aligned at every size", "[allocator]") {
  for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(4096), size_t(1) << 20, (size_t(3) << 20) + 5}) {
    void* p = host::allocate(n);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    host::release(p, n);
  }
}

TEST_CASE("large freed host blocks are reused and can be emptied", "[allocator]") {
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the cache is off by design (use-after-free must be caught).
  CHECK(host::cached_bytes() == 0);
#else
  host::empty_cache();
  const size_t n = size_t(8) << 20;
  void* first = host::allocate(n);
  host::release(first, n);
  CHECK(host::cached_bytes() >= n);
  void* second = host::allocate(n - 100);  // rounds to the same block size
  CHECK(second == first);
  host::release(second, n - 100);
  host::empty_cache();
  CHECK(host::cached_bytes() == 0);
#endif
}

TEST_CASE("tensors built on reused host memory hold their own values", "[allocator]") {
  {
    Tensor a = Tensor::full({1 << 20}, 3.0);
    (void)a;
  }
  Tensor b = Tensor::zeros({1 << 20});  // may reuse a's block: must still be zeros
  CHECK(b.to_vector<float>() == std::vector<float>(1 << 20, 0.0f));
}

TEST_CASE("the allocator counts live tensor bytes and their high-water mark, cached blocks excluded", "[allocator]") {
  const size_t before = host::live_bytes();
  host::reset_peak_live();
  CHECK(host::peak_live_bytes() == before);
  {
    Tensor a = Tensor::zeros({1 << 20});  // 4 MiB, a multiple of the rounding granule
    CHECK(host::live_bytes() == before + (size_t(4) << 20));
    {
      Tensor b = Tensor::zeros({1 << 18});  // 1 MiB
      CHECK(host::live_bytes() == before + (size_t(5) << 20));
    }
    CHECK(host::live_bytes() == before + (size_t(4) << 20));  // b's block went to the cache: not live
  }
  CHECK(host::live_bytes() == before);
  CHECK(host::peak_live_bytes() == before + (size_t(5) << 20));
  host::reset_peak_live();
  CHECK(host::peak_live_bytes() == before);
}

TEST_CASE("a cached block serves a smaller request whole or split, and the cache stays under the high-water mark",
          "[allocator]") {
#if defined(__SANITIZE_ADDRESS__)
  CHECK(host::cached_bytes() == 0);  // nothing is cached under AddressSanitizer
#else
  const size_t mib = size_t(1) << 20;
  host::empty_cache();  // the high-water mark starts at the live tensors
  const size_t live = host::live_bytes();
  char* block = static_cast<char*>(host::allocate(8 * mib));
  host::release(block, 8 * mib);
  CHECK(host::cached_bytes() == 8 * mib);

  SECTION("a near fit takes the whole block") {
    void* p = host::allocate(7 * mib + mib / 2);  // 1/16 of the block left over: taken whole
    CHECK(p == block);
    CHECK(host::live_bytes() == live + 8 * mib);
    CHECK(host::cached_bytes() == 0);
    host::release(p, 7 * mib + mib / 2);
    CHECK(host::cached_bytes() == 8 * mib);  // released at the block's own size
  }
  SECTION("a smaller request splits the block, and the tail serves the next") {
    void* head = host::allocate(mib);
    CHECK(head == block);
    CHECK(host::cached_bytes() == 7 * mib);
    void* tail = host::allocate(7 * mib);
    CHECK(tail == block + mib);
    CHECK(host::live_bytes() == live + 8 * mib);
    host::release(head, mib);
    host::release(tail, 7 * mib);
    CHECK(host::cached_bytes() == 8 * mib);
  }
  SECTION("the pieces of a split block merge back when freed, in either order") {
    const bool head_first = GENERATE(true, false);
    void* head = host::allocate(mib);
    void* middle = host::allocate(3 * mib);
    CHECK(middle == block + mib);
    CHECK(host::cached_bytes() == 4 * mib);  // the tail, block + 4 MiB
    host::release(head_first ? head : middle, head_first ? mib : 3 * mib);
    host::release(head_first ? middle : head, head_first ? 3 * mib : mib);
    CHECK(host::cached_bytes() == 8 * mib);
    // One block again: the whole request is served from it, with no new mapping.
    const size_t mapped = host::mapped_bytes();
    void* whole = host::allocate(8 * mib);
    CHECK(whole == block);
    CHECK(host::mapped_bytes() == mapped);
    CHECK(host::cached_bytes() == 0);
    host::release(whole, 8 * mib);
    CHECK(host::cached_bytes() == 8 * mib);
  }
  SECTION("a request no cached block holds evicts what would take the total past the high-water mark") {
    host::empty_cache();
    // Mapped, never touched: these sizes cost address space only. The cache may
    // exceed the mark by 64 MiB (host_allocator.cpp), so the blocks are larger.
    void* first = host::allocate(80 * mib);
    host::release(first, 80 * mib);
    CHECK(host::cached_bytes() == 80 * mib);
    const size_t mapped = host::mapped_bytes();
    void* big = host::allocate(160 * mib);  // live + 160 MiB is the new mark: 80 cached + 160 live exceed it + 64
    CHECK(host::cached_bytes() == 0);
    CHECK(host::mapped_bytes() == mapped - 80 * mib + 160 * mib);
    host::release(big, 160 * mib);
    CHECK(host::cached_bytes() == 160 * mib);
  }
  host::empty_cache();
  CHECK(host::cached_bytes() == 0);
  CHECK(host::live_bytes() == live);
#endif
}

TEST_CASE("a mapping refused by the system is retried once the cached blocks are given back", "[allocator]") {
#if defined(__SANITIZE_ADDRESS__)
  SUCCEED("no cache under AddressSanitizer");
#else
  // In a child process, whose address space is then capped (RLIMIT_AS) at 40 MiB
  // above what it has mapped, two freed 32 MiB blocks stay cached (they are
  // within the high-water mark; merged into one when they were mapped side by
  // side), and a 96 MiB request fits no cached block: the first mmap fails, and
  // succeeds once the 64 MiB of cached blocks are unmapped.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int status = 0;
    try {
      host::empty_cache();
      const size_t block = size_t(32) << 20;
      void* held[2];
      for (void*& p : held) p = host::allocate(block);
      for (void* p : held) host::release(p, block);
      if (host::cached_bytes() < 2 * block) _exit(2);
      long pages = 0;
      std::ifstream("/proc/self/statm") >> pages;
      const rlim_t mapped = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE));
      const rlimit cap{mapped + (rlim_t(40) << 20), mapped + (rlim_t(40) << 20)};
      if (setrlimit(RLIMIT_AS, &cap) != 0) _exit(3);
      void* big = host::allocate(size_t(96) << 20);
      status = big != nullptr && host::cached_bytes() == 0 ? 0 : 4;
      host::release(big, size_t(96) << 20);
    } catch (...) {
      status = 5;  // out of memory: the cached blocks were not given back
    }
    _exit(status);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
#endif
}

namespace {

// The VmFlags line of the mapping that holds p, from /proc/self/smaps ("" if none).
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto address = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = address >= start && address < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

}  // namespace

TEST_CASE("large host blocks ask for transparent huge pages, small ones do not", "[allocator]") {
#if defined(__SANITIZE_ADDRESS__)
  SUCCEED("malloc holds every block under AddressSanitizer");
#else
  const char* env = std::getenv("VLMC_HUGE_PAGES");
  if (env != nullptr && std::string(env) == "off") {
    WARN("VLMC_HUGE_PAGES=off in the environment: nothing to check");
    return;
  }
  host::empty_cache();
  const size_t big = size_t(16) << 20, small = size_t(1) << 20;
  void* p = host::allocate(big);
  void* q = host::allocate(small);
  const std::string big_flags = vm_flags_of(p), small_flags = vm_flags_of(q);
  host::release(p, big);
  host::release(q, small);
  host::empty_cache();
  INFO("16 MiB block: " << big_flags << "; 1 MiB block: " << small_flags);
  REQUIRE(!big_flags.empty());
  CHECK(big_flags.find(" hg") != std::string::npos);  // madvise(MADV_HUGEPAGE)
  CHECK(small_flags.find(" hg") == std::string::npos);
#endif
}

// The build links gperftools' tcmalloc into every executable where it is
// installed (CMake's VLMC_MALLOC, CMakeLists.txt): nothing calls it by name, so
// a linker that dropped it (--as-needed) or put it after the C library would
// leave glibc's malloc in place without a word. This suite links the same way.
TEST_CASE("malloc is the one the build chose (VLMC_MALLOC)", "[allocator]") {
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload != nullptr && *preload != '\0') {
    WARN("LD_PRELOAD is set (" << preload << "): malloc is whatever it preloads");
    return;
  }
  void* (*resolved)(size_t) = &std::malloc;
  Dl_info info{};
  REQUIRE(dladdr(reinterpret_cast<void*>(resolved), &info) != 0);
  REQUIRE(info.dli_fname != nullptr);
  const std::string library = info.dli_fname;
  INFO("malloc resolves into " << library);
#if defined(__SANITIZE_ADDRESS__)
  CHECK(library.find("libc.so") == std::string::npos);  // the sanitizer's own
#elif VLMC_MALLOC_TCMALLOC
  CHECK(library.find("tcmalloc") != std::string::npos);
#else
  CHECK(library.find("libc.so") != std::string::npos);
#endif
  // Memory from it is usable across sizes from every size class up to a large block.
  for (size_t n : {size_t(2), size_t(24), size_t(4000), size_t(300000), size_t(5) << 20}) {
    auto* p = static_cast<unsigned char*>(std::malloc(n));
    REQUIRE(p != nullptr);
    p[0] = 1;
    p[n - 1] = 2;
    CHECK(p[0] + p[n - 1] == 3);
    std::free(p);
  }
}
