// CUDA fused linear + bias + GELU (see kernels/fused_linear.h): our own GEMM
// kernels with the bias + GELU epilogue applied to the accumulators before
// anything is written, so y (and z, when the backward needs it) is written
// once and nothing is read back.
//
//   y [M, N] = GELU(x [M, K] · w [N, K]ᵀ + b [N])
//
// Both operands are K-contiguous (x row-major, w in PyTorch's [out, in]
// layout), so every tile load walks K. Every load is predicated on the row,
// column and K bounds (zeros outside), so M, N and K need not be multiples of
// any tile; 16-byte vector loads are used only where K and the base pointers
// allow them (checked on the host), scalar loads otherwise.
//
// Versions (the dispatcher, linear_gelu<T>, picks v1: the numerics contract
// asks f32 on CUDA to match the CPU to 1e-5, which only the exact path does):
//
//   v1  SIMT, f32 or f64. Block tile 128x128, K step 8, 256 threads, each
//       thread an 8x8 register tile (rows ty + 16i, columns tx + 16j, so that
//       shared-memory reads are broadcasts or consecutive and the stores
//       coalesce). Tiles go global -> registers -> shared (transposed to
//       [k][row], padded against bank conflicts); the next K step's global
//       loads are issued before the current step's arithmetic. Exact f32/f64
//       FMA arithmetic: designed to match the CPU to ~1e-6 relative (the CUDA
//       suite checks 1e-5; passed on an H200, 2026-12-04).
//   v2  Tensor cores, f32 in, TF32 (wmma 16x16x8, inputs rounded to TF32's
//       10-bit mantissa), f32 accumulation. Block tile 128x128, K step 32,
//       8 warps each 64x32 (4x2 fragments). Tiles stored [row][k] in shared
//       memory (padded by 16 bytes), fragments loaded from there; the epilogue
//       goes through a 16x16 per-warp staging tile (a fragment's element
//       layout is opaque), adds the bias, applies GELU and writes y (and z).
//       Expected relative error ~1e-3 (TF32 rounding of both inputs, 2^-11).
//   v3  Tensor cores, bf16 in (wmma 16x16x16), f32 accumulation, y in bf16 or
//       f32, z in f32; the same tiling as v2. Expected relative error ~1e-2 against
//       f32 inputs (bf16 rounding of the inputs, 2^-8, and of the output).
//
// Not done: wgmma (sm_90a warpgroup MMA with TMA loads). It needs the 90a
// architecture target and descriptor-built shared-memory layouts that could
// not be verified without a GPU; v2/v3 are compiled for sm_80 and sm_90 alike
// (run on sm_90 only: an H200, 2026-12-04).
//
// Backward (ours): dz = dy ⊙ GELU'(z) and db = Σ_rows dz in one kernel: a
// block owns 32 columns, its 32x32 threads walk the rows (coalesced along a
// row) and sum in double, then combine the 32 partial sums in a fixed order:
// deterministic, no atomics. The two GEMMs of the backward (dx = dz·w,
// dw = dzᵀ·x) are cuBLAS (kernels/gemm.h), called by the op.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_fused_linear
//   build/tests/vlmc_cuda_tests "[fused_linear]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_fused_linear --cuda-only [--quick]   # validates each version, then times it
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/elementwise.h"
#include "kernels/fused_linear.h"

namespace vlmc::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

// Tiles are 128x128 in every version; a grid's y dimension (row tiles) may
// not exceed 65535, so M up to 8,388,480 rows.
constexpr int kTileM = 128;
constexpr int kTileN = 128;
constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T gelu_of(T z, GeluKind kind) {
  return kind == GeluKind::erf ? unary_value<UnaryOp::gelu, T>(z, T(0))
                               : unary_value<UnaryOp::gelu_tanh, T>(z, T(0));
}

template <typename T>
__device__ __forceinline__ T gelu_grad_of(T z, GeluKind kind) {
  return kind == GeluKind::erf ? unary_grad<UnaryOp::gelu, T>(T(1), z, T(0), T(0))
                               : unary_grad<UnaryOp::gelu_tanh, T>(T(1), z, T(0), T(0));
}

__device__ __forceinline__ void store_value(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_value(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// ---- v1: SIMT ------------------------------------------------------------------------------

constexpr int kV1K = 8;     // K step
constexpr int kV1Pad = 4;   // shared rows of 132: the transposed stores hit 32 distinct banks
constexpr int kV1Loads = kTileM * kV1K / kThreads;  // elements per thread per operand tile: 4

// Thread t's share of one [128 rows, 8 k] tile: column t % 8 of rows
// t / 8 + 32i, i < 4 (a warp reads 4 rows x 32 contiguous bytes).
constexpr int kV1RowStep = kThreads / kV1K;

// Loads this thread's share of the tile at rows [row0, row0 + 128), k [k0, k0 + 8)
// of a K-contiguous matrix with `rows` rows (zeros outside the matrix).
template <typename T>
__device__ __forceinline__ void v1_load(T (&regs)[kV1Loads], const T* __restrict__ src,
                                        int64_t row0, int64_t rows, int64_t k0, int64_t k) {
  const int r = threadIdx.x / kV1K;
  const int64_t col = k0 + threadIdx.x % kV1K;
  const int64_t base = (row0 + r) * k + col;
#pragma unroll
  for (int i = 0; i < kV1Loads; ++i) {
    const bool inside = col < k && row0 + r + i * kV1RowStep < rows;
    regs[i] = inside ? src[base + int64_t(i) * kV1RowStep * k] : T(0);
  }
}

template <typename T>
__device__ __forceinline__ void v1_store(T (*tile)[kTileM + kV1Pad], const T (&regs)[kV1Loads]) {
  const int r = threadIdx.x / kV1K, c = threadIdx.x % kV1K;
#pragma unroll
  for (int i = 0; i < kV1Loads; ++i) tile[c][r + i * kV1RowStep] = regs[i];
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    linear_gelu_v1(T* __restrict__ y, T* __restrict__ z, const T* __restrict__ x,
                   const T* __restrict__ w, const T* __restrict__ b, int64_t m, int64_t n,
                   int64_t k, GeluKind kind) {
  __shared__ T xs[kV1K][kTileM + kV1Pad];  // [k][row]
  __shared__ T ws[kV1K][kTileN + kV1Pad];  // [k][column]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kTileM, n0 = int64_t(blockIdx.x) * kTileN;

  T acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = T(0);

  T xr[kV1Loads], wr[kV1Loads];
  v1_load(xr, x, m0, m, 0, k);
  v1_load(wr, w, n0, n, 0, k);
  for (int64_t k0 = 0; k0 < k; k0 += kV1K) {
    v1_store(xs, xr);
    v1_store(ws, wr);
    __syncthreads();
    if (k0 + kV1K < k) {  // the next step's loads fly while this step computes
      v1_load(xr, x, m0, m, k0 + kV1K, k);
      v1_load(wr, w, n0, n, k0 + kV1K, k);
    }
#pragma unroll
    for (int kk = 0; kk < kV1K; ++kk) {
      T a[8], c[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 8; ++j) c[j] = ws[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fma(a[i], c[j], acc[i][j]);
    }
    __syncthreads();  // everyone is done reading before the next store
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t row = m0 + ty + 16 * i;
    if (row >= m) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t col = n0 + tx + 16 * j;
      if (col >= n) continue;
      const T v = acc[i][j] + (b != nullptr ? b[col] : T(0));
      if (z != nullptr) z[row * n + col] = v;
      y[row * n + col] = gelu_of(v, kind);
    }
  }
}

// ---- v2 / v3: tensor cores through wmma ------------------------------------------------------

constexpr int kTcK = 32;  // K step
constexpr int kWarps = kThreads / 32;
// Warps as 2 (rows) x 4 (columns), each owning 64 x 32 of the block tile.
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kFragM = kWarpM / 16, kFragN = kWarpN / 16;

// What differs between v2 and v3: the stored element, the fragment type and
// its K, the shared-memory padding (16 bytes) and the conversion on the way
// into shared memory (a 16-byte vector of elements at a time, or one element).
struct Tf32 {
  using In = float;
  using Frag = wmma::precision::tf32;
  static constexpr int kFragK = 8;
  static constexpr int kPad = 4;
  __device__ static float to_shared(float v) { return wmma::__float_to_tf32(v); }
  __device__ static uint4 to_shared(uint4 v) {
    const auto cvt = [](unsigned u) { return __float_as_uint(wmma::__float_to_tf32(__uint_as_float(u))); };
    return make_uint4(cvt(v.x), cvt(v.y), cvt(v.z), cvt(v.w));
  }
  __device__ static float to_float(float v) { return v; }
};

struct Bf16 {
  using In = __nv_bfloat16;
  using Frag = __nv_bfloat16;
  static constexpr int kFragK = 16;
  static constexpr int kPad = 8;
  __device__ static __nv_bfloat16 to_shared(__nv_bfloat16 v) { return v; }
  __device__ static uint4 to_shared(uint4 v) { return v; }
  __device__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
};

template <typename Traits>
struct TcShape {
  using In = typename Traits::In;
  static constexpr int kLd = kTcK + Traits::kPad;  // shared row length in elements (16-byte rows)
  static constexpr int kVecElems = 16 / int(sizeof(In));                   // per 16-byte load
  static constexpr int kVecLoads = kTileM * kTcK / kVecElems / kThreads;  // 4 (f32), 2 (bf16)
  static constexpr int kScalarLoads = kTileM * kTcK / kThreads;           // 16
};

// One thread's share of a [128 rows, 32 k] operand tile, held in registers
// between its global load and its shared store: 16-byte vectors (kVec) or
// single elements.
template <typename Traits, bool kVec>
struct TcRegs {
  uint4 v[TcShape<Traits>::kVecLoads];
};
template <typename Traits>
struct TcRegs<Traits, false> {
  typename Traits::In v[TcShape<Traits>::kScalarLoads];
};

// Thread t's part of a tile: a fixed column group (one 16-byte vector, or
// one element) in rows r0(t) + i * kRowStep. Vectors: kPerRow vectors span
// a row's 32 k; scalars: a warp reads one row's 32 contiguous elements.
template <typename Traits, bool kVec>
struct TcLane {
  static constexpr int kWidth = kVec ? TcShape<Traits>::kVecElems : 1;  // elements per load
  static constexpr int kPerRow = kTcK / kWidth;
  static constexpr int kRowStep = kThreads / kPerRow;
  static constexpr int kLoads = kTileM / kRowStep;
  __device__ static int row() { return threadIdx.x / kPerRow; }
  __device__ static int col() { return (threadIdx.x % kPerRow) * kWidth; }
};

// Loads the tile at rows [row0, row0 + 128), k [k0, k0 + 32) of a K-contiguous
// matrix with `rows` rows, zeros outside. kVec: K is a multiple of the vector
// width and the base pointer is 16-byte aligned, so every row starts aligned
// and a vector lies wholly inside K or wholly outside.
template <typename Traits, bool kVec>
__device__ __forceinline__ void tc_load(TcRegs<Traits, kVec>& regs,
                                        const typename Traits::In* __restrict__ src, int64_t row0,
                                        int64_t rows, int64_t k0, int64_t k) {
  using L = TcLane<Traits, kVec>;
  using In = typename Traits::In;
  static_assert(L::kLoads * L::kRowStep == kTileM && L::kLoads == sizeof(regs.v) / sizeof(regs.v[0]),
                "a thread's loads cover its rows of the tile exactly");
  const int r = L::row();
  const int64_t col = k0 + L::col();
  const int64_t base = (row0 + r) * k + col;
#pragma unroll
  for (int i = 0; i < L::kLoads; ++i) {
    const bool inside = col < k && row0 + r + i * L::kRowStep < rows;
    const int64_t at = base + int64_t(i) * L::kRowStep * k;
    if constexpr (kVec) {
      regs.v[i] = inside ? *reinterpret_cast<const uint4*>(src + at) : make_uint4(0, 0, 0, 0);
    } else {
      regs.v[i] = inside ? src[at] : In(0.0f);
    }
  }
}

// The registers of tc_load into the shared tile [128][kLd], converted. Vector
// stores are 16-byte aligned: rows are kLd * sizeof(In) = 144 or 80 bytes.
template <typename Traits, bool kVec>
__device__ __forceinline__ void tc_store(typename Traits::In* tile, const TcRegs<Traits, kVec>& regs) {
  using L = TcLane<Traits, kVec>;
  constexpr int kLd = TcShape<Traits>::kLd;
  typename Traits::In* dst = tile + L::row() * kLd + L::col();
#pragma unroll
  for (int i = 0; i < L::kLoads; ++i) {
    if constexpr (kVec) {
      *reinterpret_cast<uint4*>(dst + i * L::kRowStep * kLd) = Traits::to_shared(regs.v[i]);
    } else {
      dst[i * L::kRowStep * kLd] = Traits::to_shared(regs.v[i]);
    }
  }
}

template <typename Traits, bool kVec, typename Out>
__global__ void __launch_bounds__(kThreads)
    linear_gelu_tc(Out* __restrict__ y, float* __restrict__ z,
                   const typename Traits::In* __restrict__ x,
                   const typename Traits::In* __restrict__ w,
                   const typename Traits::In* __restrict__ b, int64_t m, int64_t n, int64_t k,
                   GeluKind kind) {
  using S = TcShape<Traits>;
  using In = typename Traits::In;
  constexpr int kFragK = Traits::kFragK;
  // wmma loads and stores need 256-bit aligned addresses: every fragment
  // origin below is a multiple of 16 rows (16 * kLd * sizeof(In) bytes, a
  // multiple of 32) plus a multiple of kFragK elements (32 bytes).
  __shared__ __align__(32) In xs[kTileM * S::kLd];  // [row][k]
  __shared__ __align__(32) In ws[kTileN * S::kLd];  // [column][k]
  __shared__ __align__(32) float staging[kWarps][16 * 16];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int64_t m0 = int64_t(blockIdx.y) * kTileM, n0 = int64_t(blockIdx.x) * kTileN;

  wmma::fragment<wmma::accumulator, 16, 16, kFragK, float> acc[kFragM][kFragN];
#pragma unroll
  for (int i = 0; i < kFragM; ++i)
#pragma unroll
    for (int j = 0; j < kFragN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  TcRegs<Traits, kVec> xr, wr;
  tc_load<Traits, kVec>(xr, x, m0, m, 0, k);
  tc_load<Traits, kVec>(wr, w, n0, n, 0, k);
  for (int64_t k0 = 0; k0 < k; k0 += kTcK) {
    tc_store<Traits, kVec>(xs, xr);
    tc_store<Traits, kVec>(ws, wr);
    __syncthreads();
    if (k0 + kTcK < k) {
      tc_load<Traits, kVec>(xr, x, m0, m, k0 + kTcK, k);
      tc_load<Traits, kVec>(wr, w, n0, n, k0 + kTcK, k);
    }
#pragma unroll
    for (int kk = 0; kk < kTcK; kk += kFragK) {
      wmma::fragment<wmma::matrix_a, 16, 16, kFragK, typename Traits::Frag, wmma::row_major>
          a[kFragM];
      wmma::fragment<wmma::matrix_b, 16, 16, kFragK, typename Traits::Frag, wmma::col_major>
          c[kFragN];
#pragma unroll
      for (int i = 0; i < kFragM; ++i)
        wmma::load_matrix_sync(a[i], xs + (warp_m * kWarpM + i * 16) * S::kLd + kk, S::kLd);
#pragma unroll
      for (int j = 0; j < kFragN; ++j)  // w's tile [column][k] is B = wᵀ stored column-major
        wmma::load_matrix_sync(c[j], ws + (warp_n * kWarpN + j * 16) * S::kLd + kk, S::kLd);
#pragma unroll
      for (int i = 0; i < kFragM; ++i)
#pragma unroll
        for (int j = 0; j < kFragN; ++j) wmma::mma_sync(acc[i][j], a[i], c[j], acc[i][j]);
    }
    __syncthreads();
  }

  // Epilogue, one fragment at a time through this warp's staging tile.
  float* stage = staging[warp];
#pragma unroll
  for (int i = 0; i < kFragM; ++i) {
#pragma unroll
    for (int j = 0; j < kFragN; ++j) {
      wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int64_t row0 = m0 + warp_m * kWarpM + i * 16;
      const int64_t col0 = n0 + warp_n * kWarpN + j * 16;
      for (int e = lane; e < 16 * 16; e += 32) {
        const int64_t row = row0 + e / 16, col = col0 + e % 16;
        if (row < m && col < n) {
          const float v = stage[e] + (b != nullptr ? Traits::to_float(b[col]) : 0.0f);
          if (z != nullptr) z[row * n + col] = v;
          store_value(y + row * n + col, gelu_of(v, kind));
        }
      }
      __syncwarp();  // the tile is read before the next fragment overwrites it
    }
  }
}

// ---- backward: dz = dy ⊙ GELU'(z), db = Σ_rows dz --------------------------------------------

constexpr int kColTile = 32, kRowLanes = 32;

template <typename T>
__global__ void __launch_bounds__(kColTile * kRowLanes)
    dgelu_bias_kernel(T* __restrict__ dz, T* __restrict__ db, const T* __restrict__ dy,
                      const T* __restrict__ z, int64_t m, int64_t n, GeluKind kind) {
  __shared__ double partial[kRowLanes][kColTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = int64_t(blockIdx.x) * kColTile + tx;
  double sum = 0;
  if (col < n) {
    for (int64_t row = ty; row < m; row += kRowLanes) {
      const int64_t idx = row * n + col;
      const T d = dy[idx] * gelu_grad_of(z[idx], kind);
      dz[idx] = d;
      sum += static_cast<double>(d);
    }
  }
  partial[ty][tx] = sum;
  __syncthreads();
  if (ty == 0 && col < n) {
    double total = 0;
    for (int r = 0; r < kRowLanes; ++r) total += partial[r][tx];
    db[col] = static_cast<T>(total);
  }
}

template <typename T>
__global__ void dgelu_kernel(T* __restrict__ dz, const T* __restrict__ dy,
                             const T* __restrict__ z, int64_t total, GeluKind kind) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    dz[i] = dy[i] * gelu_grad_of(z[i], kind);
}

// ---- launches ---------------------------------------------------------------------------------

dim3 tile_grid(int64_t m, int64_t n) {
  const int64_t row_tiles = (m + kTileM - 1) / kTileM, col_tiles = (n + kTileN - 1) / kTileN;
  if (row_tiles > 65535)
    throw std::runtime_error("linear_gelu: " + std::to_string(m) +
                             " rows exceed the CUDA kernels' limit of 65535 row tiles of 128");
  return dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
void launch_v1(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
               GeluKind kind, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  linear_gelu_v1<T><<<tile_grid(m, n), kThreads, 0, stream>>>(y, z, x, w, b, m, n, k, kind);
  VLMC_CUDA_CHECK_LAUNCH();
}

template <typename Traits, typename Out>
void launch_tc(Out* y, float* z, const typename Traits::In* x, const typename Traits::In* w,
               const typename Traits::In* b, int64_t m, int64_t n, int64_t k, GeluKind kind,
               cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  const dim3 grid = tile_grid(m, n);
  const bool vec = k % TcShape<Traits>::kVecElems == 0 && aligned16(x) && aligned16(w);
  if (vec) {
    linear_gelu_tc<Traits, true, Out><<<grid, kThreads, 0, stream>>>(y, z, x, w, b, m, n, k, kind);
    VLMC_CUDA_CHECK_LAUNCH();
  } else {
    linear_gelu_tc<Traits, false, Out><<<grid, kThreads, 0, stream>>>(y, z, x, w, b, m, n, k, kind);
    VLMC_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <typename T>
void linear_gelu(T* y, T* z, const T* x, const T* w, const T* b, int64_t m, int64_t n, int64_t k,
                 GeluKind kind, cudaStream_t stream) {
  launch_v1<T>(y, z, x, w, b, m, n, k, kind, stream);
}

void linear_gelu_f32(LinearGeluVersion version, float* y, float* z, const float* x, const float* w,
                     const float* b, int64_t m, int64_t n, int64_t k, GeluKind kind,
                     cudaStream_t stream) {
  switch (version) {
    case LinearGeluVersion::v1_simt:
      launch_v1<float>(y, z, x, w, b, m, n, k, kind, stream);
      return;
    case LinearGeluVersion::v2_tf32:
      launch_tc<Tf32, float>(y, z, x, w, b, m, n, k, kind, stream);
      return;
    case LinearGeluVersion::v3_bf16:
      break;
  }
  throw std::runtime_error("linear_gelu_f32: v3 takes bf16 inputs (use linear_gelu_bf16)");
}

void linear_gelu_bf16(void* y, DType y_dtype, float* z, const uint16_t* x, const uint16_t* w,
                      const uint16_t* b, int64_t m, int64_t n, int64_t k, GeluKind kind,
                      cudaStream_t stream) {
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x);
  const auto* wb = reinterpret_cast<const __nv_bfloat16*>(w);
  const auto* bb = reinterpret_cast<const __nv_bfloat16*>(b);
  if (y_dtype == DType::bf16) {
    launch_tc<Bf16, __nv_bfloat16>(static_cast<__nv_bfloat16*>(y), z, xb, wb, bb, m, n, k, kind,
                                   stream);
  } else if (y_dtype == DType::f32) {
    launch_tc<Bf16, float>(static_cast<float*>(y), z, xb, wb, bb, m, n, k, kind, stream);
  } else {
    throw std::runtime_error(std::string("linear_gelu_bf16: output dtype ") + dtype_name(y_dtype) +
                             " is not bf16 or f32");
  }
}

template <typename T>
void linear_gelu_backward(T* dz, T* db, const T* dy, const T* z, int64_t m, int64_t n,
                          GeluKind kind, cudaStream_t stream) {
  if (n == 0) return;
  if (db == nullptr) {
    if (m == 0) return;
    constexpr int kBlock = 256;
    dgelu_kernel<T><<<grid_for(m * n, kBlock), kBlock, 0, stream>>>(dz, dy, z, m * n, kind);
    VLMC_CUDA_CHECK_LAUNCH();
  } else {
    // m == 0 still launches (n > 0 column blocks): the bias gradient is then zero.
    const unsigned blocks = static_cast<unsigned>((n + kColTile - 1) / kColTile);
    dgelu_bias_kernel<T><<<blocks, dim3(kColTile, kRowLanes), 0, stream>>>(dz, db, dy, z, m, n, kind);
    VLMC_CUDA_CHECK_LAUNCH();
  }
}

template void linear_gelu<float>(float*, float*, const float*, const float*, const float*, int64_t,
                                 int64_t, int64_t, GeluKind, cudaStream_t);
template void linear_gelu<double>(double*, double*, const double*, const double*, const double*,
                                  int64_t, int64_t, int64_t, GeluKind, cudaStream_t);
template void linear_gelu_backward<float>(float*, float*, const float*, const float*, int64_t,
                                          int64_t, GeluKind, cudaStream_t);
template void linear_gelu_backward<double>(double*, double*, const double*, const double*, int64_t,
                                           int64_t, GeluKind, cudaStream_t);

}  // namespace vlmc::kernels::cuda
