// scaled_dot_product_attention: softmax(q·kᵀ·scale + masks)·v, by the fused
// kernels (kernels/attention.h) or, for long unmasked sequences on CUDA and
// under autocast, by products (below).
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "core/autocast.h"
#include "core/autograd.h"

#include "core/dispatch.h"
#include "core/ops.h"
#include "core/ops/heads.h"
#include "kernels/attention.h"

namespace vlmc {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

std::string shapes_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return str("q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
}

// Query rows times key rows from which CUDA takes the product form. The fused
// CUDA kernel (v1) computes each score with a warp reduction in f32 (no
// tensor cores); with it a LLaVA stage-1 step at sequence 2048 ran 30 times
// slower than PyTorch's (an H200, 2026-12-04). The product form runs its two
// products on cuBLAS, in bf16 under autocast.
constexpr int64_t kProductFormMinScores = 64 * 64;

// u8 [T, S] (1: key j is hidden from query i by causality, j > i + S - T), on
// `device`, made once per shape and device (a step asks for it in every layer).
Tensor causal_hidden(int64_t t, int64_t s, Device device) {
  static std::mutex mutex;
  // Never destroyed: device tensors must not be freed after the CUDA runtime
  // has shut down at exit.
  static auto* cache = new std::map<std::tuple<int64_t, int64_t, int, int>, Tensor>();
  const auto key = std::make_tuple(t, s, static_cast<int>(device.type), device.index);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  std::vector<uint8_t> hidden(static_cast<size_t>(t * s));
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < s; ++j) hidden[static_cast<size_t>(i * s + j)] = j > i + s - t;
  const Tensor out = Tensor::from_vector(hidden, {t, s}).to(device);
  return cache->emplace(key, out).first->second;
}

// The product form: scores = q·kᵀ·scale [B, Hq, T, S], hidden keys masked,
// softmax over keys, times v. Built from matmul, masked_fill and softmax, so
// autograd comes with them and autocast rounds the two products to bf16 as it
// does every product (torch.autocast runs attention in bf16 too). Scores take
// B·Hq·T·S floats, which the fused kernel never holds: the price of running
// on the GEMM units.
//
// Where a row may see no key at all (a key mask, or causal with T > S), hidden
// scores get a large finite negative value instead of -inf: such a row then
// has a finite softmax (uniform over its hidden keys) rather than NaN, and
// its output is multiplied by 0, which also zeroes its gradient: the fused
// kernel's zeros. In every other row a hidden key's weight is exp(-1e30 - max)
// = 0, as with -inf.
Tensor attention_by_products(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask,
                             bool causal, double scale, const kernels::AttentionShape& s) {
  const int64_t group = s.q_heads / s.kv_heads;
  Tensor keys = k, values = v;  // [B, Hq, S, Dh]: each KV head repeated for its group of query heads
  if (group > 1) {
    const Shape grouped{s.batch, s.kv_heads, group, s.kv_len, s.head_dim};
    const Shape per_query_head{s.batch, s.q_heads, s.kv_len, s.head_dim};
    keys = k.unsqueeze(2).expand(grouped).reshape(per_query_head);
    values = v.unsqueeze(2).expand(grouped).reshape(per_query_head);
  }
  Tensor scores = mul(matmul(q, keys.transpose(2, 3)), scale);  // [B, Hq, T, S]
  const bool rows_may_see_nothing = key_padding_mask.defined() || (causal && s.q_len > s.kv_len);
  if (!rows_may_see_nothing) {
    if (causal) scores = masked_fill(scores, causal_hidden(s.q_len, s.kv_len, q.device()), -INFINITY);
    return matmul(softmax(scores, -1), values);  // [B, Hq, T, Dh]
  }
  Tensor hidden, row_sees_a_key;  // u8 [B|1, 1, T|1, S] and f32 0/1 [B|1, 1, T|1, 1]: no autograd
  {
    NoGradGuard no_grad;
    const Tensor one = Tensor::ones({1}, DType::f32, q.device());
    Tensor visible = Tensor::ones({1, 1, 1, s.kv_len}, DType::f32, q.device());
    if (key_padding_mask.defined())  // any nonzero mask value: the key is there
      visible = minimum(abs(key_padding_mask.to(DType::f32)), one).view({s.batch, 1, 1, s.kv_len});
    if (causal)
      visible = mul(visible, rsub(1.0, causal_hidden(s.q_len, s.kv_len, q.device()).to(DType::f32)));
    hidden = rsub(1.0, visible).to(DType::u8);
    row_sees_a_key = minimum(sum(visible, {-1}, /*keepdim=*/true), one);
  }
  scores = masked_fill(scores, hidden, -1e30);
  return mul(matmul(softmax(scores, -1), values), row_sees_a_key);  // [B, Hq, T, Dh]
}

// The product form where it pays: long sequences on CUDA, and under autocast
// on any device (so that the CPU's bf16 emulation computes what CUDA computes).
bool use_products(const Tensor& q, const kernels::AttentionShape& s) {
  if (s.q_len == 0 || s.kv_len == 0 || s.head_dim == 0 || s.batch == 0) return false;
  const bool autocast = autocast_bf16() && q.dtype() == DType::f32;
  return autocast || (q.device().is_cuda() && s.q_len * s.kv_len >= kProductFormMinScores);
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_padding_mask, bool causal, std::optional<double> scale,
                                    bool trailing_queries_unread) {
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
  const kernels::AttentionShape s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3),
                                  trailing_queries_unread};
  if (q.device().is_cuda())
    VLMC_CHECK(s.head_dim <= kernels::kAttentionMaxHeadDimCuda, kOp, ": ", shapes_of(q, k, v), ": head dim ",
               s.head_dim, " exceeds the CUDA kernels' maximum of ", kernels::kAttentionMaxHeadDimCuda);
  const double sc = scale.value_or(s.head_dim > 0 ? 1.0 / std::sqrt(static_cast<double>(s.head_dim)) : 1.0);
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
  if (use_products(q, s)) return attention_by_products(q, k, v, key_padding_mask, causal, sc, s);
  // The CPU kernels take any rows whose head dim is contiguous (kernels/attention.h,
  // HeadStrides); their output is laid out as [B, T, H, Dh], which the caller's
  // transpose(1, 2).reshape turns back into its [B, T, H·Dh] without a copy. CUDA's
  // kernels take contiguous operands.
  const bool cpu = q.device().is_cpu();
  auto operand = [cpu](const Tensor& t) { return cpu && t.strides()[3] == 1 ? t : t.contiguous(); };
  const Tensor qc = operand(q), kc = operand(k), vc = operand(v);
  Tensor out = cpu ? empty_projection_heads(q.shape(), q.dtype()) : Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({s.batch, s.q_heads, s.q_len}, q.dtype(), q.device());
  const int64_t* mp = mask.defined() ? mask.data<int64_t>() : nullptr;
  dispatch_float(kOp, q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (!cpu) {
      VLMC_CUDA_DISPATCH(kernels::cuda::attention_forward<T>(out.data<T>(), lse.data<T>(), qc.data<T>(),
                                                             kc.data<T>(), vc.data<T>(), mp, causal, sc, s,
                                                             stream_of(q)));
    } else {
      const kernels::AttentionStrides st{head_strides(qc), head_strides(kc), head_strides(vc), head_strides(out),
                                         {}, {}, {}};
      kernels::cpu::attention_forward<T>(out.data<T>(), lse.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                         mp, causal, sc, s, st);
    }
  });
  record(out, kOp, {q, k, v},
         [qc, kc, vc, mask, lse, causal, sc, s, cpu, operand](const Tensor& grad, const GradMask& needs) {
           const Tensor g = operand(grad);
           // Each gradient in its input's layout, so that it flows back through the
           // input's head view uncopied (core/ops/heads.h).
           auto empty_grad = [cpu](const Tensor& x) {
             return cpu ? empty_like_heads(x.shape(), x.strides(), x.dtype())
                        : Tensor::empty(x.shape(), x.dtype(), x.device());
           };
           Tensor dq = empty_grad(qc), dk = empty_grad(kc), dv = empty_grad(vc);
           Tensor delta = Tensor::empty(lse.shape(), lse.dtype(), lse.device());
           const int64_t* m = mask.defined() ? mask.data<int64_t>() : nullptr;
           dispatch_float(kOp, qc.dtype(), [&](auto zero) {
             using T = decltype(zero);
             if (!cpu) {
               VLMC_CUDA_DISPATCH(kernels::cuda::attention_backward<T>(
                   dq.data<T>(), dk.data<T>(), dv.data<T>(), delta.data<T>(), g.data<T>(), qc.data<T>(),
                   kc.data<T>(), vc.data<T>(), lse.data<T>(), m, causal, sc, s, stream_of(qc)));
             } else {
               const kernels::AttentionStrides st{head_strides(qc), head_strides(kc), head_strides(vc),
                                                  head_strides(g),  head_strides(dq), head_strides(dk),
                                                  head_strides(dv)};
               kernels::cpu::attention_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), delta.data<T>(),
                                                   g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                                   lse.data<T>(), m, causal, sc, s, st);
             }
           });
           return std::vector<Tensor>{needs[0] ? dq : Tensor(), needs[1] ? dk : Tensor(),
                                      needs[2] ? dv : Tensor()};
         });
  return out;
}

}  // namespace vlmc
