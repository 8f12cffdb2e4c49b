// Seeded random streams. A Generator is a (seed, offset) pair: each draw of n
// numbers uses counters offset..offset+n of the Philox4x32-10 generator and
// advances offset, so element i of a draw never depends on the thread count,
// and is designed not to depend on the device (dropout's mask matched the CPU's
// on an H200, 2026-12-04; CUDA rand/randn untested on a GPU).
#pragma once

#include <cstdint>

namespace vlmc {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  // Reserves n Philox counters and returns the first.
  uint64_t advance(uint64_t n) { const uint64_t o = offset_; offset_ += n; return o; }

  // A generator whose draws (Tensor::randn, Tensor::uniform) leave the new
  // tensor's memory uninitialised: for building a model whose every
  // parameter a checkpoint is about to overwrite (load_pretrained checks that
  // it does), where drawing 7 billion random numbers first would take most of
  // the load time. Never use it for values anything reads.
  static Generator unfilled() {
    Generator g;
    g.fills_ = false;
    return g;
  }
  bool fills() const { return fills_; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  bool fills_ = true;
};

Generator& default_generator();  // process-wide, used when none is passed
void manual_seed(uint64_t seed);

}  // namespace vlmc
