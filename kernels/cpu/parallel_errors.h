// Exceptions and OpenMP: an exception that leaves an OpenMP region ends the
// process (std::terminate, exit 134) instead of reaching the caller's error
// handling. A region whose per-thread setup can throw (the std::vectors it
// allocates from sizes a file chose) runs that setup through
// ParallelErrors::run, still takes part in every worksharing loop (all
// threads must meet the same `omp for`), skips the work when its setup
// failed, and the caller rethrows the first captured exception once the
// region has ended.
#pragma once

#include <exception>
#include <mutex>

namespace vlmc::kernels::cpu {

class ParallelErrors {
 public:
  // Runs f; returns false (keeping the first exception of any thread) if it threw.
  template <typename F>
  bool run(F&& f) noexcept {
    try {
      f();
      return true;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      return false;
    }
  }
  // After the region: throws the first captured exception, if any.
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr first_;
};

}  // namespace vlmc::kernels::cpu
