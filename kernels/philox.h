// Philox4x32-10 (Salmon et al., SC'11), a counter-based generator: the output
// for (key, counter) is a pure function, which makes random tensors identical
// across thread counts, and is designed to make them identical across devices
// (dropout's mask matched the CPU's on an H200, 2026-12-04; the CUDA random
// fills are untested on a GPU). Host and device.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/dtype.h"

namespace vlmc::kernels {

struct Philox4 {
  uint32_t x[4];
};

VLMC_HOST_DEVICE inline Philox4 philox4x32(uint64_t key, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0,
           c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) from 32 random bits, exact in double.
VLMC_HOST_DEVICE inline double uniform01(uint32_t bits) { return bits * (1.0 / 4294967296.0); }

// Element i of a uniform draw: counter offset + i/4, lane i%4.
VLMC_HOST_DEVICE inline double uniform_at(uint64_t seed, uint64_t offset, int64_t i) {
  const Philox4 r = philox4x32(seed, offset + static_cast<uint64_t>(i) / 4);
  return uniform01(r.x[i % 4]);
}

// Element i of a standard normal draw: Box-Muller on counter offset + i/2;
// even i take the cosine branch, odd i the sine branch of the same pair.
VLMC_HOST_DEVICE inline double normal_at(uint64_t seed, uint64_t offset, int64_t i) {
  const Philox4 r = philox4x32(seed, offset + static_cast<uint64_t>(i) / 2);
  // 64-bit uniforms from two lanes each; u1 in (0, 1] so log(u1) is finite.
  const double u1 = 1.0 - ((static_cast<uint64_t>(r.x[0]) << 21 ^ r.x[1]) & ((1ull << 53) - 1)) * 0x1p-53;
  const double u2 = ((static_cast<uint64_t>(r.x[2]) << 21 ^ r.x[3]) & ((1ull << 53) - 1)) * 0x1p-53;
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 6.283185307179586476925 * u2;
  return (i % 2 == 0) ? radius * std::cos(angle) : radius * std::sin(angle);
}

// Counters a draw of n uniforms / normals consumes.
inline uint64_t uniform_counters(int64_t n) { return static_cast<uint64_t>((n + 3) / 4); }
inline uint64_t normal_counters(int64_t n) { return static_cast<uint64_t>((n + 1) / 2); }

}  // namespace vlmc::kernels
