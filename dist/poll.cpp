#include "dist/poll.h"

#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

namespace vlmc::dist {

bool poll_until(const std::function<bool()>& done, double timeout_s, Poll mode) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                           std::chrono::duration<double>(std::max(timeout_s, 0.0)));
  std::chrono::microseconds sleep(200);
  const std::chrono::microseconds max_sleep(5000);
  while (true) {
    if (done()) return true;
    if (clock::now() >= deadline) return false;
    if (mode == Poll::spin) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, max_sleep);
    }
  }
}

std::string timeout_message(int rank, int world_size, const std::string& what, double timeout_s) {
  std::ostringstream os;
  os << "vlmc rank " << rank << "/" << world_size << ": " << what << " did not complete within "
     << timeout_s << " s: another rank failed or hangs; stopping the job";
  return os.str();
}

}  // namespace vlmc::dist
