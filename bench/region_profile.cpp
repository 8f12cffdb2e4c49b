// Where a multi-threaded CPU run spends its time, region by region: an
// LD_PRELOAD shim, built as build/bench/libvlmc_region_profile.so, that times
//   - every outermost OpenMP parallel region (libgomp's GOMP_parallel, which is
//     how GCC enters each `#pragma omp parallel`, vlmc's kernels and oneDNN's
//     alike), summed by the region's outlined function;
//   - every oneDNN primitive execution outside a region (a product the main
//     thread hands to oneDNN whole: all of them on one thread, large ones on
//     more, oneDNN's own regions then counted here);
//   - the main thread's time between two regions when it is short (< 2 ms):
//     the serial host work that a second thread cannot share.
// Run the same program on 1 and 2 threads and compare region by region:
// bench/region_profile.py does both runs and prints the table with the
// functions' names (docs/perf.md shows one, and what it found).
//
// At exit the totals go to $VLMC_REGION_PROFILE (default region_profile.txt):
//   a header line per total, then one line per region function:
//   "<seconds> <calls> <module> <offset>", offset from the module's load base,
//   for addr2line. Nothing is printed on the program's own output.
// Only regions entered while no other region runs are timed; a region started
// inside one (nested, or a product's panels) counts toward its parent.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

using RegionFn = void (*)(void*);
using GompParallel = void (*)(RegionFn, void*, unsigned, unsigned);
using PrimitiveExecute = int (*)(const void*, void*, int, const void*);

constexpr int kSlots = 4096;   // distinct region functions kept (open addressing)
constexpr double kShortGap = 2e-3;

struct Slot {
  void* fn;
  double seconds;
  long calls;
};
Slot g_slots[kSlots];
std::atomic<int> g_inside{0};  // > 0 while an outermost region (or a timed product) runs
double g_region_seconds = 0, g_product_seconds = 0, g_short_gap_seconds = 0, g_last_end = 0;
long g_regions = 0, g_products = 0;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
F next_symbol(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (p == nullptr) {
    std::fprintf(stderr, "region_profile: %s not found (is the program linked to libgomp / oneDNN?)\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(p);
}

// Called by the main thread only (outside any region): no two writers.
void account_gap(double start) {
  if (g_last_end > 0 && start - g_last_end < kShortGap) g_short_gap_seconds += start - g_last_end;
}

void add(void* fn, double seconds) {
  unsigned h = static_cast<unsigned>(reinterpret_cast<uintptr_t>(fn) >> 4) % kSlots;
  for (int probe = 0; probe < kSlots; ++probe, h = (h + 1) % kSlots) {
    if (g_slots[h].fn == nullptr || g_slots[h].fn == fn) {
      g_slots[h].fn = fn;
      g_slots[h].seconds += seconds;
      ++g_slots[h].calls;
      return;
    }
  }
}

__attribute__((destructor)) void write_totals() {
  const char* path = std::getenv("VLMC_REGION_PROFILE");
  FILE* out = std::fopen(path != nullptr && *path != '\0' ? path : "region_profile.txt", "w");
  if (out == nullptr) return;
  std::fprintf(out, "regions %ld %.6f\n", g_regions, g_region_seconds);
  std::fprintf(out, "products %ld %.6f\n", g_products, g_product_seconds);
  std::fprintf(out, "short_gaps %.6f\n", g_short_gap_seconds);
  for (const Slot& s : g_slots) {
    if (s.fn == nullptr) continue;
    Dl_info info{};
    const bool known = dladdr(s.fn, &info) != 0 && info.dli_fname != nullptr;
    const auto offset = known ? reinterpret_cast<uintptr_t>(s.fn) - reinterpret_cast<uintptr_t>(info.dli_fbase)
                              : reinterpret_cast<uintptr_t>(s.fn);
    std::fprintf(out, "%.6f %ld %s 0x%lx\n", s.seconds, s.calls, known ? info.dli_fname : "?",
                 static_cast<unsigned long>(offset));
  }
  std::fclose(out);
}

}  // namespace

extern "C" void GOMP_parallel(RegionFn fn, void* data, unsigned num_threads, unsigned flags) {
  static const GompParallel real = next_symbol<GompParallel>("GOMP_parallel");
  if (g_inside.fetch_add(1) != 0) {  // inside another region: its parent's time
    real(fn, data, num_threads, flags);
    g_inside.fetch_sub(1);
    return;
  }
  const double start = now();
  account_gap(start);
  real(fn, data, num_threads, flags);
  const double end = now();
  g_last_end = end;
  g_region_seconds += end - start;
  ++g_regions;
  add(reinterpret_cast<void*>(fn), end - start);
  g_inside.fetch_sub(1);
}

extern "C" int dnnl_primitive_execute(const void* primitive, void* stream, int nargs, const void* args) {
  static const PrimitiveExecute real = next_symbol<PrimitiveExecute>("dnnl_primitive_execute");
  if (g_inside.fetch_add(1) != 0) {
    const int status = real(primitive, stream, nargs, args);
    g_inside.fetch_sub(1);
    return status;
  }
  const double start = now();
  account_gap(start);
  const int status = real(primitive, stream, nargs, args);
  const double end = now();
  g_last_end = end;
  g_product_seconds += end - start;
  ++g_products;
  g_inside.fetch_sub(1);
  return status;
}
