// CUDA fused attention (see kernels/attention.h); the CPU version is the oracle.
//
// v1 (the only version; dispatcher below): one warp per row, kWarps rows per block.
//   forward   grid (ceil(T / kWarps), Hq, B): each warp keeps its query row and output
//             accumulator in registers (lane l holds dims l, l+32, l+64, l+96; Dh <= 128);
//             key/value tiles of kTile rows stream through shared memory; scores are warp
//             shuffle reductions; online softmax (running max, rescaled sum) in the input
//             type (f32 or f64); writes out and the row logsumexp.
//   backward  two kernels, no atomics:
//             dq    grid like the forward: per query row, pass 1 recomputes P = exp(s - lse)
//                   and delta = Σ P·(dO·v) (= rowsum(dO ⊙ O)), pass 2 dq = scale·Σ P(dP - delta)·k;
//                   delta goes to a [B, Hq, T] buffer for the next kernel.
//             dk/dv grid (ceil(S / kWarps), Hkv, B): per key row, query/dO tiles of every query
//                   head in the KV head's group stream through shared memory; the warp owns
//                   its dk/dv row, so the sums run in a fixed order.
// All loads are predicated on T, S and Dh; every warp joins every __syncthreads (rows past
// the end just skip the arithmetic).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[attention]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/attention.h"
#include "kernels/cuda/check.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kDims = 4;  // registers per lane: Dh <= 32 * kDims = 128
// Rows per shared tile: two tiles of kTile x 128 elements, 32 KiB in f32 and f64 alike.
template <typename T>
constexpr int tile_rows() {
  return sizeof(T) == 4 ? 32 : 16;
}

template <typename T>
__device__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__device__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}

__device__ inline float exp_t(float x) { return expf(x); }
__device__ inline double exp_t(double x) { return exp(x); }
__device__ inline float log_t(float x) { return logf(x); }
__device__ inline double log_t(double x) { return log(x); }

// Key j visible to query i (both in range).
__device__ inline bool visible(const int64_t* mask_row, bool causal, int64_t i, int64_t j, const AttentionShape& s) {
  if (mask_row != nullptr && mask_row[j] == 0) return false;
  return !causal || j <= i + s.kv_len - s.q_len;
}

// Loads rows [r0, r0 + kTile) of two [rows, D] matrices into shared tiles (zeros past the end).
template <typename T, int kTile>
__device__ void load_tiles(T* a_s, T* b_s, const T* a, const T* b, int64_t r0, int64_t rows, int64_t D) {
  for (int64_t e = threadIdx.x; e < kTile * D; e += kThreads) {
    const int64_t r = r0 + e / D;
    const bool in = r < rows;
    a_s[e] = in ? a[r * D + e % D] : T(0);
    b_s[e] = in ? b[r * D + e % D] : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(T* out, T* lse, const T* q, const T* k,
                                                                     const T* v, const int64_t* key_mask,
                                                                     bool causal, T scale, AttentionShape s) {
  constexpr int kTile = tile_rows<T>();
  __shared__ T k_s[kTile * 128];
  __shared__ T v_s[kTile * 128];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t h = blockIdx.y, b = blockIdx.z, D = s.head_dim, S = s.kv_len;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  const bool row_ok = i < s.q_len;
  const int64_t row = (b * s.q_heads + h) * s.q_len + i;
  const int64_t kv = (b * s.kv_heads + h / (s.q_heads / s.kv_heads)) * S * D;
  const int64_t* mask_row = key_mask ? key_mask + b * S : nullptr;
  T qr[kDims], acc[kDims];
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    qr[r] = row_ok && d < D ? q[row * D + d] : T(0);
    acc[r] = T(0);
  }
  T m = neg_inf<T>(), l = T(0);
  for (int64_t j0 = 0; j0 < S; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed
    load_tiles<T, kTile>(k_s, v_s, k + kv, v + kv, j0, S, D);
    __syncthreads();
    if (!row_ok) continue;
    const int64_t n = S - j0 < kTile ? S - j0 : kTile;
    for (int64_t jj = 0; jj < n; ++jj) {
      if (!visible(mask_row, causal, i, j0 + jj, s)) continue;  // uniform across the warp
      T dot = T(0);
      for (int r = 0; r < kDims; ++r) {
        const int64_t d = lane + 32 * r;
        if (d < D) dot += qr[r] * k_s[jj * D + d];
      }
      const T sc = warp_sum(dot) * scale;
      const T m_new = sc > m ? sc : m;
      const T corr = exp_t(m - m_new);  // 0 on the first visible key (m = -inf)
      const T p = exp_t(sc - m_new);
      l = l * corr + p;
      for (int r = 0; r < kDims; ++r) {
        const int64_t d = lane + 32 * r;
        acc[r] = acc[r] * corr + (d < D ? p * v_s[jj * D + d] : T(0));
      }
      m = m_new;
    }
  }
  if (!row_ok) return;
  const bool any = l > T(0);
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < D) out[row * D + d] = any ? acc[r] / l : T(0);
  }
  if (lane == 0) lse[row] = any ? m + log_t(l) : neg_inf<T>();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(T* dq, T* delta, const T* dout, const T* q,
                                                                const T* k, const T* v, const T* lse,
                                                                const int64_t* key_mask, bool causal, T scale,
                                                                AttentionShape s) {
  constexpr int kTile = tile_rows<T>();
  __shared__ T k_s[kTile * 128];
  __shared__ T v_s[kTile * 128];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t h = blockIdx.y, b = blockIdx.z, D = s.head_dim, S = s.kv_len;
  const int64_t i = int64_t(blockIdx.x) * kWarps + warp;
  const int64_t row = (b * s.q_heads + h) * s.q_len + i;
  const T L = i < s.q_len ? lse[row] : neg_inf<T>();
  const bool row_ok = i < s.q_len && !(isinf(L) && L < 0);  // fully masked rows: P = 0
  const int64_t kv = (b * s.kv_heads + h / (s.q_heads / s.kv_heads)) * S * D;
  const int64_t* mask_row = key_mask ? key_mask + b * S : nullptr;
  T qr[kDims], gr[kDims], acc[kDims];
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    qr[r] = row_ok && d < D ? q[row * D + d] : T(0);
    gr[r] = row_ok && d < D ? dout[row * D + d] : T(0);
    acc[r] = T(0);
  }
  T dl = T(0);
  for (int pass = 0; pass < 2; ++pass) {  // pass 0: delta; pass 1: dq
    for (int64_t j0 = 0; j0 < S; j0 += kTile) {
      __syncthreads();
      load_tiles<T, kTile>(k_s, v_s, k + kv, v + kv, j0, S, D);
      __syncthreads();
      if (!row_ok) continue;
      const int64_t n = S - j0 < kTile ? S - j0 : kTile;
      for (int64_t jj = 0; jj < n; ++jj) {
        if (!visible(mask_row, causal, i, j0 + jj, s)) continue;
        T dot = T(0), gdot = T(0);
        for (int r = 0; r < kDims; ++r) {
          const int64_t d = lane + 32 * r;
          if (d < D) {
            dot += qr[r] * k_s[jj * D + d];
            gdot += gr[r] * v_s[jj * D + d];
          }
        }
        const T p = exp_t(warp_sum(dot) * scale - L);
        const T dp = warp_sum(gdot);
        if (pass == 0) {
          dl += p * dp;
        } else {
          const T ds = p * (dp - dl) * scale;
          for (int r = 0; r < kDims; ++r) {
            const int64_t d = lane + 32 * r;
            if (d < D) acc[r] += ds * k_s[jj * D + d];
          }
        }
      }
    }
  }
  if (i >= s.q_len) return;
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < D) dq[row * D + d] = acc[r];  // zeros for a fully masked row
  }
  if (lane == 0) delta[row] = row_ok ? dl : T(0);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(T* dk, T* dv, const T* dout, const T* q,
                                                                  const T* k, const T* v, const T* lse,
                                                                  const T* delta, const int64_t* key_mask,
                                                                  bool causal, T scale, AttentionShape s) {
  constexpr int kTile = tile_rows<T>();
  __shared__ T q_s[kTile * 128];
  __shared__ T g_s[kTile * 128];
  __shared__ T lse_s[kTile];
  __shared__ T delta_s[kTile];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t hk = blockIdx.y, b = blockIdx.z, D = s.head_dim, S = s.kv_len, Tq = s.q_len;
  const int64_t j = int64_t(blockIdx.x) * kWarps + warp;
  const int64_t group = s.q_heads / s.kv_heads;
  const int64_t kvrow = (b * s.kv_heads + hk) * S + j;
  // A masked key gets no gradient; the causal test is per (i, j) below.
  const bool key_ok = j < S && (key_mask == nullptr || key_mask[b * S + j] != 0);
  T kr[kDims], vr[kDims], dk_acc[kDims], dv_acc[kDims];
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    kr[r] = key_ok && d < D ? k[kvrow * D + d] : T(0);
    vr[r] = key_ok && d < D ? v[kvrow * D + d] : T(0);
    dk_acc[r] = T(0);
    dv_acc[r] = T(0);
  }
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const int64_t base = (b * s.q_heads + h) * Tq;  // row index of query 0 of head h
    for (int64_t i0 = 0; i0 < Tq; i0 += kTile) {
      __syncthreads();
      load_tiles<T, kTile>(q_s, g_s, q + base * D, dout + base * D, i0, Tq, D);
      for (int e = threadIdx.x; e < kTile; e += kThreads) {
        const bool in = i0 + e < Tq;
        lse_s[e] = in ? lse[base + i0 + e] : neg_inf<T>();
        delta_s[e] = in ? delta[base + i0 + e] : T(0);
      }
      __syncthreads();
      if (!key_ok) continue;
      const int64_t n = Tq - i0 < kTile ? Tq - i0 : kTile;
      for (int64_t ii = 0; ii < n; ++ii) {
        const int64_t i = i0 + ii;
        const T L = lse_s[ii];
        if ((causal && j > i + S - Tq) || (isinf(L) && L < 0)) continue;
        T dot = T(0), gdot = T(0);
        for (int r = 0; r < kDims; ++r) {
          const int64_t d = lane + 32 * r;
          if (d < D) {
            dot += q_s[ii * D + d] * kr[r];
            gdot += g_s[ii * D + d] * vr[r];
          }
        }
        const T p = exp_t(warp_sum(dot) * scale - L);
        const T ds = p * (warp_sum(gdot) - delta_s[ii]) * scale;
        for (int r = 0; r < kDims; ++r) {
          const int64_t d = lane + 32 * r;
          if (d < D) {
            dv_acc[r] += p * g_s[ii * D + d];
            dk_acc[r] += ds * q_s[ii * D + d];
          }
        }
      }
    }
  }
  if (j >= S) return;
  for (int r = 0; r < kDims; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < D) {
      dk[kvrow * D + d] = dk_acc[r];
      dv[kvrow * D + d] = dv_acc[r];
    }
  }
}

template <typename T>
__global__ void fill_kernel(T* p, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = value;
}

void check_shape(const AttentionShape& s) {
  if (s.head_dim > kAttentionMaxHeadDimCuda)
    throw std::runtime_error("attention (CUDA): head dim " + std::to_string(s.head_dim) + " exceeds " +
                             std::to_string(kAttentionMaxHeadDimCuda));
  if (s.q_heads > 65535 || s.batch > 65535)
    throw std::runtime_error("attention (CUDA): " + std::to_string(s.batch) + " batches x " +
                             std::to_string(s.q_heads) + " heads exceed the grid limit of 65535 each");
}

dim3 row_grid(int64_t rows, int64_t heads, int64_t batch) {
  return dim3(static_cast<unsigned>((rows + kWarps - 1) / kWarps), static_cast<unsigned>(heads),
              static_cast<unsigned>(batch));
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask, bool causal,
                       double scale, const AttentionShape& s, cudaStream_t stream) {
  check_shape(s);
  const int64_t rows = s.batch * s.q_heads * s.q_len;
  if (rows == 0) return;
  if (s.kv_len == 0) {
    // No keys: every row is fully masked, so zeros out and lse = -inf, as the
    // CPU writes. (Dh = 0 with keys runs the kernel: lse = log(visible keys).)
    if (s.head_dim > 0) VLMC_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(T) * rows * s.head_dim, stream));
    fill_kernel<T><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(lse, rows, -static_cast<T>(INFINITY));
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  attention_forward_kernel<T><<<row_grid(s.q_len, s.q_heads, s.batch), kThreads, 0, stream>>>(
      out, lse, q, k, v, key_mask, causal, static_cast<T>(scale), s);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale, const AttentionShape& s,
                        cudaStream_t stream) {
  check_shape(s);
  const int64_t q_elems = s.batch * s.q_heads * s.q_len * s.head_dim;
  const int64_t kv_elems = s.batch * s.kv_heads * s.kv_len * s.head_dim;
  if (q_elems == 0 || kv_elems == 0) {  // nothing flows: all gradients are zero
    if (q_elems > 0) VLMC_CUDA_CHECK(cudaMemsetAsync(dq, 0, sizeof(T) * q_elems, stream));
    if (kv_elems > 0) {
      VLMC_CUDA_CHECK(cudaMemsetAsync(dk, 0, sizeof(T) * kv_elems, stream));
      VLMC_CUDA_CHECK(cudaMemsetAsync(dv, 0, sizeof(T) * kv_elems, stream));
    }
    return;
  }
  attention_dq_kernel<T><<<row_grid(s.q_len, s.q_heads, s.batch), kThreads, 0, stream>>>(
      dq, delta, dout, q, k, v, lse, key_mask, causal, static_cast<T>(scale), s);
  VLMC_CUDA_CHECK_LAUNCH();
  attention_dkdv_kernel<T><<<row_grid(s.kv_len, s.kv_heads, s.batch), kThreads, 0, stream>>>(
      dk, dv, dout, q, k, v, lse, delta, key_mask, causal, static_cast<T>(scale), s);
  VLMC_CUDA_CHECK_LAUNCH();
}

#define VLMC_INSTANTIATE(T)                                                                              \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const int64_t*, bool, double,  \
                                     const AttentionShape&, cudaStream_t);                               \
  template void attention_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,   \
                                      const int64_t*, bool, double, const AttentionShape&, cudaStream_t);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cuda
