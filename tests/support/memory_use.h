// This process's memory use, for tests that bound what a reader, a graph or a
// step holds: resident memory from /proc/self/status (Linux), and the live
// heap from glibc's mallinfo2.
#pragma once

namespace vlmc::test {

// VmRSS: resident bytes now.
double current_rss_bytes();
// VmHWM: peak resident bytes since the last reset_peak_rss() (or the start).
double peak_rss_bytes();
// Resets VmHWM to the current RSS (proc(5): clear_refs "5", Linux >= 4.0);
// false where the kernel or a sandbox does not allow it, and then a peak
// measured after it covers more than the code under test.
bool reset_peak_rss();

// Bytes the heap holds for live objects now: what malloc has handed out and
// the blocks vlmc's host allocator mapped itself, less the freed blocks it
// keeps for reuse.
double live_heap_bytes();

// AddressSanitizer replaces malloc (mallinfo2 does not see its heap) and
// keeps freed memory in quarantine: heap and resident-memory figures mean
// nothing under it, and tests that bound them only warn.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kMemoryMeasurable = false;
#else
inline constexpr bool kMemoryMeasurable = true;
#endif

}  // namespace vlmc::test
