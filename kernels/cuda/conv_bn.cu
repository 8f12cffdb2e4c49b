// CUDA conv2d and conv2d + BatchNorm2d (+ GELU), channels last (see kernels/conv_bn.h).
//
// Forward versions (BatchNormParams::cuda_version; 0 picks the newest):
//   v1  implicit-GEMM convolution (below) writes z; a separate column kernel
//       reads z back and reduces per-channel partial sums Σz, Σz² over
//       blocks of 64 rows.
//   v2  the same convolution with that reduction fused into its epilogue:
//       each 64x64 output tile sums its 64 rows per channel while the values
//       are still in registers, so z is not read again for the statistics.
//   Both then run one finalize kernel (per channel: sums the row-block
//   partials in a fixed order, in double; mean, biased variance, rstd;
//   running-statistics update with the unbiased variance; counts the batch)
//   and one normalize + affine + GELU kernel. Eval skips the statistics.
//
// The implicit GEMM (v1 of the convolution itself): z[M, Cout] =
// patches[M, K] · wᵀ without ever writing patches. A block of 256 threads
// computes a 64x64 tile of z, 4x4 outputs per thread in registers, walking
// K in slices of 16: each slice of the patch tile is gathered from x (zero
// outside the padded grid) straight into shared memory, next to the matching
// slice of the weight. The weight is first repacked to [Cout, kh, kw, Cin]
// so that K runs (ki, kj, c) with c fastest: both tiles then load along
// contiguous memory (16 consecutive channels of one pixel). SIMT f32/f64 FMA,
// no tensor cores: f32 results are designed to agree with the CPU to ~1e-6 (the CUDA suite
// checks 1e-5; passed on an H200, 2026-12-04).
//
// Backward: per-channel reductions are ours (column kernels: a block covers
// 32 channels x 64 rows, threads run down the rows in double, a fixed-order
// shared-memory sum per block, partials summed by a finalize kernel: no
// atomics, deterministic):
//   pass 1: Σdu and Σdu·x̂ (du = dy·gelu'(u) with GELU) -> dβ, dγ and the
//           coefficients of dz = a·du + b·x̂ + c per channel;
//   pass 2: dz, and Σdz -> the conv bias gradient.
// The GEMM-shaped parts go to cuBLAS through kernels::cuda::gemm (TF32 off):
// dw = dzᵀ·patches with patches from an explicit im2col kernel, and dpatches
// = dz·w followed by our col2im gather (each input element sums the patch
// entries that read it; no atomics). Both use the (ki, kj, c) order, so the
// weight is repacked for dx and dw is unpacked to PyTorch's layout.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_conv_bn
//   build/tests/vlmc_cuda_tests "[conv_bn]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_conv_bn --cuda-only [--quick]   # validates each version, then times it
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/conv_bn.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/scratch.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;  // elementwise kernels

// Implicit GEMM tile: 64x64 outputs, K slices of 16, 16x16 threads x 4x4 outputs.
constexpr int kBM = 64, kBN = 64, kBK = 16, kGemmThreads = 256;
// Column kernels: 32 channels x 64 rows per block, 32x8 threads.
constexpr int kColChannels = 32, kColRowThreads = 8, kRowsPerPart = 64;
// One set of statistics partials serves both forward versions.
static_assert(kRowsPerPart == kBM, "v1 and v2 must produce the same row-block partials");

constexpr int64_t kMaxGridYZ = 65535;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Row-block partials per channel: one per 64 rows.
int64_t parts_of(const ConvShape& s) { return ceil_div(s.rows(), kRowsPerPart); }

// Sets n elements at p to zero (p null: the output is not wanted).
template <typename T>
void zero_fill(T* p, int64_t n, cudaStream_t stream) {
  if (p == nullptr || n == 0) return;
  VLMC_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(T) * static_cast<size_t>(n), stream));
}

// ---- scratch layout (pieces of the workspace, kernels/cuda/scratch.h) -------------------

template <typename T>
struct ForwardScratch {
  T* packed_w;       // [Cout, K], K in (ki, kj, c) order
  double* part_sum;  // [parts, Cout]
  double* part_sq;   // [parts, Cout]
  size_t bytes;
  ForwardScratch(const ConvShape& s, void* base) {
    Scratch sc(base);
    packed_w = sc.take<T>(s.out_c * s.patch());
    part_sum = sc.take<double>(parts_of(s) * s.out_c);
    part_sq = sc.take<double>(parts_of(s) * s.out_c);
    bytes = sc.used();
  }
};

template <typename T>
struct BackwardScratch {
  T* packed;     // [Cout, K]: the repacked weight (dx), or dw before unpacking
  T* cols;       // [M, K] patches (dw), then dpatches (dx); unused by pointwise convs
  T* dz;         // [M, Cout] (the fused backward)
  double* part0;  // [parts, Cout]
  double* part1;  // [parts, Cout]
  double* coef;   // [3, Cout]: a, b, c of dz = a*du + b*xhat + c
  size_t bytes;
  BackwardScratch(const ConvShape& s, void* base) {
    Scratch sc(base);
    packed = sc.take<T>(s.out_c * s.patch());
    cols = sc.take<T>(s.pointwise() ? 0 : s.rows() * s.patch());
    dz = sc.take<T>(s.rows() * s.out_c);
    part0 = sc.take<double>(parts_of(s) * s.out_c);
    part1 = sc.take<double>(parts_of(s) * s.out_c);
    coef = sc.take<double>(3 * s.out_c);
    bytes = sc.used();
  }
};

// ---- weight layout --------------------------------------------------------------------

// wp [Cout, kh, kw, Cin] <- w [Cout, Cin, kh, kw].
template <typename T>
__global__ void pack_weight_kernel(T* wp, const T* w, ConvShape s, int64_t total) {
  const int64_t K = s.patch();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx / K, r = idx % K;
    const int64_t c = r % s.in_c, t = r / s.in_c;
    const int64_t kj = t % s.k_w, ki = t / s.k_w;
    wp[idx] = w[((n * s.in_c + c) * s.k_h + ki) * s.k_w + kj];
  }
}

// w [Cout, Cin, kh, kw] <- wp [Cout, kh, kw, Cin].
template <typename T>
__global__ void unpack_weight_kernel(T* w, const T* wp, ConvShape s, int64_t total) {
  const int64_t K = s.patch();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx / K, r = idx % K;
    const int64_t kj = r % s.k_w, t = r / s.k_w;
    const int64_t ki = t % s.k_h, c = t / s.k_h;
    w[idx] = wp[n * K + (ki * s.k_w + kj) * s.in_c + c];
  }
}

// The weight as the GEMM wants it: a 1x1 kernel is already in (ki, kj, c) order.
template <typename T>
const T* packed_weight(T* scratch, const T* w, const ConvShape& s, cudaStream_t stream) {
  if (s.k_h == 1 && s.k_w == 1) return w;
  const int64_t total = s.out_c * s.patch();
  if (total == 0) return scratch;  // nothing to pack, nothing will be read
  pack_weight_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(scratch, w, s, total);
  VLMC_CUDA_CHECK_LAUNCH();
  return scratch;
}

// ---- implicit-GEMM convolution ----------------------------------------------------------

// z = patches(x) · wpᵀ + bias for one 64x64 tile. With part_sum set (v2), also
// part_sum/part_sq[blockIdx.x, n] = Σz, Σz² over the tile's rows, per channel.
template <typename T>
__global__ void __launch_bounds__(kGemmThreads)
    conv_gemm_kernel(T* __restrict__ z, double* __restrict__ part_sum, double* __restrict__ part_sq,
                     const T* __restrict__ x, const T* __restrict__ wp, const T* __restrict__ bias,
                     const ConvShape s) {
  // Transposed tiles ([k][m] and [k][n]) so the inner loop reads rows; +1 breaks bank conflicts.
  __shared__ T a_tile[kBK][kBM + 1];
  __shared__ T b_tile[kBK][kBN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = int64_t(blockIdx.y) * kBN;

  // Loading roles: this thread fetches k = k0 + tx of tile rows ty + 16*i
  // (output pixels for A, output channels for B). Where each pixel's window
  // starts is fixed for the whole K loop.
  int64_t img[4], top[4], left[4];
  bool row_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    row_ok[i] = m < M;
    const int64_t mm = row_ok[i] ? m : 0;
    const int64_t wo = mm % s.out_w, rest = mm / s.out_w;
    img[i] = rest / s.out_h;
    top[i] = (rest % s.out_h) * s.stride_h - s.pad_h;
    left[i] = wo * s.stride_w - s.pad_w;
  }

  T acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);

  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    const int64_t k = k0 + tx;
    const bool k_ok = k < K;
    int64_t c = 0, ki = 0, kj = 0;
    if (k_ok) {
      c = k % s.in_c;
      const int64_t t = k / s.in_c;
      kj = t % s.k_w;
      ki = t / s.k_w;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t hi = top[i] + ki, wi = left[i] + kj;
      T v = T(0);
      if (k_ok && row_ok[i] && hi >= 0 && hi < s.in_h && wi >= 0 && wi < s.in_w)
        v = x[((img[i] * s.in_h + hi) * s.in_w + wi) * s.in_c + c];
      a_tile[tx][ty + 16 * i] = v;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t n = n0 + ty + 16 * i;
      b_tile[tx][ty + 16 * i] = (k_ok && n < N) ? wp[n * K + k] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      T a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = a_tile[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = b_tile[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }

  // Epilogue: compute roles are rows ty + 16*i, channels tx + 16*j.
  double col_sum[4] = {0, 0, 0, 0}, col_sq[4] = {0, 0, 0, 0};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + tx + 16 * j;
    if (n >= N) continue;
    const T b = bias ? bias[n] : T(0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty + 16 * i;
      if (m >= M) continue;
      const T v = acc[i][j] + b;
      z[m * N + n] = v;
      col_sum[j] += static_cast<double>(v);
      col_sq[j] += static_cast<double>(v) * static_cast<double>(v);
    }
  }
  if (part_sum == nullptr) return;  // uniform across the block
  // The 16 threads of a channel column (ty = 0..15) meet in shared memory;
  // one thread per channel adds them in a fixed order.
  __shared__ double red_sum[16][kBN], red_sq[16][kBN];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    red_sum[ty][tx + 16 * j] = col_sum[j];
    red_sq[ty][tx + 16 * j] = col_sq[j];
  }
  __syncthreads();
  if (threadIdx.x < kBN) {
    const int col = threadIdx.x;
    const int64_t n = n0 + col;
    if (n < N) {
      double s1 = 0, s2 = 0;
      for (int r = 0; r < 16; ++r) {
        s1 += red_sum[r][col];
        s2 += red_sq[r][col];
      }
      part_sum[int64_t(blockIdx.x) * N + n] = s1;
      part_sq[int64_t(blockIdx.x) * N + n] = s2;
    }
  }
}

template <typename T>
void launch_conv(T* z, double* part_sum, double* part_sq, const T* x, const T* wp, const T* bias,
                 const ConvShape& s, cudaStream_t stream) {
  if (s.rows() == 0 || s.out_c == 0) return;  // a grid of 0 blocks cannot be launched
  const int64_t grid_n = ceil_div(s.out_c, kBN);
  if (grid_n > kMaxGridYZ) throw std::invalid_argument("conv2d (cuda): too many output channels for one grid");
  const dim3 grid(static_cast<unsigned>(ceil_div(s.rows(), kBM)), static_cast<unsigned>(grid_n));
  conv_gemm_kernel<T><<<grid, kGemmThreads, 0, stream>>>(z, part_sum, part_sq, x, wp, bias, s);
  VLMC_CUDA_CHECK_LAUNCH();
}

// ---- per-channel column passes ------------------------------------------------------------

enum class ColumnOp {
  stats,    // part0 = Σz, part1 = Σz²                       (v: z)
  sum,      // part0 = Σv                                     (v: any [M, N])
  bn_grad,  // part0 = Σdu, part1 = Σdu·x̂                     (v: z)
  bn_dz,    // out = dz = a·du + b·x̂ + c, part0 = Σdz         (v: z)
};

struct ColumnArgs {
  int64_t rows, channels;
  bool gelu;
};

// One block: channels [blockIdx.y*32, +32) x rows [blockIdx.x*64, +64).
// threadIdx.x picks the channel (coalesced), threadIdx.y strides the rows.
template <typename T, ColumnOp Op>
__global__ void __launch_bounds__(kColChannels* kColRowThreads)
    column_kernel(double* __restrict__ part0, double* __restrict__ part1, T* __restrict__ out,
                  const T* __restrict__ v, const T* __restrict__ dy, const T* __restrict__ mean,
                  const T* __restrict__ rstd, const T* __restrict__ gamma, const T* __restrict__ beta,
                  const double* __restrict__ coef, ColumnArgs a) {
  const int64_t N = a.channels;
  const int64_t n = int64_t(blockIdx.y) * kColChannels + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.x) * kRowsPerPart;
  const int64_t r1 = r0 + kRowsPerPart < a.rows ? r0 + kRowsPerPart : a.rows;
  double s0 = 0, s1 = 0;
  if (n < N) {
    // This channel's constants (a struct, so that ops which need only some
    // of them leave no unused variables behind).
    struct {
      double mu = 0, rs = 0, g = 1, b = 0, ca = 0, cb = 0, cc = 0;
    } ch;
    (void)ch;  // the stats and sum passes read none of it
    if (mean) ch.mu = static_cast<double>(mean[n]);
    if (rstd) ch.rs = static_cast<double>(rstd[n]);
    if (gamma) ch.g = static_cast<double>(gamma[n]);
    if (beta) ch.b = static_cast<double>(beta[n]);
    if (coef) {
      ch.ca = coef[n];
      ch.cb = coef[N + n];
      ch.cc = coef[2 * N + n];
    }
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRowThreads) {
      const int64_t i = r * N + n;
      const double value = static_cast<double>(v[i]);
      if constexpr (Op == ColumnOp::stats) {
        s0 += value;
        s1 += value * value;
      } else if constexpr (Op == ColumnOp::sum) {
        s0 += value;
      } else {
        const double xh = (value - ch.mu) * ch.rs;
        double du = static_cast<double>(dy[i]);
        if (a.gelu) du = unary_grad<UnaryOp::gelu, double>(du, ch.g * xh + ch.b, 0.0, 0.0);
        if constexpr (Op == ColumnOp::bn_grad) {
          s0 += du;
          s1 += du * xh;
        } else {
          const T d = static_cast<T>(ch.ca * du + ch.cb * xh + ch.cc);
          out[i] = d;
          s0 += static_cast<double>(d);
        }
      }
    }
  }
  __shared__ double sh0[kColRowThreads][kColChannels], sh1[kColRowThreads][kColChannels];
  sh0[threadIdx.y][threadIdx.x] = s0;
  sh1[threadIdx.y][threadIdx.x] = s1;
  __syncthreads();
  if (threadIdx.y == 0 && n < N) {
    double t0 = 0, t1 = 0;
    for (int y = 0; y < kColRowThreads; ++y) {
      t0 += sh0[y][threadIdx.x];
      t1 += sh1[y][threadIdx.x];
    }
    part0[int64_t(blockIdx.x) * N + n] = t0;
    if (part1) part1[int64_t(blockIdx.x) * N + n] = t1;
  }
}

template <typename T, ColumnOp Op>
void launch_column(double* part0, double* part1, T* out, const T* v, const T* dy, const T* mean, const T* rstd,
                   const T* gamma, const T* beta, const double* coef, const ConvShape& s, bool gelu,
                   cudaStream_t stream) {
  // No rows: no row-block partials (the finalize kernels sum none); no channels: nothing.
  if (parts_of(s) == 0 || s.out_c == 0) return;
  const int64_t grid_c = ceil_div(s.out_c, kColChannels);
  if (grid_c > kMaxGridYZ) throw std::invalid_argument("conv_bn (cuda): too many channels for one grid");
  const dim3 grid(static_cast<unsigned>(parts_of(s)), static_cast<unsigned>(grid_c));
  const dim3 block(kColChannels, kColRowThreads);
  column_kernel<T, Op><<<grid, block, 0, stream>>>(part0, part1, out, v, dy, mean, rstd, gamma, beta, coef,
                                                   ColumnArgs{s.rows(), s.out_c, gelu});
  VLMC_CUDA_CHECK_LAUNCH();
}

// Σ over the row-block partials of channel n, in a fixed order.
__device__ double sum_parts(const double* part, int64_t parts, int64_t N, int64_t n) {
  double t = 0;
  for (int64_t p = 0; p < parts; ++p) t += part[p * N + n];
  return t;
}

struct StatsArgs {
  int64_t parts, rows, channels;
  double momentum, eps;
};

// Training: batch mean, rstd, the running-statistics update and the batch count.
template <typename T>
__global__ void stats_finalize_kernel(T* mean, T* rstd, T* running_mean, T* running_var, int64_t* count,
                                      const double* part_sum, const double* part_sq, StatsArgs a) {
  const double M = static_cast<double>(a.rows);
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < a.channels;
       n += int64_t(gridDim.x) * blockDim.x) {
    const double mu = sum_parts(part_sum, a.parts, a.channels, n) / M;
    double var = sum_parts(part_sq, a.parts, a.channels, n) / M - mu * mu;
    var = var < 0 ? 0 : var;  // rounding can push a constant channel below zero; NaN stays NaN, as on the CPU
    mean[n] = static_cast<T>(mu);
    rstd[n] = static_cast<T>(1.0 / sqrt(var + a.eps));
    if (running_mean)
      running_mean[n] = static_cast<T>((1.0 - a.momentum) * static_cast<double>(running_mean[n]) + a.momentum * mu);
    if (running_var)
      running_var[n] = static_cast<T>((1.0 - a.momentum) * static_cast<double>(running_var[n]) +
                                      a.momentum * var * M / (M - 1.0));
  }
  if (count && blockIdx.x == 0 && threadIdx.x == 0) *count += 1;
}

// Eval: the running statistics stand in for the batch's.
template <typename T>
__global__ void eval_stats_kernel(T* mean, T* rstd, const T* running_mean, const T* running_var, int64_t N,
                                  double eps) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    mean[n] = running_mean[n];
    rstd[n] = static_cast<T>(1.0 / sqrt(static_cast<double>(running_var[n]) + eps));
  }
}

// dβ = Σdu, dγ = Σdu·x̂; coef (when set) = a, b, c of dz per channel.
template <typename T>
__global__ void bn_grad_finalize_kernel(T* dgamma, T* dbeta, double* coef, const double* part0,
                                        const double* part1, const T* rstd, const T* gamma, StatsArgs a,
                                        bool training) {
  const int64_t N = a.channels;
  const double M = static_cast<double>(a.rows);
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const double s1 = sum_parts(part0, a.parts, N, n), s2 = sum_parts(part1, a.parts, N, n);
    if (dbeta) dbeta[n] = static_cast<T>(s1);
    if (dgamma) dgamma[n] = static_cast<T>(s2);
    if (coef) {
      const double scale = (gamma ? static_cast<double>(gamma[n]) : 1.0) * static_cast<double>(rstd[n]);
      coef[n] = scale;
      coef[N + n] = training ? -scale * s2 / M : 0.0;
      coef[2 * N + n] = training ? -scale * s1 / M : 0.0;
    }
  }
}

template <typename T>
__global__ void sum_finalize_kernel(T* out, const double* part0, int64_t parts, int64_t N) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x)
    out[n] = static_cast<T>(sum_parts(part0, parts, N, n));
}

// y = gelu?((z - mean) * (rstd * gamma) + beta), the CPU's formula.
template <typename T>
__global__ void bn_apply_kernel(T* __restrict__ y, const T* __restrict__ z, const T* __restrict__ mean,
                                const T* __restrict__ rstd, const T* __restrict__ gamma,
                                const T* __restrict__ beta, int64_t total, int64_t N, bool gelu) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx % N;
    const T scale = rstd[n] * (gamma ? gamma[n] : T(1));
    const T u = (z[idx] - mean[n]) * scale + (beta ? beta[n] : T(0));
    y[idx] = gelu ? unary_value<UnaryOp::gelu, T>(u, T(0)) : u;
  }
}

// ---- explicit patches for the backward ---------------------------------------------------

// cols [M, K] in (ki, kj, c) order, zero outside the padded grid.
template <typename T>
__global__ void im2col_kernel(T* __restrict__ cols, const T* __restrict__ x, ConvShape s, int64_t total) {
  const int64_t K = s.patch();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = idx / K, r = idx % K;
    const int64_t c = r % s.in_c, t = r / s.in_c;
    const int64_t kj = t % s.k_w, ki = t / s.k_w;
    const int64_t wo = m % s.out_w, rest = m / s.out_w;
    const int64_t ho = rest % s.out_h, b = rest / s.out_h;
    const int64_t hi = ho * s.stride_h - s.pad_h + ki, wi = wo * s.stride_w - s.pad_w + kj;
    cols[idx] = (hi >= 0 && hi < s.in_h && wi >= 0 && wi < s.in_w)
                    ? x[((b * s.in_h + hi) * s.in_w + wi) * s.in_c + c]
                    : T(0);
  }
}

// dx [B, H, W, Cin]: each element gathers the entries of dcols [M, K] that read it.
template <typename T>
__global__ void col2im_kernel(T* __restrict__ dx, const T* __restrict__ dcols, ConvShape s, int64_t total) {
  const int64_t K = s.patch();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = idx % s.in_c, p = idx / s.in_c;
    const int64_t wi = p % s.in_w, rest = p / s.in_w;
    const int64_t hi = rest % s.in_h, b = rest / s.in_h;
    T acc = T(0);
    for (int64_t ki = 0; ki < s.k_h; ++ki) {
      const int64_t th = hi + s.pad_h - ki;
      if (th < 0 || th % s.stride_h != 0 || th / s.stride_h >= s.out_h) continue;
      const int64_t ho = th / s.stride_h;
      for (int64_t kj = 0; kj < s.k_w; ++kj) {
        const int64_t tw = wi + s.pad_w - kj;
        if (tw < 0 || tw % s.stride_w != 0 || tw / s.stride_w >= s.out_w) continue;
        const int64_t wo = tw / s.stride_w;
        acc += dcols[((b * s.out_h + ho) * s.out_w + wo) * K + (ki * s.k_w + kj) * s.in_c + c];
      }
    }
    dx[idx] = acc;
  }
}

// dw and dx from dz [M, Cout] (either may be null); M and Cout > 0.
template <typename T>
void conv_input_weight_grads(T* dx, T* dw, const T* dz, const T* x, const T* w, const ConvShape& s,
                             const BackwardScratch<T>& ws, cudaStream_t stream) {
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  if (K == 0) {  // dw is empty, and no patch reads x: dx = 0
    zero_fill(dx, s.batch * s.in_h * s.in_w * s.in_c, stream);
    return;
  }
  const bool one_by_one = s.k_h == 1 && s.k_w == 1;  // (ki, kj, c) order is PyTorch's
  if (dw) {
    const T* patches = x;
    if (!s.pointwise()) {
      im2col_kernel<T><<<grid_for(M * K, kBlock), kBlock, 0, stream>>>(ws.cols, x, s, M * K);
      VLMC_CUDA_CHECK_LAUNCH();
      patches = ws.cols;
    }
    T* target = one_by_one ? dw : ws.packed;
    gemm<T>(true, false, N, K, M, T(1), dz, N, patches, K, T(0), target, K, stream);  // [N, M]·[M, K]
    if (!one_by_one) {
      unpack_weight_kernel<T><<<grid_for(N * K, kBlock), kBlock, 0, stream>>>(dw, ws.packed, s, N * K);
      VLMC_CUDA_CHECK_LAUNCH();
    }
  }
  if (dx) {
    const T* wp = packed_weight(ws.packed, w, s, stream);  // after dw's unpack on the same stream
    if (s.pointwise()) {
      gemm<T>(false, false, M, K, N, T(1), dz, N, wp, K, T(0), dx, K, stream);
    } else {
      gemm<T>(false, false, M, K, N, T(1), dz, N, wp, K, T(0), ws.cols, K, stream);  // dpatches [M, K]
      const int64_t total = s.batch * s.in_h * s.in_w * s.in_c;  // > 0: M > 0 and K > 0
      col2im_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(dx, ws.cols, s, total);
      VLMC_CUDA_CHECK_LAUNCH();
    }
  }
}

// The backward of an empty batch (M = 0) or of no output channels: every
// gradient is a sum of nothing, zero as the CPU's sums and GEMMs give, and no
// kernel has work (a grid of 0 blocks could not even be launched).
template <typename T>
void zero_conv_grads(T* dx, T* dw, const ConvShape& s, std::initializer_list<T*> per_channel,
                     cudaStream_t stream) {
  zero_fill(dx, s.batch * s.in_h * s.in_w * s.in_c, stream);
  zero_fill(dw, s.out_c * s.patch(), stream);
  for (T* v : per_channel) zero_fill(v, s.out_c, stream);
}

int forward_version(int requested) {
  if (requested == 0) return 2;
  if (requested == 1 || requested == 2) return requested;
  throw std::invalid_argument("conv_bn_forward (cuda): no version " + std::to_string(requested) +
                              " (1: separate statistics pass, 2: statistics fused into the GEMM epilogue)");
}

}  // namespace

size_t workspace_bytes(const ConvShape& s, size_t elem_size, ConvPass pass) {
  if (pass == ConvPass::forward)
    return elem_size == sizeof(double) ? ForwardScratch<double>(s, nullptr).bytes : ForwardScratch<float>(s, nullptr).bytes;
  return elem_size == sizeof(double) ? BackwardScratch<double>(s, nullptr).bytes : BackwardScratch<float>(s, nullptr).bytes;
}

template <typename T>
void conv2d_forward(T* z, const T* x, const T* w, const T* bias, const ConvShape& s, void* workspace,
                    cudaStream_t stream) {
  if (s.rows() == 0 || s.out_c == 0) return;
  const ForwardScratch<T> ws(s, workspace);
  launch_conv<T>(z, nullptr, nullptr, x, packed_weight(ws.packed_w, w, s, stream), bias, s, stream);
}

template <typename T>
void conv2d_backward(T* dx, T* dw, T* dbias, const T* dz, const T* x, const T* w, const ConvShape& s,
                     void* workspace, cudaStream_t stream) {
  if (s.rows() == 0 || s.out_c == 0) {
    zero_conv_grads(dx, dw, s, {dbias}, stream);
    return;
  }
  const BackwardScratch<T> ws(s, workspace);
  const int64_t N = s.out_c;
  if (dbias) {
    launch_column<T, ColumnOp::sum>(ws.part0, nullptr, nullptr, dz, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    nullptr, s, false, stream);
    sum_finalize_kernel<T><<<grid_for(N, kBlock), kBlock, 0, stream>>>(dbias, ws.part0, parts_of(s), N);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  conv_input_weight_grads(dx, dw, dz, x, w, s, ws, stream);
}

template <typename T>
void conv_bn_forward(T* y, T* z, T* mean, T* rstd, T* running_mean, T* running_var, int64_t* num_batches_tracked,
                     const T* x, const T* w, const T* conv_bias, const T* gamma, const T* beta, const ConvShape& s,
                     const BatchNormParams& p, void* workspace, cudaStream_t stream) {
  const int64_t M = s.rows(), N = s.out_c;
  // An empty batch (M = 0) or no channels launches no convolution or row
  // kernel, but the statistics step runs as on the CPU: eval writes mean and
  // rstd, training the NaN statistics of an empty batch and counts the batch
  // (the op itself requires M > 1 in training).
  const int version = forward_version(p.cuda_version);
  const ForwardScratch<T> ws(s, workspace);
  const T* wp = packed_weight(ws.packed_w, w, s, stream);
  const bool fused = p.training && version == 2;
  launch_conv<T>(z, fused ? ws.part_sum : nullptr, fused ? ws.part_sq : nullptr, x, wp, conv_bias, s, stream);
  if (p.training) {
    if (!fused)
      launch_column<T, ColumnOp::stats>(ws.part_sum, ws.part_sq, nullptr, z, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, nullptr, s, false, stream);
    const StatsArgs args{parts_of(s), M, N, p.momentum, p.eps};
    stats_finalize_kernel<T><<<grid_for(N, kBlock), kBlock, 0, stream>>>(
        mean, rstd, running_mean, running_var, num_batches_tracked, ws.part_sum, ws.part_sq, args);
    VLMC_CUDA_CHECK_LAUNCH();
  } else if (N > 0) {
    eval_stats_kernel<T><<<grid_for(N, kBlock), kBlock, 0, stream>>>(mean, rstd, running_mean, running_var, N, p.eps);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  if (M * N == 0) return;
  bn_apply_kernel<T><<<grid_for(M * N, kBlock), kBlock, 0, stream>>>(y, z, mean, rstd, gamma, beta, M * N, N, p.gelu);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename T>
void conv_bn_backward(T* dx, T* dw, T* dconv_bias, T* dgamma, T* dbeta, const T* dy, const T* x, const T* w,
                      const T* z, const T* mean, const T* rstd, const T* gamma, const T* beta, const ConvShape& s,
                      const BatchNormParams& p, void* workspace, cudaStream_t stream) {
  const int64_t M = s.rows(), N = s.out_c;
  if (M == 0 || N == 0) {
    zero_conv_grads(dx, dw, s, {dconv_bias, dgamma, dbeta}, stream);
    return;
  }
  const BackwardScratch<T> ws(s, workspace);
  const bool conv_grads = dx || dw || dconv_bias;
  const StatsArgs args{parts_of(s), M, N, p.momentum, p.eps};
  // Pass 1: Σdu, Σdu·x̂ -> dβ, dγ and dz's coefficients.
  launch_column<T, ColumnOp::bn_grad>(ws.part0, ws.part1, nullptr, z, dy, mean, rstd, gamma, beta, nullptr, s,
                                      p.gelu, stream);
  bn_grad_finalize_kernel<T><<<grid_for(N, kBlock), kBlock, 0, stream>>>(
      dgamma, dbeta, conv_grads ? ws.coef : nullptr, ws.part0, ws.part1, rstd, gamma, args, p.training);
  VLMC_CUDA_CHECK_LAUNCH();
  if (!conv_grads) return;
  // Pass 2: dz and Σdz (the conv bias gradient).
  launch_column<T, ColumnOp::bn_dz>(ws.part0, nullptr, ws.dz, z, dy, mean, rstd, gamma, beta, ws.coef, s, p.gelu,
                                    stream);
  if (dconv_bias) {
    sum_finalize_kernel<T><<<grid_for(N, kBlock), kBlock, 0, stream>>>(dconv_bias, ws.part0, parts_of(s), N);
    VLMC_CUDA_CHECK_LAUNCH();
  }
  conv_input_weight_grads(dx, dw, ws.dz, x, w, s, ws, stream);
}

#define VLMC_CONV_BN_INSTANTIATE(T)                                                                          \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, const ConvShape&, void*, cudaStream_t);  \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const ConvShape&, void*,        \
                                   cudaStream_t);                                                            \
  template void conv_bn_forward<T>(T*, T*, T*, T*, T*, T*, int64_t*, const T*, const T*, const T*, const T*, \
                                   const T*, const ConvShape&, const BatchNormParams&, void*, cudaStream_t);  \
  template void conv_bn_backward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,    \
                                    const T*, const T*, const T*, const ConvShape&, const BatchNormParams&,  \
                                    void*, cudaStream_t);
VLMC_CONV_BN_INSTANTIATE(float)
VLMC_CONV_BN_INSTANTIATE(double)
#undef VLMC_CONV_BN_INSTANTIATE

}  // namespace vlmc::kernels::cuda
