// Helpers for CUDA kernels that copy whole rows: the widest copy unit the
// sizes and addresses allow, and a block size that covers one row.
#pragma once

#include <cstdint>

namespace vlmc::kernels::cuda {

// Calls launch(U{}) with the widest copy unit that divides every byte count
// and address in `bits` (an OR of them).
template <typename Launch>
void with_copy_unit(uintptr_t bits, Launch&& launch) {
  if (bits % 16 == 0) {
    launch(uint4{});
  } else if (bits % 8 == 0) {
    launch(uint2{});
  } else if (bits % 4 == 0) {
    launch(uint32_t{});
  } else if (bits % 2 == 0) {
    launch(uint16_t{});
  } else {
    launch(uint8_t{});
  }
}

// Threads per row block: enough warps to cover the row once, at most 256.
inline int row_threads(int64_t units) {
  const int64_t warps = (units + 31) / 32;
  return static_cast<int>(warps >= 8 ? 256 : (warps < 1 ? 32 : warps * 32));
}

}  // namespace vlmc::kernels::cuda
