// Carving a caller's workspace into aligned pieces (host code). Kernels that
// need scratch take one buffer from the op (allocated through the caching
// allocator, so its peak figure counts it) and split it with this; the same
// code with a null base measures the bytes to ask for.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vlmc::kernels::cuda {

class Scratch {
 public:
  static constexpr size_t kAlign = 256;  // every piece starts aligned for any element type or vector load

  explicit Scratch(void* base) : base_(static_cast<char*>(base)) {}

  // The next count elements of U (null when only measuring).
  template <typename U>
  U* take(int64_t count) {
    U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += (static_cast<size_t>(count) * sizeof(U) + kAlign - 1) / kAlign * kAlign;
    return p;
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace vlmc::kernels::cuda
