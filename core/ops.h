// The op API. Each op checks its arguments (throwing vlmc::Error that names
// the op and the shapes), dispatches to kernels::cpu or kernels::cuda by the
// inputs' device, and records its backward beside its forward.
//
// Differentiable float ops accept f32 and f64 (f64 on the CPU, for gradient
// checks); index tensors are i64; masks are u8 (nonzero = true).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/autograd.h"
#include "core/random.h"
#include "core/tensor.h"

namespace vlmc {

// ---- elementwise, broadcasting (core/ops/binary.cpp) --------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);   // a > 0 where b is not an integer
Tensor maximum(const Tensor& a, const Tensor& b);  // ties split the gradient, as PyTorch
Tensor minimum(const Tensor& a, const Tensor& b);

// Scalar variants (core/ops/unary.cpp).
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor rsub(double a, const Tensor& b);  // a - b
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor rdiv(double a, const Tensor& b);  // a / b
Tensor pow(const Tensor& a, double exponent);

// In place, for optimizers and gradient accumulation; never recorded.
// self must be contiguous; other broadcasts to self's shape.
Tensor& add_(Tensor& self, const Tensor& other, double alpha = 1.0);
Tensor& mul_(Tensor& self, double value);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return rsub(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(double a, const Tensor& b) { return rdiv(a, b); }

// ---- unary (core/ops/unary.cpp) -------------------------------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor silu(const Tensor& x);
enum class GeluApprox { none, tanh };  // none = exact erf (PyTorch's default)
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::none);
inline Tensor operator-(const Tensor& x) { return neg(x); }

// ---- reductions (core/ops/reduce.cpp) ---------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> scalar
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
struct MaxResult { Tensor values; Tensor indices; };  // indices i64; first maximum on ties
MaxResult max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // all elements -> scalar
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums a broadcast gradient back down to shape (the backward of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linear algebra (core/ops/linalg.cpp) -----------------------------------------
// Batched, broadcasting as torch.matmul (1-D operands are promoted and squeezed).
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in], weight [out, in] (PyTorch's layout), bias [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- neural-network functions (core/ops/nn.cpp) -----------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Normalizes over the last normalized_shape.size() dims; weight/bias optional.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                double eps = 1e-6);
// weight [num, dim], indices i64 of any shape -> [..., dim].
Tensor embedding(const Tensor& weight, const Tensor& indices);
// logits [N, C], targets i64 [N]; targets equal to ignore_index are skipped and
// the mean is over the kept ones (NaN-free 0 when none is kept... as PyTorch: nan).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// Zeroes each element with probability p (seeded) and scales the rest by 1/(1-p);
// identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
Tensor dropout(const Tensor& x, double p, bool training);

// ---- joining, splitting and indexing (core/ops/index.cpp) ---------------------------
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);  // views
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);  // index i64 1-D
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);        // as torch.gather
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);  // broadcasting
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);    // mask broadcasts to x

// ---- pooling (core/ops/pool.cpp) --------------------------------------------------------
// Channels-last token grids: x [B, H, W, C] -> [B, out_h, out_w, C], with
// nn.AdaptiveAvgPool2d's windows (any sizes, also non-divisible ones).
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);

// ---- top-k token selection (core/ops/topk.cpp) ---------------------------------------
// scores [B, N] f32/f64 -> i64 [B, k]: each row's k best positions in ascending
// position order (the seed's scores.topk(k).indices.sort()). Ranking: higher
// score first; equal scores, the lower position first; NaN above everything
// (as torch.topk); -0 == +0. 1 <= k <= N. Not differentiable.
Tensor topk_indices(const Tensor& scores, int64_t k);
// x [B, N, D] (any dtype), indices i64 [B, k] on x's device or the CPU, each
// row's entries distinct and in [0, N) (as topk_indices gives; checked) ->
// [B, k, D] with out[b, j] = x[b, indices[b, j]]. Backward: scatter into zeros.
Tensor gather_rows(const Tensor& x, const Tensor& indices);

// ---- image-token splice (core/ops/splice.cpp) ------------------------------------------
// LLaVA's prepare_inputs_labels_for_multimodal, right padding.
struct SpliceOptions {
  int64_t image_token_id = -200;
  // true: a sample without a placeholder gets the next image in front of its
  // text (the seed's prepare_inputs); false: it carries no image (LLaVA).
  bool prepend_image_if_missing = false;
  int64_t max_length = 0;  // cap on each sample's spliced length; 0 = none
};
struct SpliceResult {
  Tensor inputs_embeds;   // [B, L, D], zeros on padding, L = the longest sample
  Tensor attention_mask;  // i64 [B, L], 1 on real tokens
  Tensor labels;          // i64 [B, L], -100 at image tokens and padding
  Tensor position_ids;    // i64 [B, L], 0..len-1 per sample, 0 on padding
  int64_t truncated = 0;  // tokens cut by max_length, summed over the batch
  int64_t tokens = 0;     // real (unpadded) positions, summed over the batch: attention_mask's ones,
                          // known on the host without reading the mask back from a device
  int64_t targets = 0;    // labels other than -100 after each sample's first position: the terms a
                          // causal LM loss averages (labels[:, 1:]), known on the host
};
// input_ids i64 [B, T]; embed_table [V, D] f32/f64; visual_tokens [num_images,
// Nv, D] (same dtype and device as the table); labels i64 [B, T] or undefined
// (then every label is -100); text_mask u8/i64 [B, T] (0 = padding, dropped
// first) or undefined. Placeholders are filled in order from the image list
// across the batch; the number of image slots must equal num_images. The
// index tensors may be on the CPU or the table's device. Gradients flow to
// embed_table and visual_tokens.
SpliceResult splice_image_embeddings(const Tensor& input_ids, const Tensor& embed_table,
                                     const Tensor& visual_tokens, const Tensor& labels = Tensor(),
                                     const Tensor& text_mask = Tensor(),
                                     const SpliceOptions& options = SpliceOptions());

// ---- conv + batch norm (core/ops/conv_bn.cpp, kernels/conv_bn.h) ---------------------------
// Channels-last grids: x [B, H, W, Cin] -> [B, Ho, Wo, Cout]; weight [Cout, Cin, kh, kw]
// (PyTorch's layout; kh != kw allowed); bias [Cout] or undefined. As nn.Conv2d with the same
// stride and zero padding on both axes, dilation 1, groups 1.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              int64_t stride = 1, int64_t padding = 0);
// conv2d, then nn.BatchNorm2d (+ exact-erf nn.GELU when apply_gelu), fused. bn_weight and
// bn_bias [Cout] may be undefined (affine=False). training: batch statistics over (B, Ho, Wo)
// with the biased variance; running_mean/running_var [Cout] (same dtype and device) move by
// momentum toward the mean and the unbiased variance, and num_batches_tracked (i64, one
// element, may be undefined) counts; needs B*Ho*Wo > 1. eval: the running statistics.
// The running statistics are updated in place, outside the graph, and get no gradient.
Tensor conv2d_batchnorm(const Tensor& x, const Tensor& weight, const Tensor& conv_bias,
                        const Tensor& bn_weight, const Tensor& bn_bias, Tensor& running_mean,
                        Tensor& running_var, Tensor& num_batches_tracked, bool training,
                        double momentum = 0.1, double eps = 1e-5, bool apply_gelu = false,
                        int64_t stride = 1, int64_t padding = 1);

// ---- fused linear + bias + GELU (core/ops/fused_linear.cpp, kernels/fused_linear.h) -------
// GELU(linear(x, weight, bias)) in one kernel: x [..., in], weight [out, in], bias [out] or
// undefined -> [..., out]. f32/f64 on the CPU; f32/f64 on CUDA (the exact SIMT kernel) and
// bf16 on CUDA (tensor cores, forward only). The backward keeps the pre-activation.
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                   GeluApprox approx = GeluApprox::none);

// ---- rotary positions (core/ops/rotary.cpp, kernels/rotary.h) ----------------------------
// LLaMA's x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]).
// x [B, H, L, D]; cos and sin [B, 1, L, D], constants (no gradient). One fused
// kernel on the CPU (f32, f64; x may be any view whose head dim is contiguous);
// the composed ops otherwise. Returns [B, H, L, D]; the gradient reaches x.
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin);

// ---- SwiGLU (core/ops/swiglu.cpp, kernels/swiglu.h) -------------------------------------
// LLaMA's MLP activation silu(gate) * up. gate and up of one shape [..., I]. One fused
// kernel forward and one backward on the CPU (f32, f64, contiguous operands), keeping
// gate and up for the backward; the composed ops otherwise. Returns [..., I].
Tensor swiglu(const Tensor& gate, const Tensor& up);

// ---- attention (core/ops/attention.cpp, kernels/attention.h) ----------------------------
// One fused op: softmax(q·kᵀ·scale + masks)·v. q [B, Hq, T, Dh]; k, v [B, Hkv, S, Dh]
// with Hq a multiple of Hkv (grouped KV heads: query head h reads KV head h / (Hq/Hkv));
// key_padding_mask [B, S] (u8 or i64, nonzero = attend) or undefined; causal masks key j > query i
// (aligned at the end when S > T: key j is visible to query i when j <= i + S - T); scale
// defaults to 1/sqrt(Dh). Softmax statistics in f32 or wider. A query row whose keys are all
// masked yields zeros. Returns [B, Hq, T, Dh]; gradients to q, k and v.
// trailing_queries_unread: the caller reads no output row after a batch's last unmasked key
// (query i aligned with key i + S - T) and its gradient there is zero (a packed language
// model's right padding); the CPU kernels then skip those rows, whose values are unspecified
// (zeros on the CPU).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_padding_mask = Tensor(), bool causal = false,
                                    std::optional<double> scale = std::nullopt, bool trailing_queries_unread = false);

// Whether the CPU's fused attention keeps P [B, Hq, T, S] for the backward when a
// gradient is coming (kernels/attention.h, probs): for rows of at most Dh keys, where
// P costs no more memory than q. train/memory_plan.cpp counts P by it.
constexpr bool attention_keeps_probs(int64_t kv_len, int64_t head_dim) { return kv_len <= head_dim; }

// The same causal attention over right-padded samples whose real rows are packed: q [N, Hq·Dh],
// k and v [N, Hkv·Dh] hold sample b's lengths[b] rows from row Σ_{c<b} lengths[c], in order, and
// rows past Σ lengths[b] are filler. Equals scaled_dot_product_attention(causal) over the padded
// [B, H, length, Dh] heads with the key mask of the lengths and trailing_queries_unread, at the
// real rows, without moving rows between the layouts. Returns [N, Hq·Dh], zeros at the filler
// rows (whose gradients are zero too); scale 1/sqrt(Dh). CPU, f32 and f64.
Tensor scaled_dot_product_attention_packed(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const std::vector<int64_t>& lengths, int64_t length, int64_t q_heads,
                                           int64_t kv_heads);

}  // namespace vlmc
