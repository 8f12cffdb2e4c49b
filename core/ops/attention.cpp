// scaled_dot_product_attention: fused softmax(q·kᵀ·scale + masks)·v (kernels/attention.h).
#include <cmath>

#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/attention.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

std::string shapes_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return str("q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_padding_mask, bool causal, std::optional<double> scale) {
  check_float(kOp, "q", q);
  check_float(kOp, "k", k);
  check_float(kOp, "v", v);
  check_same_dtype(kOp, {q, k, v});
  check_same_device(kOp, {q, k, v});
  VLMC_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, kOp, ": ", shapes_of(q, k, v),
             " must be q [B, Hq, T, Dh], k and v [B, Hkv, S, Dh]");
  VLMC_CHECK(k.shape() == v.shape(), kOp, ": ", shapes_of(q, k, v), ": k and v shapes differ");
  VLMC_CHECK(q.size(0) == k.size(0), kOp, ": ", shapes_of(q, k, v), ": batch sizes ", q.size(0), " and ",
             k.size(0), " differ");
  VLMC_CHECK(q.size(3) == k.size(3), kOp, ": ", shapes_of(q, k, v), ": head dims ", q.size(3), " and ",
             k.size(3), " differ");
  VLMC_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, kOp, ": ", shapes_of(q, k, v), ": ", q.size(1),
             " query heads are not a multiple of ", k.size(1), " KV heads");
  const kernels::AttentionShape s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  if (q.device().is_cuda())
    VLMC_CHECK(s.head_dim <= kernels::kAttentionMaxHeadDimCuda, kOp, ": ", shapes_of(q, k, v), ": head dim ",
               s.head_dim, " exceeds the CUDA kernels' maximum of ", kernels::kAttentionMaxHeadDimCuda);
  Tensor mask;  // i64 [B, S], contiguous, on q's device
  if (key_padding_mask.defined()) {
    VLMC_CHECK(key_padding_mask.dtype() == DType::u8 || key_padding_mask.dtype() == DType::i64, kOp,
               ": key_padding_mask must be u8 or i64, got ", dtype_name(key_padding_mask.dtype()));
    VLMC_CHECK(key_padding_mask.dim() == 2 && key_padding_mask.size(0) == s.batch &&
                   key_padding_mask.size(1) == s.kv_len,
               kOp, ": key_padding_mask ", shape_str(key_padding_mask.shape()), " must be [B, S] = [", s.batch,
               ",", s.kv_len, "] for ", shapes_of(q, k, v));
    VLMC_CHECK(key_padding_mask.device() == q.device(), kOp, ": key_padding_mask is on ",
               key_padding_mask.device().str(), " but q is on ", q.device().str());
    mask = key_padding_mask.to(DType::i64).contiguous();  // u8 -> i64 keeps nonzero values nonzero
  }
  const double sc = scale.value_or(s.head_dim > 0 ? 1.0 / std::sqrt(static_cast<double>(s.head_dim)) : 1.0);
  const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({s.batch, s.q_heads, s.q_len}, q.dtype(), q.device());
  const int64_t* mp = mask.defined() ? mask.data<int64_t>() : nullptr;
  dispatch_float(kOp, q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (q.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::attention_forward<T>(out.data<T>(), lse.data<T>(), qc.data<T>(),
                                                             kc.data<T>(), vc.data<T>(), mp, causal, sc, s,
                                                             stream_of(q)));
    } else {
      kernels::cpu::attention_forward<T>(out.data<T>(), lse.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                         mp, causal, sc, s);
    }
  });
  record(out, kOp, {q, k, v},
         [qc, kc, vc, mask, lse, causal, sc, s](const Tensor& grad, const GradMask& needs) {
           const Tensor g = grad.contiguous();
           Tensor dq = Tensor::empty(qc.shape(), qc.dtype(), qc.device());
           Tensor dk = Tensor::empty(kc.shape(), kc.dtype(), kc.device());
           Tensor dv = Tensor::empty(vc.shape(), vc.dtype(), vc.device());
           Tensor delta = Tensor::empty(lse.shape(), lse.dtype(), lse.device());
           const int64_t* m = mask.defined() ? mask.data<int64_t>() : nullptr;
           dispatch_float(kOp, qc.dtype(), [&](auto zero) {
             using T = decltype(zero);
             if (qc.device().is_cuda()) {
               VLMC_CUDA_DISPATCH(kernels::cuda::attention_backward<T>(
                   dq.data<T>(), dk.data<T>(), dv.data<T>(), delta.data<T>(), g.data<T>(), qc.data<T>(),
                   kc.data<T>(), vc.data<T>(), lse.data<T>(), m, causal, sc, s, stream_of(qc)));
             } else {
               kernels::cpu::attention_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), delta.data<T>(),
                                                   g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                                   lse.data<T>(), m, causal, sc, s);
             }
           });
           return std::vector<Tensor>{needs[0] ? dq : Tensor(), needs[1] ? dk : Tensor(),
                                      needs[2] ? dv : Tensor()};
         });
  return out;
}

}  // namespace vlmc
