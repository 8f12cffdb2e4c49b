// This process's resident memory, from /proc/self/status (Linux), for tests
// that bound what a reader or a step holds at its peak.
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

// AddressSanitizer replaces malloc and keeps freed memory in quarantine:
// resident-memory figures mean nothing under it.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kRssMeaningful = false;
#else
inline constexpr bool kRssMeaningful = true;
#endif

}  // namespace vlmc::test
