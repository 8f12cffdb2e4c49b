// matmul and linear: argument checks, the mapping of strided tensors onto
// GEMM calls (kernels/gemm.h), and their backward.
//
// A tensor's last two dims are handed to GEMM without a copy whenever their
// strides are those of a row-major matrix or of a transposed one (so x.t()
// and transpose(-1,-2) views cost nothing), and its batch dims whenever they
// collapse to one stride (0 for a broadcast operand). Only other layouts are
// copied first.
//
// Under autocast (core/autocast.h) an f32 product takes its operands rounded
// to bf16 (autocast_operand) and accumulates in f32 into an f32 result: as
// bf16 bits through gemm_bf16 where the device has a bf16 kernel, and as f32
// values of bf16's precision through the f32 GEMM where the CPU has none. The
// mode is read once, in the forward, and handed to the backward's products;
// the backward saves the rounded copies (as bits, half the bytes of the f32
// operands).
//
// linear also takes a frozen bf16 or f16 weight with an f32 input (a
// pretrained model kept in its file's dtype, docs/numerics.md): the weight's
// values are multiplied as they are, f32 accumulation, f32 output, and the
// input's gradient is dy · W the same way (kernels/gemm_lowp_weight.h). Such
// a weight never requires grad (trained parameters are f32 masters). Under
// autocast a bf16 weight's input (and its gradient, backward) is rounded to
// bf16 as torch.autocast rounds it, and the product is bf16 x bf16 with f32
// accumulation (oneDNN's bf16 kernel where the CPU has one); an f16 weight's
// input stays f32. On CUDA the weight is widened to f32 on the device for
// each call and the f32 path runs.
#include <algorithm>

#include "core/autocast.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/gemm.h"
#include "kernels/gemm_lowp_weight.h"

namespace vlmc {
namespace {

// One GEMM operand: matrix i of the batch is [rows, cols] at data + i *
// batch_stride, stored row-major with leading dimension ld, or (trans) stored
// as its [cols, rows] transpose.
struct Operand {
  Tensor data;  // keeps the memory alive; data_ptr() is matrix 0
  bool trans = false;
  int64_t ld = 1;
  int64_t batch_stride = 0;
};

Shape batch_of(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 2); }

Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
  batch.push_back(rows);
  batch.push_back(cols);
  return batch;
}

// Describes x [..., rows, cols] as an Operand without copying, or returns false.
bool as_operand(const Tensor& x, Operand& out) {
  const Shape& shape = x.shape();
  const Shape& strides = x.strides();
  const size_t nd = shape.size();
  // Batch dims: each dim of size > 1 must step by the collapsed size of those inside it.
  int64_t batch_stride = 0, expect = -1;
  for (size_t i = nd - 2; i-- > 0;) {
    if (shape[i] == 1) continue;
    if (expect < 0) {
      batch_stride = strides[i];
    } else if (strides[i] != expect) {
      return false;
    }
    expect = strides[i] * shape[i];
  }
  const int64_t rows = shape[nd - 2], cols = shape[nd - 1];
  const int64_t row_stride = strides[nd - 2], col_stride = strides[nd - 1];
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1))) {
    out = {x, false, rows == 1 ? std::max<int64_t>(cols, 1) : row_stride, batch_stride};
    return true;
  }
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= std::max<int64_t>(rows, 1))) {
    out = {x, true, cols == 1 ? std::max<int64_t>(rows, 1) : col_stride, batch_stride};
    return true;
  }
  return false;
}

// x [..., rows, cols] broadcast to batch, as a GEMM operand (copied only when
// its layout cannot be described).
Operand operand(const Tensor& x, const Shape& batch) {
  const Shape full = with_matrix(batch, x.size(-2), x.size(-1));
  Operand o;
  if (as_operand(x.expand(full), o)) return o;
  if (as_operand(x.contiguous().expand(full), o)) return o;
  as_operand(x.expand(full).contiguous(), o);  // always describable
  return o;
}

Operand transposed(Operand o) {
  o.trans = !o.trans;
  return o;
}

// c [batch, m, n] (contiguous) = op(a) · op(b) + beta * c. bf16 operands
// (both or neither) accumulate into an f32 c.
void run_gemm(const Operand& a, const Operand& b, const Tensor& c, int64_t batch, int64_t m,
              int64_t n, int64_t k, double beta) {
  if (a.data.dtype() == DType::bf16) {
    const auto* pa = static_cast<const uint16_t*>(a.data.data_ptr());
    const auto* pb = static_cast<const uint16_t*>(b.data.data_ptr());
    float* pc = c.data<float>();
    if (c.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::gemm_bf16(a.trans, b.trans, m, n, k, 1.0f, pa, a.ld,
                                                  a.batch_stride, pb, b.ld, b.batch_stride,
                                                  float(beta), pc, n, m * n, batch, stream_of(c)));
    } else {
      kernels::cpu::gemm_bf16(a.trans, b.trans, m, n, k, 1.0f, pa, a.ld, a.batch_stride, pb, b.ld,
                              b.batch_stride, float(beta), pc, n, m * n, batch);
    }
    return;
  }
  dispatch_float("matmul", c.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.data.data_ptr());
    const T* pb = static_cast<const T*>(b.data.data_ptr());
    T* pc = static_cast<T*>(c.data_ptr());
    if (c.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::gemm_strided_batched<T>(
          a.trans, b.trans, m, n, k, T(1), pa, a.ld, a.batch_stride, pb, b.ld, b.batch_stride,
          T(beta), pc, n, m * n, batch, stream_of(c)));
    } else {
      kernels::cpu::gemm_strided_batched<T>(a.trans, b.trans, m, n, k, T(1), pa, a.ld,
                                            a.batch_stride, pb, b.ld, b.batch_stride, T(beta), pc,
                                            n, m * n, batch);
    }
  });
}

// Sets every row of y [rows, n] (contiguous) to bias [n] (contiguous).
void lay_bias_rows(const Tensor& y, const Tensor& bias) {
  const int64_t rows = y.size(0), n = y.size(1);
  dispatch_float("linear", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* py = static_cast<T*>(y.data_ptr());
    const T* pb = static_cast<const T*>(bias.data_ptr());
    if (y.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::broadcast_rows<T>(py, pb, rows, n, n, stream_of(y)));
    } else {
      kernels::cpu::broadcast_rows<T>(py, pb, rows, n, n);
    }
  });
}

// c [m, n] (contiguous, on the CPU) = op(a) [m, k] · op(b) + bias [n] in every row, one
// product whose kernel adds the bias (kernels/gemm.h's gemm_bias). bf16
// operands (both or neither) with an f32 bias and c.
void product_with_bias(const Operand& a, const Operand& b, const Tensor& bias, const Tensor& c, int64_t k) {
  const int64_t m = c.size(0), n = c.size(1);
  if (a.data.dtype() == DType::bf16) {
    kernels::cpu::gemm_bf16_bias(a.trans, b.trans, m, n, k, static_cast<const uint16_t*>(a.data.data_ptr()), a.ld,
                                 static_cast<const uint16_t*>(b.data.data_ptr()), b.ld, bias.data<float>(),
                                 c.data<float>(), n);
    return;
  }
  dispatch_float("linear", c.dtype(), [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::gemm_bias<T>(a.trans, b.trans, m, n, k, static_cast<const T*>(a.data.data_ptr()), a.ld,
                               static_cast<const T*>(b.data.data_ptr()), b.ld, static_cast<const T*>(bias.data_ptr()),
                               static_cast<T*>(c.data_ptr()), n);
  });
}

// The operand a product under autocast (bf16) multiplies: its rounded copy.
Tensor cast_if(const Tensor& x, bool bf16) { return bf16 ? autocast_operand(x) : x; }

// out [batch..., m, n] = a [batch_a..., m, k] · b [batch_b..., k, n] with the
// batch dims broadcast. No autograd: callers pass detached tensors. With bf16
// (autocast) the operands come rounded already (cast_if: rounding an f32-held
// operand again would cost a pass, and a copy of a transposed view) and out is f32.
Tensor product(const Tensor& a, const Tensor& b, bool bf16) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const Shape batch = broadcast_shapes(batch_of(a), batch_of(b), "matmul");
  const int64_t nb = shape_numel(batch);
  Tensor out =
      Tensor::empty(with_matrix(batch, m, n), bf16 ? DType::f32 : a.dtype(), a.device());
  if (out.numel() == 0) return out;
  if (k == 0) return out.zero_();
  const Operand oa = operand(a, batch), ob = operand(b, batch);
  // b shared by the whole batch and a's matrices stacked row after row: one
  // GEMM over nb*m rows, which BLAS runs far better than nb small ones.
  if (nb > 1 && ob.batch_stride == 0 && !oa.trans && oa.batch_stride == m * oa.ld) {
    run_gemm(oa, ob, out, 1, nb * m, n, k, 0.0);
  } else {
    run_gemm(oa, ob, out, nb, m, n, k, 0.0);
  }
  return out;
}

// x [batch..., rows, cols] (batch the full broadcast batch) as one operand of
// nb*rows stacked rows, copying when its matrices are not laid out so.
Operand stacked(const Tensor& x, const Shape& batch) {
  const int64_t rows = x.size(-2);
  Operand o = operand(x, batch);
  if (!o.trans && (shape_numel(batch) == 1 || o.batch_stride == rows * o.ld)) return o;
  as_operand(x.expand(with_matrix(batch, rows, x.size(-1))).contiguous(), o);
  return o;
}

// sum over the batch of aᵀ·g, for a [batch..., m, k] and g [batch..., m, n]:
// one GEMM whose inner dimension runs over all nb*m rows -> [k, n].
// Under autocast (bf16) a and g come rounded, as product's operands do.
Tensor summed_product_tn(const Tensor& a, const Tensor& g, const Shape& batch, bool bf16) {
  const int64_t rows = shape_numel(batch) * a.size(-2), k = a.size(-1), n = g.size(-1);
  Tensor out = Tensor::empty({k, n}, bf16 ? DType::f32 : g.dtype(), g.device());
  if (out.numel() == 0) return out;
  if (rows == 0) return out.zero_();
  run_gemm(transposed(stacked(a, batch)), stacked(g, batch), out, 1, k, n, rows, 0.0);
  return out;
}

Tensor reduce_to(const Tensor& x, const Shape& shape) {
  return x.shape() == shape ? x : sum_to(x, shape);
}

// The recorded op on operands of >= 2 dims.
Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  // The leaves themselves go to autocast_operand, so a weight hits the cache.
  const bool bf16 = autocast_bf16() && a.dtype() == DType::f32;
  const Tensor ad = bf16 ? autocast_operand(a) : a.detach();
  const Tensor bd = bf16 ? autocast_operand(b) : b.detach();
  Tensor out = product(ad, bd, bf16);
  if (!any_requires_grad({a, b})) return out;
  // Each input's gradient needs only the other input.
  const Tensor saved_a = b.requires_grad() ? ad : Tensor();
  const Tensor saved_b = a.requires_grad() ? bd : Tensor();
  record(out, "matmul", {a, b},
         [saved_a, saved_b, bf16, a_shape = a.shape(), b_shape = b.shape()](
             const Tensor& g_in, const GradMask& needs) {
           const Tensor g = cast_if(g_in, bf16);  // rounded once for both products
           std::vector<Tensor> grads(2);
           // dA = g · Bᵀ, summed over the dims A was broadcast along.
           if (needs[0])
             grads[0] = reduce_to(product(g, saved_b.transpose(-1, -2), bf16), a_shape);
           if (needs[1]) {
             const Shape batch = batch_of(g);
             const Shape b_batch(b_shape.begin(), b_shape.end() - 2);
             if (shape_numel(batch) > 1 && shape_numel(b_batch) == 1) {
               // B shared by the batch: dB = Σ Aᵢᵀ·gᵢ as one GEMM, no [nb, k, n] temporary.
               grads[1] = summed_product_tn(saved_a, g, batch, bf16).reshape(b_shape);
             } else {
               grads[1] = reduce_to(product(saved_a.transpose(-1, -2), g, bf16), b_shape);
             }
           }
           return grads;
         });
  return out;
}

bool is_lowp(DType t) { return t == DType::bf16 || t == DType::f16; }

// linear with a bf16/f16 weight (checked: 2-D, shapes) and an f32 input.
Tensor linear_lowp_weight(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VLMC_CHECK(!weight.requires_grad(), "linear: weight ", describe(weight), " is ", dtype_name(weight.dtype()),
             " and requires grad: trained parameters are f32 masters (freeze it, or convert it to f32 to train it)");
  VLMC_CHECK(x.dtype() == DType::f32, "linear: input ", describe(x), " must be f32 with a ",
             dtype_name(weight.dtype()), " weight (f32 accumulation, f32 output)");
  if (bias.defined())
    VLMC_CHECK(bias.dtype() == DType::f32, "linear: bias ", describe(bias), " must be f32 with a ",
               dtype_name(weight.dtype()), " weight");
  check_same_device("linear", {x, weight, bias});
  if (x.device().is_cuda()) return linear(x, weight.detach().to(DType::f32), bias);

  const int64_t in = weight.size(1), out_features = weight.size(0);
  int64_t rows = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) rows *= x.size(i);
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  const Tensor x2 = x.detach().reshape({rows, in}).contiguous();  // [M, in]
  const Tensor w = weight.detach().contiguous();                  // [out, in]
  const DType w_dtype = w.dtype();
  // Under autocast a bf16 weight's product takes x (and, backward, g) rounded
  // to bf16 too, as torch.autocast does: a bf16 x bf16 GEMM.
  const bool bf16 = autocast_bf16() && w_dtype == DType::bf16;
  const auto bits = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); };
  Tensor y2 = Tensor::empty({rows, out_features}, DType::f32, x.device());
  if (y2.numel() > 0) {
    float beta = 0.0f;
    if (bias.defined()) {
      lay_bias_rows(y2, bias.detach().contiguous());
      beta = 1.0f;
    }
    if (bf16) {
      kernels::cpu::gemm_bf16_weight_nt_bf16x(rows, out_features, in, bits(autocast_bf16_copy(x2)), in, bits(w), in,
                                              beta, y2.data<float>(), out_features);
    } else {
      kernels::cpu::gemm_lowp_weight_nt(rows, out_features, in, x2.data<float>(), in, bits(w), in, w_dtype, beta,
                                        y2.data<float>(), out_features);
    }
  }
  Tensor y = y2.view(out_shape);
  if (!any_requires_grad({x, bias})) return y;
  record(y, "linear", {x, weight, bias},
         [w, bits, bf16, x_shape = x.shape(), rows, in, out_features](const Tensor& g, const GradMask& needs) {
           const Tensor g2 = g.reshape({rows, out_features}).contiguous();
           std::vector<Tensor> grads(3);
           if (needs[0]) {  // dx [M, in] = g [M, out] · W [out, in]
             Tensor dx = Tensor::empty({rows, in}, DType::f32, g2.device());
             if (bf16) {
               kernels::cpu::gemm_bf16_weight_nn_bf16x(rows, out_features, in, bits(autocast_bf16_copy(g2)),
                                                       out_features, bits(w), in, 0.0f, dx.data<float>(), in);
             } else {
               kernels::cpu::gemm_lowp_weight_nn(rows, out_features, in, g2.data<float>(), out_features, bits(w),
                                                 in, w.dtype(), 0.0f, dx.data<float>(), in);
             }
             grads[0] = dx.view(x_shape);
           }
           if (needs[2]) grads[2] = sum(g2, {0});
           return grads;
         });
  return y;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  VLMC_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  VLMC_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: a ", shape_str(a.shape()), " and b ",
             shape_str(b.shape()), ": both operands need at least 1 dim (use mul for scalars)");
  check_float("matmul", "a", a);
  check_float("matmul", "b", b);
  check_same_dtype("matmul", {a, b});
  check_same_device("matmul", {a, b});
  const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  VLMC_CHECK(ka == kb, "matmul: a ", shape_str(a.shape()), " and b ", shape_str(b.shape()),
             ": inner dims ", ka, " and ", kb, " differ");
  const Shape batch_a = a.dim() > 2 ? batch_of(a) : Shape{};
  const Shape batch_b = b.dim() > 2 ? batch_of(b) : Shape{};
  for (size_t i = 1; i <= std::min(batch_a.size(), batch_b.size()); ++i) {
    const int64_t da = batch_a[batch_a.size() - i], db = batch_b[batch_b.size() - i];
    VLMC_CHECK(da == db || da == 1 || db == 1, "matmul: a ", shape_str(a.shape()), " and b ",
               shape_str(b.shape()), ": batch dims ", shape_str(batch_a), " and ",
               shape_str(batch_b), " do not broadcast");
  }
  VLMC_CHECK(std::max(batch_a.size(), batch_b.size()) + 2 <= static_cast<size_t>(kernels::kMaxDims),
             "matmul: a ", shape_str(a.shape()), " and b ", shape_str(b.shape()),
             ": the result would have more than ", kernels::kMaxDims, " dims");
  // torch.matmul's promotion: a 1-D a is a row [1, k], a 1-D b a column
  // [k, 1]; the added dim is removed from the result.
  if (a.dim() == 1 && b.dim() == 1)
    return matmul_nd(a.unsqueeze(0), b.unsqueeze(1)).squeeze(1).squeeze(0);
  if (a.dim() == 1) return matmul_nd(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul_nd(a, b.unsqueeze(1)).squeeze(-1);
  return matmul_nd(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VLMC_CHECK(x.defined() && weight.defined(), "linear: undefined input or weight");
  VLMC_CHECK(weight.dim() == 2, "linear: weight ", shape_str(weight.shape()),
             " must be 2-D [out, in]");
  VLMC_CHECK(x.dim() >= 1, "linear: input ", shape_str(x.shape()), " must have at least 1 dim");
  VLMC_CHECK(x.size(-1) == weight.size(1), "linear: input ", shape_str(x.shape()),
             " does not match weight ", shape_str(weight.shape()));
  const int64_t in = weight.size(1), out_features = weight.size(0);
  if (bias.defined())
    VLMC_CHECK(bias.shape() == Shape{out_features}, "linear: bias ", shape_str(bias.shape()),
               " does not match weight ", shape_str(weight.shape()), " (expected [", out_features,
               "])");
  if (is_lowp(weight.dtype())) return linear_lowp_weight(x, weight, bias);
  check_float("linear", "input", x);
  check_float("linear", "weight", weight);
  if (bias.defined()) check_float("linear", "bias", bias);
  check_same_dtype("linear", {x, weight, bias});
  check_same_device("linear", {x, weight, bias});

  // x [..., in] -> x2 [M, in]; y2 [M, out] = x2 · Wᵀ (+ b); y [..., out].
  int64_t rows = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) rows *= x.size(i);
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  // Under autocast x and W are rounded to bf16; the bias stays f32 (it is
  // laid into y, not multiplied).
  const bool bf16 = autocast_bf16() && x.dtype() == DType::f32;
  const Tensor x2 = (bf16 ? autocast_operand(x) : x.detach()).reshape({rows, in});
  const Tensor wd = bf16 ? autocast_operand(weight) : weight.detach();
  Tensor y2 = Tensor::empty({rows, out_features}, x.dtype(), x.device());
  if (y2.numel() > 0 && in > 0 && bias.defined() && !y2.device().is_cuda()) {
    product_with_bias(operand(x2, {}), transposed(operand(wd, {})), bias.detach().contiguous(), y2, in);
  } else if (y2.numel() > 0) {
    // The bias is laid into every row first and the GEMM adds onto it (beta = 1).
    double beta = 0.0;
    if (bias.defined()) {
      lay_bias_rows(y2, bias.detach().contiguous());
      beta = 1.0;
    }
    if (in == 0) {
      if (!bias.defined()) y2.zero_();
    } else {
      run_gemm(operand(x2, {}), transposed(operand(wd, {})), y2, 1, rows, out_features, in, beta);
    }
  }
  Tensor y = y2.view(out_shape);
  if (!any_requires_grad({x, weight, bias})) return y;
  // dx needs W, dW needs x: a frozen weight keeps no copy of the input.
  const Tensor saved_x = weight.requires_grad() ? x2 : Tensor();
  const Tensor saved_w = x.requires_grad() ? wd : Tensor();
  record(y, "linear", {x, weight, bias},
         [saved_x, saved_w, bf16, x_shape = x.shape(), rows, out_features](
             const Tensor& g, const GradMask& needs) {
           const Tensor g2 = g.reshape({rows, out_features});
           std::vector<Tensor> grads(3);
           Tensor gm;
           if (bf16 && needs[2] && (needs[0] || needs[1]) && !g2.device().is_cuda() && g2.is_contiguous()) {
             // The rounding and the bias gradient in one pass over g (the same bits as below).
             grads[2] = Tensor::empty({out_features}, DType::f32, g2.device());
             gm = autocast_operand_with_column_sums(g2, grads[2]);
           } else {
             gm = needs[0] || needs[1] ? cast_if(g2, bf16) : g2;  // rounded once
             if (needs[2]) grads[2] = sum(g2, {0});              // f32
           }
           if (needs[0]) grads[0] = product(gm, saved_w, bf16).view(x_shape);    // g · W
           if (needs[1]) grads[1] = product(gm.transpose(0, 1), saved_x, bf16);  // gᵀ · x
           return grads;
         });
  return y;
}

}  // namespace vlmc
