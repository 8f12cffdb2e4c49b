// scaled_dot_product_attention: softmax(q·kᵀ·scale + masks)·v, by the fused
// kernels (kernels/attention.h) or, for long unmasked sequences on CUDA and
// under autocast, by products (below).
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

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

// q, k and v: floating point, of one dtype, on one device.
void check_operands(const char* op, const Tensor& q, const Tensor& k, const Tensor& v) {
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  check_same_dtype(op, {q, k, v});
  check_same_device(op, {q, k, v});
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

// Whether the CPU forward keeps P [B, Hq, T, S] for the backward: when a gradient will
// be taken and a row of P is no longer than a row of q (attention_keeps_probs;
// the main job's rows of 17-32 keys at head dim 32). The backward then skips its q·kᵀ
// and exps; at such lengths the recomputation had made the fused kernel slower than
// attention from products, which keep P (bench_attention, docs/perf.md). Longer rows
// keep the flash-style recomputation.
bool saves_probs(const kernels::AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v) {
  return grad_enabled() && any_requires_grad({q, k, v}) && attention_keeps_probs(s.kv_len, s.head_dim);
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
  check_operands(kOp, q, k, v);
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
  const Tensor probs = cpu && saves_probs(s, q, k, v)
                           ? Tensor::empty({s.batch, s.q_heads, s.q_len, s.kv_len}, q.dtype(), q.device())
                           : Tensor();
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
                                         mp, causal, sc, s, st, data_or_null<T>(probs));
    }
  });
  record(out, kOp, {q, k, v},
         [qc, kc, vc, mask, lse, probs, causal, sc, s, cpu, operand](const Tensor& grad, const GradMask& needs) {
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
                                                   lse.data<T>(), m, causal, sc, s, st, data_or_null<T>(probs));
             }
           });
           return std::vector<Tensor>{needs[0] ? dq : Tensor(), needs[1] ? dk : Tensor(),
                                      needs[2] ? dv : Tensor()};
         });
  return out;
}

// Packed rows: what the padded path moved between layouts with an index_select per
// projection and an index_add per gradient (ten of each a step of the main job's
// language model) the kernels address directly (kernels/attention.h, HeadStrides::row_start).
namespace {

constexpr const char* kPackedOp = "scaled_dot_product_attention_packed";

// What the kernels read of a packed call; shared by the forward and its backward.
struct PackedLayout {
  kernels::AttentionShape shape;
  std::vector<int64_t> row_start;  // [B]: sample b's first row
  Tensor mask;                     // i64 [B, length]: 1 on each sample's real rows
  int64_t covered = 0;             // Σ lengths: the rows past it are filler
};

kernels::HeadStrides packed_strides(const Tensor& t, const PackedLayout& layout, int64_t head_dim) {
  return {0, head_dim, t.strides()[0], layout.row_start.data()};
}

// Rows [covered, N) of a [N, width] tensor set to zero.
void zero_filler_rows(Tensor& t, int64_t covered) {
  if (covered < t.size(0)) t.narrow(0, covered, t.size(0) - covered).zero_();
}

}  // namespace

Tensor scaled_dot_product_attention_packed(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const std::vector<int64_t>& lengths, int64_t length, int64_t q_heads,
                                           int64_t kv_heads) {
  check_operands(kPackedOp, q, k, v);
  VLMC_CHECK(q.device().is_cpu(), kPackedOp, ": packed rows are a CPU path; q is on ", q.device().str());
  VLMC_CHECK(q.dim() == 2 && k.dim() == 2 && k.shape() == v.shape() && q.size(0) == k.size(0), kPackedOp, ": ",
             shapes_of(q, k, v), " must be q [N, Hq·Dh], k and v [N, Hkv·Dh]");
  VLMC_CHECK(q_heads > 0 && kv_heads > 0 && q_heads % kv_heads == 0 && q.size(1) % q_heads == 0, kPackedOp, ": ",
             q_heads, " query heads and ", kv_heads, " KV heads for ", shapes_of(q, k, v));
  const int64_t head_dim = q.size(1) / q_heads;
  VLMC_CHECK(k.size(1) == kv_heads * head_dim, kPackedOp, ": ", shapes_of(q, k, v), ": k's width is not ", kv_heads,
             " heads of ", head_dim);
  auto layout = std::make_shared<PackedLayout>();
  const int64_t batch = static_cast<int64_t>(lengths.size());
  layout->shape = {batch, q_heads, kv_heads, length, length, head_dim, /*trailing_queries_unread=*/true};
  std::vector<int64_t> keep(static_cast<size_t>(batch * length), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = lengths[static_cast<size_t>(b)];
    VLMC_CHECK(n >= 0 && n <= length, kPackedOp, ": sample ", b, " has length ", n, ", outside [0, ", length, "]");
    layout->row_start.push_back(layout->covered);
    std::fill_n(keep.begin() + b * length, n, int64_t(1));
    layout->covered += n;
  }
  VLMC_CHECK(layout->covered <= q.size(0), kPackedOp, ": the lengths add up to ", layout->covered, " rows, but q has ",
             q.size(0));
  layout->mask = Tensor::from_vector(keep, {batch, length});
  // Rows whose head dims are contiguous, as the padded op's heads.
  auto operand = [](const Tensor& t) { return t.strides()[1] == 1 ? t : t.contiguous(); };
  const Tensor qc = operand(q), kc = operand(k), vc = operand(v);
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  zero_filler_rows(out, layout->covered);
  Tensor lse = Tensor::empty({batch, q_heads, length}, q.dtype(), q.device());
  const Tensor probs = saves_probs(layout->shape, q, k, v)
                           ? Tensor::empty({batch, q_heads, length, length}, q.dtype(), q.device())
                           : Tensor();
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const auto strides = [layout, head_dim](const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& o_) {
    return kernels::AttentionStrides{packed_strides(q_, *layout, head_dim), packed_strides(k_, *layout, head_dim),
                                     packed_strides(v_, *layout, head_dim), packed_strides(o_, *layout, head_dim),
                                     {}, {}, {}};
  };
  dispatch_float(kPackedOp, q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    kernels::cpu::attention_forward<T>(out.data<T>(), lse.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                       layout->mask.data<int64_t>(), /*causal=*/true, scale, layout->shape,
                                       strides(qc, kc, vc, out), data_or_null<T>(probs));
  });
  record(out, kPackedOp, {q, k, v},
         [qc, kc, vc, lse, probs, layout, scale, head_dim, strides, operand](const Tensor& grad,
                                                                              const GradMask& needs) {
           const Tensor g = operand(grad);
           Tensor dq = Tensor::empty(qc.shape(), qc.dtype(), qc.device());
           Tensor dk = Tensor::empty(kc.shape(), kc.dtype(), kc.device());
           Tensor dv = Tensor::empty(vc.shape(), vc.dtype(), vc.device());
           for (Tensor* t : {&dq, &dk, &dv}) zero_filler_rows(*t, layout->covered);
           Tensor delta = Tensor::empty(lse.shape(), lse.dtype(), lse.device());
           kernels::AttentionStrides st = strides(qc, kc, vc, g);
           st.dq = packed_strides(dq, *layout, head_dim);
           st.dk = packed_strides(dk, *layout, head_dim);
           st.dv = packed_strides(dv, *layout, head_dim);
           dispatch_float(kPackedOp, qc.dtype(), [&](auto zero) {
             using T = decltype(zero);
             kernels::cpu::attention_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), delta.data<T>(),
                                                 g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                                                 lse.data<T>(), layout->mask.data<int64_t>(), /*causal=*/true,
                                                 scale, layout->shape, st, data_or_null<T>(probs));
           });
           return std::vector<Tensor>{needs[0] ? dq : Tensor(), needs[1] ? dk : Tensor(),
                                      needs[2] ? dv : Tensor()};
         });
  return out;
}

}  // namespace vlmc
