#include "tests/support/memory_use.h"

#include <malloc.h>

#include <fstream>
#include <string>

#include "core/host_allocator.h"

namespace vlmc::test {
namespace {

// One "Key: value kB" field of /proc/self/status, in bytes; 0 if absent.
double status_field_bytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == field) {
      double kib = 0;
      in >> kib;
      return kib * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

}  // namespace

double current_rss_bytes() { return status_field_bytes("VmRSS:"); }
double peak_rss_bytes() { return status_field_bytes("VmHWM:"); }

double live_heap_bytes() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd + host::mapped_bytes()) - static_cast<double>(host::cached_bytes());
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace vlmc::test
