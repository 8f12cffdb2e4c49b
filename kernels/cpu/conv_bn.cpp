// CPU conv2d and conv2d + BatchNorm2d (+ GELU), channels last (see kernels/conv_bn.h).
//
// The convolution is im2col + one OpenBLAS GEMM. The patch matrix's columns
// are ordered (c, ki, kj), the order in which PyTorch flattens its weight
// [Cout, Cin, kh, kw], so the weight is used in place as the [Cout, K] GEMM
// operand and dw comes out of its GEMM already in PyTorch's layout. Writing a
// patch row scatters with stride kh*kw, but the row (K elements) stays in
// cache while it is written.
//
// Under autocast (bf16_products) the same GEMMs take their operands rounded
// to bf16: im2col writes the patches already rounded, w and dz are rounded in
// one pass each. Where the CPU multiplies bf16 natively (e.g. AMX: the
// C-Abstractor's 3x3 convs are most of its time, docs/perf.md) they are bf16
// bits for gemm_bf16; elsewhere f32 values rounded to bf16 for the f32 GEMM.
//
// The backward is two GEMMs (dw = dzᵀ·patches, dpatches = dz·w) and col2im,
// which gathers: each input pixel sums the patch entries that read it, in a
// fixed order, so no two threads write the same element.
//
// Per-channel passes (BN statistics, BN backward, bias gradients) split the
// channels into chunks of 64, one thread per chunk walking all M rows in
// order, accumulating in double: the sums do not depend on the thread count.
#include "kernels/conv_bn.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/onednn_matmul.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kChunk = 64;           // channels per thread in per-channel passes
constexpr int64_t kGrain = int64_t(1) << 15;  // below this many elements, one thread
constexpr size_t kAlign = 64;

size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Scratch layout: [patches M*K (absent for pointwise convs) | dz M*Cout (backward)].
size_t patches_bytes(const ConvShape& s, size_t elem) {
  return s.pointwise() ? 0 : aligned(static_cast<size_t>(s.rows() * s.patch()) * elem);
}

template <typename T>
T gelu_of(T u) {
  return unary_value<UnaryOp::gelu, T>(u, T(0));
}
double gelu_grad_of(double u) { return unary_grad<UnaryOp::gelu, double>(1.0, u, 0.0, 0.0); }

// cols [M, K]: row m is the window of output pixel m, column c*kh*kw + ki*kw + kj,
// each element written as convert(x) (autocast: rounded to bf16 on the way).
template <typename Out, typename T, typename Convert>
void im2col(Out* cols, const T* x, const ConvShape& s, Convert convert) {
  const int64_t M = s.rows(), K = s.patch(), khw = s.k_h * s.k_w;
#pragma omp parallel for schedule(static) if (M * K > kGrain)
  for (int64_t m = 0; m < M; ++m) {
    const int64_t wo = m % s.out_w, ho = (m / s.out_w) % s.out_h, b = m / (s.out_w * s.out_h);
    Out* row = cols + m * K;
    for (int64_t ki = 0; ki < s.k_h; ++ki) {
      const int64_t hi = ho * s.stride_h - s.pad_h + ki;
      for (int64_t kj = 0; kj < s.k_w; ++kj) {
        const int64_t wi = wo * s.stride_w - s.pad_w + kj;
        Out* dst = row + ki * s.k_w + kj;
        if (hi < 0 || hi >= s.in_h || wi < 0 || wi >= s.in_w) {
          for (int64_t c = 0; c < s.in_c; ++c) dst[c * khw] = convert(T(0));
        } else {
          const T* src = x + ((b * s.in_h + hi) * s.in_w + wi) * s.in_c;
          for (int64_t c = 0; c < s.in_c; ++c) dst[c * khw] = convert(src[c]);
        }
      }
    }
  }
}

template <typename T>
void im2col(T* cols, const T* x, const ConvShape& s) {
  im2col(cols, x, s, [](T v) { return v; });
}

// dx [B, H, W, Cin] = the sum, over the patch entries that read each input
// element, of dcols [M, K] (the adjoint of im2col), gathered per input pixel.
template <typename T>
void col2im(T* dx, const T* dcols, const ConvShape& s) {
  const int64_t K = s.patch(), khw = s.k_h * s.k_w;
  const int64_t pixels = s.batch * s.in_h * s.in_w;
#pragma omp parallel for schedule(static) if (pixels * s.in_c > kGrain)
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t wi = p % s.in_w, hi = (p / s.in_w) % s.in_h, b = p / (s.in_w * s.in_h);
    T* out = dx + p * s.in_c;
    std::fill(out, out + s.in_c, T(0));
    for (int64_t ki = 0; ki < s.k_h; ++ki) {
      const int64_t th = hi + s.pad_h - ki;  // = ho * stride_h for the output row that reads hi at ki
      if (th < 0 || th % s.stride_h != 0 || th / s.stride_h >= s.out_h) continue;
      const int64_t ho = th / s.stride_h;
      for (int64_t kj = 0; kj < s.k_w; ++kj) {
        const int64_t tw = wi + s.pad_w - kj;
        if (tw < 0 || tw % s.stride_w != 0 || tw / s.stride_w >= s.out_w) continue;
        const int64_t wo = tw / s.stride_w;
        const T* src = dcols + ((b * s.out_h + ho) * s.out_w + wo) * K + ki * s.k_w + kj;
        for (int64_t c = 0; c < s.in_c; ++c) out[c] += src[c * khw];
      }
    }
  }
}

// Runs f(c0, nc) for each chunk of nc <= kChunk channels, chunks spread over threads.
template <typename F>
void for_channel_chunks(int64_t rows, int64_t channels, F&& f) {
  const int64_t chunks = (channels + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (rows * channels > kGrain && chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t c0 = ch * kChunk;
    f(c0, std::min(kChunk, channels - c0));
  }
}

// out[c] = sum over rows of v [rows, channels], in double.
template <typename T>
void column_sums(T* out, const T* v, int64_t rows, int64_t channels) {
  for_channel_chunks(rows, channels, [&](int64_t c0, int64_t nc) {
    double acc[kChunk] = {};
    for (int64_t m = 0; m < rows; ++m) {
      const T* row = v + m * channels + c0;
      for (int64_t c = 0; c < nc; ++c) acc[c] += row[c];
    }
    for (int64_t c = 0; c < nc; ++c) out[c0 + c] = static_cast<T>(acc[c]);
  });
}

// Statistics (training) or running statistics (eval) into mean and rstd, then
// y = gelu?((z - mean) * (rstd * gamma) + beta) in one pass over z [M, N].
template <typename T>
void bn_forward(T* y, T* mean, T* rstd, T* running_mean, T* running_var, int64_t* num_batches_tracked,
                const T* z, const T* gamma, const T* beta, int64_t M, int64_t N, const BatchNormParams& p) {
  if (p.training) {
    // Two passes per channel (mean, then centred squares): no cancellation.
    for_channel_chunks(M, N, [&](int64_t c0, int64_t nc) {
      double sum[kChunk] = {}, sq[kChunk] = {};
      for (int64_t m = 0; m < M; ++m) {
        const T* row = z + m * N + c0;
        for (int64_t c = 0; c < nc; ++c) sum[c] += row[c];
      }
      for (int64_t c = 0; c < nc; ++c) sum[c] /= static_cast<double>(M);
      for (int64_t m = 0; m < M; ++m) {
        const T* row = z + m * N + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const double d = row[c] - sum[c];
          sq[c] += d * d;
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t n = c0 + c;
        const double mu = sum[c], var = sq[c] / static_cast<double>(M);
        mean[n] = static_cast<T>(mu);
        rstd[n] = static_cast<T>(1.0 / std::sqrt(var + p.eps));
        if (running_mean)
          running_mean[n] = static_cast<T>((1.0 - p.momentum) * running_mean[n] + p.momentum * mu);
        if (running_var) {
          const double unbiased = var * static_cast<double>(M) / static_cast<double>(M - 1);
          running_var[n] = static_cast<T>((1.0 - p.momentum) * running_var[n] + p.momentum * unbiased);
        }
      }
    });
    if (num_batches_tracked) ++*num_batches_tracked;
  } else {
    for (int64_t n = 0; n < N; ++n) {
      mean[n] = running_mean[n];
      rstd[n] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[n]) + p.eps));
    }
  }
#pragma omp parallel for schedule(static) if (M * N > kGrain)
  for (int64_t m = 0; m < M; ++m) {
    const T* in = z + m * N;
    T* out = y + m * N;
    for (int64_t n = 0; n < N; ++n) {
      const T scale = rstd[n] * (gamma ? gamma[n] : T(1));
      const T u = (in[n] - mean[n]) * scale + (beta ? beta[n] : T(0));
      out[n] = p.gelu ? gelu_of(u) : u;
    }
  }
}

// dgamma, dbeta and (when dz is not null) dz from dy, per channel in double.
template <typename T>
void bn_backward(T* dz, T* dgamma, T* dbeta, const T* dy, const T* z, const T* mean, const T* rstd,
                 const T* gamma, const T* beta, int64_t M, int64_t N, const BatchNormParams& p) {
  for_channel_chunks(M, N, [&](int64_t c0, int64_t nc) {
    double mu[kChunk], rs[kChunk], g[kChunk], b[kChunk], s1[kChunk] = {}, s2[kChunk] = {};
    for (int64_t c = 0; c < nc; ++c) {
      mu[c] = mean[c0 + c];
      rs[c] = rstd[c0 + c];
      g[c] = gamma ? static_cast<double>(gamma[c0 + c]) : 1.0;
      b[c] = beta ? static_cast<double>(beta[c0 + c]) : 0.0;
    }
    // Pass 1: du (kept in dz), sum(du) and sum(du * xhat).
    for (int64_t m = 0; m < M; ++m) {
      const T* zr = z + m * N + c0;
      const T* gr = dy + m * N + c0;
      for (int64_t c = 0; c < nc; ++c) {
        const double xh = (zr[c] - mu[c]) * rs[c];
        double du = gr[c];
        if (p.gelu) du *= gelu_grad_of(g[c] * xh + b[c]);
        s1[c] += du;
        s2[c] += du * xh;
        if (dz) dz[m * N + c0 + c] = static_cast<T>(du);
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      if (dbeta) dbeta[c0 + c] = static_cast<T>(s1[c]);
      if (dgamma) dgamma[c0 + c] = static_cast<T>(s2[c]);
    }
    if (!dz) return;
    // Pass 2: dz = a*du + bx*xhat + c0 (bx = c0 = 0 in eval: the statistics are constants).
    double a[kChunk], bx[kChunk], cc[kChunk];
    for (int64_t c = 0; c < nc; ++c) {
      a[c] = g[c] * rs[c];
      bx[c] = p.training ? -a[c] * s2[c] / static_cast<double>(M) : 0.0;
      cc[c] = p.training ? -a[c] * s1[c] / static_cast<double>(M) : 0.0;
    }
    for (int64_t m = 0; m < M; ++m) {
      const T* zr = z + m * N + c0;
      T* dr = dz + m * N + c0;
      for (int64_t c = 0; c < nc; ++c) {
        const double xh = (zr[c] - mu[c]) * rs[c];
        dr[c] = static_cast<T>(a[c] * dr[c] + bx[c] * xh + cc[c]);
      }
    }
  });
}

size_t f32_workspace_bytes(const ConvShape& s, size_t elem_size, ConvPass pass) {
  size_t bytes = patches_bytes(s, elem_size);
  if (pass == ConvPass::backward) bytes += aligned(static_cast<size_t>(s.rows() * s.out_c) * elem_size);
  return bytes;
}

// ---- bf16 products (autocast) --------------------------------------------------------
//
// The operands are rounded to bf16 once, into the workspace. Where this CPU
// multiplies bf16 natively (oneDNN's AMX or AVX512-BF16 kernel) they are kept
// as bf16 bits for gemm_bf16; elsewhere as f32 values rounded to bf16's
// precision, the same numbers, for the f32 GEMM: one pass, where bits would
// have to be widened back to f32 by gemm_bf16 for every product.

bool native_bf16() { return onednn::enabled(onednn::Operands::bf16); }

template <typename R>
void round_into(R* out, const float* in, int64_t n) {
#pragma omp parallel for simd if (n > kGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = rounded_to_bf16<R>(in[i]);
}

// The rounded operands, after the f32 workspace of the pass: patches [M, K]
// (x itself rounded for a pointwise conv), w [Cout, K], dz [M, Cout] (backward).
template <typename R>
struct Rounded {
  R* patches;
  R* w;
  R* dz;
};

template <typename R>
Rounded<R> rounded_operands(void* workspace, const ConvShape& s, ConvPass pass) {
  char* p = static_cast<char*>(workspace) + f32_workspace_bytes(s, sizeof(float), pass);
  Rounded<R> o{};
  o.patches = reinterpret_cast<R*>(p);
  p += aligned(static_cast<size_t>(s.rows() * s.patch()) * sizeof(R));
  o.w = reinterpret_cast<R*>(p);
  p += aligned(static_cast<size_t>(s.out_c * s.patch()) * sizeof(R));
  o.dz = pass == ConvPass::backward ? reinterpret_cast<R*>(p) : nullptr;
  return o;
}

size_t rounded_workspace_bytes(const ConvShape& s, ConvPass pass) {
  const size_t elem = native_bf16() ? sizeof(uint16_t) : sizeof(float);
  size_t bytes = aligned(static_cast<size_t>(s.rows() * s.patch()) * elem) +
                 aligned(static_cast<size_t>(s.out_c * s.patch()) * elem);
  if (pass == ConvPass::backward) bytes += aligned(static_cast<size_t>(s.rows() * s.out_c) * elem);
  return bytes;
}

// patches [M, K] rounded: im2col's, or x itself for a pointwise conv.
template <typename R>
void rounded_patches(R* patches, const float* x, const ConvShape& s) {
  if (s.pointwise()) {
    round_into(patches, x, s.rows() * s.patch());
  } else {
    im2col(patches, x, s, [](float v) { return rounded_to_bf16<R>(v); });
  }
}

// c [m, n] = op(a)·op(b) + beta·c over rounded operands, contiguous rows.
void product(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b,
             int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_bf16(ta, tb, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}
void product(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm<float>(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

// z [m, n] = a [m, k] · b [n, k]ᵀ (+ bias in every row), z written, not read.
template <typename T, typename Operand>
void product_nt(int64_t m, int64_t n, int64_t k, const Operand* a, const Operand* b, const T* bias, T* z) {
  if (bias == nullptr) {
    if constexpr (std::is_same_v<Operand, uint16_t>) {
      product(false, true, m, n, k, a, k, b, k, 0.0f, z, n);
    } else {
      gemm<T>(false, true, m, n, k, T(1), a, k, b, k, T(0), z, n);
    }
  } else if constexpr (std::is_same_v<Operand, uint16_t>) {
    gemm_bf16_bias(false, true, m, n, k, a, k, b, k, bias, z, n);
  } else {
    gemm_bias<T>(false, true, m, n, k, a, k, b, k, bias, z, n);
  }
}

template <typename R>
void forward_rounded(float* z, const float* x, const float* w, const float* bias, const ConvShape& s,
                     void* workspace) {
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  const Rounded<R> r = rounded_operands<R>(workspace, s, ConvPass::forward);
  rounded_patches(r.patches, x, s);
  round_into(r.w, w, N * K);
  product_nt(M, N, K, r.patches, r.w, bias, z);
}

template <typename R>
void backward_rounded(float* dx, float* dw, const float* dz, const float* x, const float* w, const ConvShape& s,
                      void* workspace) {
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  const Rounded<R> r = rounded_operands<R>(workspace, s, ConvPass::backward);
  round_into(r.dz, dz, M * N);
  if (dw) {
    rounded_patches(r.patches, x, s);
    product(true, false, N, K, M, r.dz, N, r.patches, K, 0.0f, dw, K);  // [N, M]·[M, K]
  }
  if (dx) {
    round_into(r.w, w, N * K);
    // dpatches [M, K] into the f32 patch region, then col2im; a pointwise conv's is dx itself.
    float* cols = static_cast<float*>(workspace);
    product(false, false, M, K, N, r.dz, N, r.w, K, 0.0f, s.pointwise() ? dx : cols, K);
    if (!s.pointwise()) col2im(dx, cols, s);
  }
}

}  // namespace

size_t workspace_bytes(const ConvShape& s, size_t elem_size, ConvPass pass, bool bf16_products) {
  return f32_workspace_bytes(s, elem_size, pass) + (bf16_products ? rounded_workspace_bytes(s, pass) : 0);
}

template <typename T>
void conv2d_forward(T* z, const T* x, const T* w, const T* bias, const ConvShape& s, void* workspace,
                    bool bf16_products) {
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_products) {
      if (native_bf16()) {
        forward_rounded<uint16_t>(z, x, w, bias, s, workspace);
      } else {
        forward_rounded<float>(z, x, w, bias, s, workspace);
      }
      return;
    }
  }
  const T* cols = x;
  if (!s.pointwise()) {
    im2col(static_cast<T*>(workspace), x, s);
    cols = static_cast<const T*>(workspace);
  }
  product_nt(M, N, K, cols, w, bias, z);
}

template <typename T>
void conv2d_backward(T* dx, T* dw, T* dbias, const T* dz, const T* x, const T* w, const ConvShape& s,
                     void* workspace, bool bf16_products) {
  const int64_t M = s.rows(), N = s.out_c, K = s.patch();
  T* cols = static_cast<T*>(workspace);
  if (dbias) column_sums(dbias, dz, M, N);  // from dz in f32
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_products) {
      if (!dw && !dx) return;
      if (native_bf16()) {
        backward_rounded<uint16_t>(dx, dw, dz, x, w, s, workspace);
      } else {
        backward_rounded<float>(dx, dw, dz, x, w, s, workspace);
      }
      return;
    }
  }
  if (dw) {
    const T* patches = x;
    if (!s.pointwise()) {
      im2col(cols, x, s);
      patches = cols;
    }
    gemm<T>(true, false, N, K, M, T(1), dz, N, patches, K, T(0), dw, K);  // [N, M]·[M, K]
  }
  if (dx) {
    if (s.pointwise()) {
      gemm<T>(false, false, M, K, N, T(1), dz, N, w, K, T(0), dx, K);
    } else {
      gemm<T>(false, false, M, K, N, T(1), dz, N, w, K, T(0), cols, K);  // dpatches [M, K]
      col2im(dx, cols, s);
    }
  }
}

template <typename T>
void conv_bn_forward(T* y, T* z, T* mean, T* rstd, T* running_mean, T* running_var,
                     int64_t* num_batches_tracked, const T* x, const T* w, const T* conv_bias,
                     const T* gamma, const T* beta, const ConvShape& s, const BatchNormParams& p,
                     void* workspace, bool bf16_products) {
  conv2d_forward(z, x, w, conv_bias, s, workspace, bf16_products);
  bn_forward(y, mean, rstd, running_mean, running_var, num_batches_tracked, z, gamma, beta, s.rows(),
             s.out_c, p);
}

template <typename T>
void conv_bn_backward(T* dx, T* dw, T* dconv_bias, T* dgamma, T* dbeta, const T* dy, const T* x,
                      const T* w, const T* z, const T* mean, const T* rstd, const T* gamma,
                      const T* beta, const ConvShape& s, const BatchNormParams& p, void* workspace,
                      bool bf16_products) {
  const bool conv_grads = dx || dw || dconv_bias;
  // dz lives after the patch matrix, which conv2d_backward uses from the start.
  T* dz = conv_grads ? reinterpret_cast<T*>(static_cast<char*>(workspace) + patches_bytes(s, sizeof(T)))
                     : nullptr;
  bn_backward(dz, dgamma, dbeta, dy, z, mean, rstd, gamma, beta, s.rows(), s.out_c, p);
  if (conv_grads) conv2d_backward(dx, dw, dconv_bias, dz, x, w, s, workspace, bf16_products);
}

#define VLMC_CONV_BN_INSTANTIATE(T)                                                                      \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, const ConvShape&, void*, bool);        \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const ConvShape&, void*, bool); \
  template void conv_bn_forward<T>(T*, T*, T*, T*, T*, T*, int64_t*, const T*, const T*, const T*,           \
                                   const T*, const T*, const ConvShape&, const BatchNormParams&, void*,      \
                                   bool);                                                                    \
  template void conv_bn_backward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*,             \
                                    const T*, const T*, const T*, const T*, const ConvShape&,               \
                                    const BatchNormParams&, void*, bool);
VLMC_CONV_BN_INSTANTIATE(float)
VLMC_CONV_BN_INSTANTIATE(double)
#undef VLMC_CONV_BN_INSTANTIATE

}  // namespace vlmc::kernels::cpu
