// linear_gelu: y = GELU(x·Wᵀ + b) in one kernel (kernels/fused_linear.h), and
// its backward.
//
// The pre-activation z = x·Wᵀ + b is kept (written by the forward's epilogue
// next to y, only when a gradient will be needed) rather than recomputed: the
// backward needs GELU'(z), and recomputing z would cost a third GEMM of the
// same size as the forward, 50 % more backward work, to save one [M, N]
// buffer, the same buffer the unfused linear → gelu pair keeps as gelu's input.
//
// Backward: dz = dy ⊙ GELU'(z) with db = Σ_rows dz fused into the same pass
// (our kernel, CPU and CUDA), then dx = dz·W and dW = dzᵀ·x as two plain GEMMs
// (kernels/gemm.h: OpenBLAS on the CPU, cuBLAS on CUDA). Only the gradients
// the GradMask asks for are computed.
//
// Under autocast (core/autocast.h), read once in the forward: x, W and b are
// rounded to bf16 and y, z and every gradient stay f32. CUDA runs the forward
// as cuBLAS's bf16 GEMM (f32 accumulation and output) onto the bias rows and a
// GELU pass (forward_bf16 says why not v3); the CPU runs each row block as a
// bf16 GEMM (oneDNN's bf16 kernel) where bf16 products are native, else the f32
// kernel on the rounded values, held as f32 (autocast_operand). What is exact is the rounding of the
// operands to bf16 (the same values on both devices); the f32 accumulation
// runs in another order. The bias is rounded too (unlike linear's, which stays
// f32), as v3 (kernels/fused_linear.h) reads it, so that every path computes
// the same thing.
// The backward's dx and dW GEMMs take dz and the saved rounded copies: through
// gemm_bf16 as bits, through the f32 GEMM as f32 values.
//
// A frozen bf16 / f16 weight with an f32 input (a pretrained CLIP tower kept
// in its file's dtype) runs unfused: linear's low-precision-weight path
// (core/ops/linalg.cpp), then gelu; the input's gradient flows through both.
#include "core/autocast.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/elementwise.h"
#include "kernels/fused_linear.h"
#include "kernels/gemm.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "linear_gelu";

kernels::GeluKind kind_of(GeluApprox approx) {
  return approx == GeluApprox::tanh ? kernels::GeluKind::tanh : kernels::GeluKind::erf;
}

// y, z [rows, out] = GELU(x [rows, in] · w [out, in]ᵀ + b); z may be undefined.
void forward(const Tensor& y, const Tensor& z, const Tensor& x, const Tensor& w, const Tensor& b,
             kernels::GeluKind kind) {
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (x.dtype() == DType::bf16) {
    // v3 (CUDA only, checked by the caller): bf16 in, bf16 out.
    VLMC_CUDA_DISPATCH(kernels::cuda::linear_gelu_bf16(y.data_ptr(), DType::bf16, nullptr,
                                                       data_or_null<const uint16_t>(x), data_or_null<const uint16_t>(w),
                                                       data_or_null<const uint16_t>(b), m, n, k, kind, stream_of(x)));
    return;
  }
  run_float_kernel(
      kOp, x,
      [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::linear_gelu<T>(y.data<T>(), data_or_null<T>(z), x.data<T>(), w.data<T>(), data_or_null<T>(b),
                                     m, n, k, kind);
      },
      [&](auto tag, [[maybe_unused]] cudaStream_t stream) {
        using T [[maybe_unused]] = decltype(tag);
        VLMC_CUDA_DISPATCH(kernels::cuda::linear_gelu<T>(y.data<T>(), data_or_null<T>(z), x.data<T>(), w.data<T>(),
                                                         data_or_null<T>(b), m, n, k, kind, stream));
      });
}

// The autocast forward: y, z (f32) = GELU(x·Wᵀ + b) with x, w, b rounded to bf16
// (autocast_operand: bits, or f32 values where the CPU has no bf16 kernel).
void forward_bf16(const Tensor& y, const Tensor& z, const Tensor& x, const Tensor& w,
                  const Tensor& b, kernels::GeluKind kind) {
  if (x.device().is_cuda()) {
    // cuBLAS's bf16 GEMM (f32 accumulation, f32 out) onto the bias rows, then
    // GELU as its own pass. On an H200 (bench_fused_linear, 2026-12-04, M =
    // 9216, K = 1024, N = 4096) our v3 kernel took 0.50 ms where cuBLAS's bf16
    // GEMM alone took 0.11 ms: two memory passes of [M, N] f32 cost less than
    // the difference. The same arithmetic as v3: f32 accumulation of the bf16
    // products, then + b (rounded to bf16), then GELU in f32.
    [[maybe_unused]] const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
    const Tensor pre = z.defined() ? z : Tensor::empty({m, n}, DType::f32, x.device());
    const Tensor bias = b.defined() ? b.to(DType::f32) : Tensor();
    [[maybe_unused]] const auto bits = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); };
    [[maybe_unused]] const kernels::UnaryOp act =
        kind == kernels::GeluKind::tanh ? kernels::UnaryOp::gelu_tanh : kernels::UnaryOp::gelu;
    if (m == 0 || n == 0) return;
    VLMC_CUDA_DISPATCH({
      if (bias.defined()) kernels::cuda::broadcast_rows<float>(pre.data<float>(), bias.data<float>(), m, n, n,
                                                               stream_of(x));
      kernels::cuda::gemm_bf16(false, true, m, n, k, 1.0f, bits(x), k, 0, bits(w), k, 0, bias.defined() ? 1.0f : 0.0f,
                               pre.data<float>(), n, m * n, 1, stream_of(x));
      kernels::cuda::unary<float>(act, y.data<float>(), pre.data<float>(), m * n, 0.0, stream_of(x));
    });
    return;
  }
  if (x.dtype() == DType::bf16) {  // bits: this CPU multiplies bf16 (autocast_operand_dtype)
    const auto bits = [](const Tensor& t) {
      return t.defined() ? static_cast<const uint16_t*>(t.data_ptr()) : nullptr;
    };
    kernels::cpu::linear_gelu_bf16(y.data<float>(), z.defined() ? z.data<float>() : nullptr, bits(x), bits(w),
                                   bits(b), x.size(0), w.size(0), x.size(1), kind);
    return;
  }
  // No bf16 kernel: the operands are f32 values of bf16's precision (autocast_operand).
  forward(y, z, x, w, b, kind);
}

// c [m, n] = op(a)·op(b) over contiguous row-major operands (kernels/gemm.h);
// bf16 operands (both or neither) accumulate into an f32 c.
void gemm_into(const Tensor& c, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
               const Tensor& a, int64_t lda, const Tensor& b, int64_t ldb) {
  if (c.numel() == 0) return;
  if (k == 0) {
    Tensor(c).zero_();  // a handle to the same tensor
    return;
  }
  if (a.dtype() == DType::bf16) {
    const auto* pa = static_cast<const uint16_t*>(a.data_ptr());
    const auto* pb = static_cast<const uint16_t*>(b.data_ptr());
    if (c.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::gemm_bf16(trans_a, trans_b, m, n, k, 1.0f, pa, lda, 0, pb,
                                                  ldb, 0, 0.0f, c.data<float>(), n, 0, 1,
                                                  stream_of(c)));
    } else {
      kernels::cpu::gemm_bf16(trans_a, trans_b, m, n, k, 1.0f, pa, lda, 0, pb, ldb, 0, 0.0f,
                              c.data<float>(), n, 0, 1);
    }
    return;
  }
  run_float_kernel(
      kOp, c,
      [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::gemm<T>(trans_a, trans_b, m, n, k, T(1), a.data<T>(), lda, b.data<T>(), ldb, T(0),
                              c.data<T>(), n);
      },
      [&](auto tag, [[maybe_unused]] cudaStream_t stream) {
        using T [[maybe_unused]] = decltype(tag);
        VLMC_CUDA_DISPATCH(kernels::cuda::gemm<T>(trans_a, trans_b, m, n, k, T(1), a.data<T>(), lda, b.data<T>(),
                                                  ldb, T(0), c.data<T>(), n, stream));
      });
}

// dz [rows, out] = g ⊙ GELU'(z), and db [out] = Σ_rows dz when wanted.
void backward_elementwise(const Tensor& dz, const Tensor& db, const Tensor& g, const Tensor& z,
                          kernels::GeluKind kind) {
  const int64_t m = z.size(0), n = z.size(1);
  run_float_kernel(
      kOp, z,
      [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::linear_gelu_backward<T>(dz.data<T>(), data_or_null<T>(db), g.data<T>(), z.data<T>(), m, n,
                                              kind);
      },
      [&](auto tag, [[maybe_unused]] cudaStream_t stream) {
        using T [[maybe_unused]] = decltype(tag);
        VLMC_CUDA_DISPATCH(kernels::cuda::linear_gelu_backward<T>(dz.data<T>(), data_or_null<T>(db), g.data<T>(),
                                                                  z.data<T>(), m, n, kind, stream));
      });
}

void check_arguments(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VLMC_CHECK(x.defined() && weight.defined(), "linear_gelu: undefined input or weight");
  VLMC_CHECK(weight.dim() == 2, "linear_gelu: weight ", shape_str(weight.shape()),
             " must be 2-D [out, in]");
  VLMC_CHECK(x.dim() >= 1, "linear_gelu: input ", shape_str(x.shape()),
             " must have at least 1 dim");
  VLMC_CHECK(x.size(-1) == weight.size(1), "linear_gelu: input ", shape_str(x.shape()),
             " does not match weight ", shape_str(weight.shape()));
  const int64_t out_features = weight.size(0);
  if (bias.defined())
    VLMC_CHECK(bias.shape() == Shape{out_features}, "linear_gelu: bias ",
               shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()),
               " (expected [", out_features, "])");
  check_same_device(kOp, {x, weight, bias});
  if (x.dtype() == DType::bf16) {
    // The tensor-core path: CUDA, forward only (inference with bf16 weights).
    VLMC_CHECK(x.device().is_cuda(), "linear_gelu: input ", describe(x),
               ": bf16 runs on CUDA only (use f32 or f64 on the CPU)");
    check_same_dtype(kOp, {x, weight, bias});
    VLMC_CHECK(!any_requires_grad({x, weight, bias}),
               "linear_gelu: bf16 has no backward (forward only); train in f32");
    return;
  }
  check_float(kOp, "input", x);
  check_float(kOp, "weight", weight);
  if (bias.defined()) check_float(kOp, "bias", bias);
  check_same_dtype(kOp, {x, weight, bias});
}

}  // namespace

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, GeluApprox approx) {
  if (weight.defined() && (weight.dtype() == DType::bf16 || weight.dtype() == DType::f16) && x.defined() &&
      x.dtype() != weight.dtype())
    return gelu(linear(x, weight, bias), approx);
  check_arguments(x, weight, bias);
  const kernels::GeluKind kind = kind_of(approx);
  const int64_t in = weight.size(1), out_features = weight.size(0);

  // x [..., in] -> x2 [rows, in]; y2, z2 [rows, out]; y [..., out].
  int64_t rows = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) rows *= x.size(i);
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  // Under autocast the leaves themselves go to autocast_operand (the weight cache).
  const bool bf16 = autocast_bf16() && x.dtype() == DType::f32;
  const auto prepared = [bf16](const Tensor& t) {
    if (!t.defined()) return Tensor();
    return bf16 ? autocast_operand(t) : t.detach().contiguous();
  };
  const Tensor x2 = prepared(x).reshape({rows, in}).contiguous();
  const Tensor wd = prepared(weight);
  const Tensor bd = prepared(bias);
  const bool grad = any_requires_grad({x, weight, bias});
  Tensor y2 = Tensor::empty({rows, out_features}, x.dtype(), x.device());
  const Tensor z2 = grad ? Tensor::empty({rows, out_features}, x.dtype(), x.device()) : Tensor();
  if (y2.numel() > 0) {
    if (bf16) {
      forward_bf16(y2, z2, x2, wd, bd, kind);
    } else {
      forward(y2, z2, x2, wd, bd, kind);
    }
  }
  Tensor y = y2.view(out_shape);
  if (!grad) return y;

  // dx needs W, dW needs x: a frozen weight keeps no copy of the input.
  const Tensor saved_x = weight.requires_grad() ? x2 : Tensor();
  const Tensor saved_w = x.requires_grad() ? wd : Tensor();
  record(y, kOp, {x, weight, bias},
         [z2, saved_x, saved_w, kind, bf16, x_shape = x.shape(), rows, in, out_features](
             const Tensor& g, const GradMask& needs) {
           const Tensor g2 = g.reshape({rows, out_features}).contiguous();
           Tensor dz = Tensor::empty({rows, out_features}, g2.dtype(), g2.device());
           Tensor db = needs[2] ? Tensor::empty({out_features}, g2.dtype(), g2.device()) : Tensor();
           const bool products = needs[0] || needs[1];
           if (bf16 && products && db.defined() && !dz.device().is_cuda() && out_features > 1) {
             // The GEMMs' operand, dz rounded to bf16, and db (from dz in f32) in one
             // pass over dz: the same bits as the three passes below, 38 MB less read
             // at the seed's MLP shapes ([2304, 4096]).
             backward_elementwise(dz, Tensor(), g2, z2, kind);
             dz = autocast_operand_with_column_sums(dz, db);
           } else {
             backward_elementwise(dz, db, g2, z2, kind);
             // The GEMMs' operand: dz rounded to bf16 under autocast (db used dz in f32).
             if (bf16 && products) dz = autocast_operand(dz);
           }
           std::vector<Tensor> grads(3);
           if (needs[0]) {  // dx [rows, in] = dz [rows, out] · W [out, in]
             Tensor dx = Tensor::empty({rows, in}, g2.dtype(), g2.device());
             gemm_into(dx, false, false, rows, in, out_features, dz, out_features, saved_w, in);
             grads[0] = dx.view(x_shape);
           }
           if (needs[1]) {  // dW [out, in] = dzᵀ · x [rows, in], summed over all rows
             Tensor dw = Tensor::empty({out_features, in}, g2.dtype(), g2.device());
             gemm_into(dw, true, false, out_features, in, rows, dz, out_features, saved_x, in);
             grads[1] = dw;
           }
           grads[2] = db;
           return grads;
         });
  return y;
}

}  // namespace vlmc
