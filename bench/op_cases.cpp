#include "bench/op_cases.h"

#include <cmath>
#include <cstdint>

#include "core/ops.h"

namespace vlmc::bench {
namespace {

using Kind = InputSpec::Kind;
using Inputs = std::vector<Tensor>;

InputSpec normal(Shape s) { return {std::move(s), Kind::normal, 0}; }
InputSpec positive(Shape s) { return {std::move(s), Kind::positive, 0}; }
InputSpec index(Shape s, int64_t bound) { return {std::move(s), Kind::index, bound}; }
InputSpec mask(Shape s) { return {std::move(s), Kind::mask, 0}; }

std::vector<OpCase> build() {
  std::vector<OpCase> t;
  auto add = [&](std::string name, std::vector<InputSpec> in, std::function<Tensor(const Inputs&)> fn) {
    t.push_back({std::move(name), std::move(in), std::move(fn)});
  };

  // ---- elementwise, broadcasting --------------------------------------------------
  add("add/broadcast", {normal({3, 1, 5}), normal({4, 5})}, [](const Inputs& x) { return x[0] + x[1]; });
  add("sub/broadcast", {normal({2, 7}), normal({7})}, [](const Inputs& x) { return x[0] - x[1]; });
  add("mul/broadcast", {normal({3, 1}), normal({1, 6})}, [](const Inputs& x) { return x[0] * x[1]; });
  add("div/broadcast", {normal({4, 6}), positive({6})}, [](const Inputs& x) { return x[0] / x[1]; });
  add("pow/tensor-exponent", {positive({5, 3}), normal({5, 3})}, [](const Inputs& x) { return pow(x[0], x[1]); });
  add("maximum", {normal({6, 4}), normal({6, 4})}, [](const Inputs& x) { return maximum(x[0], x[1]); });
  add("minimum/broadcast", {normal({6, 4}), normal({4})}, [](const Inputs& x) { return minimum(x[0], x[1]); });
  add("rdiv/scalar", {positive({9})}, [](const Inputs& x) { return 2.0 / x[0]; });
  add("pow/scalar", {positive({3, 4})}, [](const Inputs& x) { return pow(x[0], 1.5); });

  // ---- unary ---------------------------------------------------------------------
  add("exp", {normal({4, 5})}, [](const Inputs& x) { return exp(x[0]); });
  add("log", {positive({4, 5})}, [](const Inputs& x) { return log(x[0]); });
  add("sqrt", {positive({4, 5})}, [](const Inputs& x) { return sqrt(x[0]); });
  add("rsqrt", {positive({4, 5})}, [](const Inputs& x) { return rsqrt(x[0]); });
  add("abs", {normal({4, 5})}, [](const Inputs& x) { return abs(x[0]); });
  add("tanh", {normal({4, 5})}, [](const Inputs& x) { return tanh(x[0]); });
  add("sigmoid", {normal({4, 5})}, [](const Inputs& x) { return sigmoid(x[0]); });
  add("relu", {normal({4, 5})}, [](const Inputs& x) { return relu(x[0]); });
  add("silu", {normal({4, 5})}, [](const Inputs& x) { return silu(x[0]); });
  add("gelu/erf", {normal({4, 5})}, [](const Inputs& x) { return gelu(x[0]); });
  add("gelu/tanh", {normal({4, 5})}, [](const Inputs& x) { return gelu(x[0], GeluApprox::tanh); });
  add("swiglu", {normal({4, 6}), normal({4, 6})}, [](const Inputs& x) { return swiglu(x[0], x[1]); });
  add("swiglu/views", {normal({6, 4}), normal({4, 6})},
      [](const Inputs& x) { return swiglu(x[0].transpose(0, 1), x[1]); });  // the composed form

  // ---- reductions ------------------------------------------------------------------
  add("sum/all", {normal({3, 4, 5})}, [](const Inputs& x) { return sum(x[0]); });
  add("sum/dims-keepdim", {normal({3, 4, 5})}, [](const Inputs& x) { return sum(x[0], {0, 2}, true); });
  add("mean/dim", {normal({3, 4, 5})}, [](const Inputs& x) { return mean(x[0], {1}); });
  add("max/dim", {normal({3, 7})}, [](const Inputs& x) { return max(x[0], 1).values; });

  // ---- linear algebra ----------------------------------------------------------------
  add("matmul/2d", {normal({5, 7}), normal({7, 3})}, [](const Inputs& x) { return matmul(x[0], x[1]); });
  add("matmul/broadcast-batch", {normal({2, 3, 4, 5}), normal({5, 6})},
      [](const Inputs& x) { return matmul(x[0], x[1]); });
  add("linear/bias", {normal({2, 3, 6}), normal({4, 6}), normal({4})},
      [](const Inputs& x) { return linear(x[0], x[1], x[2]); });
  add("linear_gelu/bias", {normal({7, 13}), normal({9, 13}), normal({9})},
      [](const Inputs& x) { return linear_gelu(x[0], x[1], x[2]); });

  // ---- neural-network functions --------------------------------------------------------
  add("softmax/dim-1", {normal({3, 8})}, [](const Inputs& x) { return softmax(x[0], -1); });
  add("log_softmax/dim-0", {normal({5, 4})}, [](const Inputs& x) { return log_softmax(x[0], 0); });
  add("layer_norm/affine", {normal({4, 6}), normal({6}), normal({6})},
      [](const Inputs& x) { return layer_norm(x[0], {6}, x[1], x[2]); });
  add("rms_norm/weight", {normal({4, 6}), normal({6})},
      [](const Inputs& x) { return rms_norm(x[0], {6}, x[1]); });
  add("embedding", {normal({10, 4}), index({2, 3}, 10)}, [](const Inputs& x) { return embedding(x[0], x[1]); });
  add("cross_entropy", {normal({6, 5}), index({6}, 5)}, [](const Inputs& x) { return cross_entropy(x[0], x[1]); });
  // Rotary positions on the [B, H, L, D] view of a [B, L, H, D] projection, as
  // LlamaAttention applies them, and on a plain tensor; fixed tables [B, 1, L, D].
  const auto rotary = [](const Tensor& x) {
    const int64_t B = x.size(0), L = x.size(2), D = x.size(3);
    std::vector<double> c(static_cast<size_t>(B * L * D)), s(c.size());
    for (int64_t i = 0; i < B * L * D; ++i) {
      c[static_cast<size_t>(i)] = std::cos(0.37 * static_cast<double>(i));
      s[static_cast<size_t>(i)] = std::sin(0.37 * static_cast<double>(i));
    }
    const Tensor cos = Tensor::from_vector(c, {B, 1, L, D}).to(x.device(), x.dtype());
    const Tensor sin = Tensor::from_vector(s, {B, 1, L, D}).to(x.device(), x.dtype());
    return rotary_embedding(x, cos, sin);
  };
  add("rotary_embedding/heads-view", {normal({2, 5, 3, 4})},
      [rotary](const Inputs& x) { return rotary(x[0].transpose(1, 2)); });
  add("rotary_embedding/contiguous", {normal({2, 3, 5, 6})}, [rotary](const Inputs& x) { return rotary(x[0]); });
  add("scaled_dot_product_attention/causal-gqa", {normal({2, 4, 5, 3}), normal({2, 2, 5, 3}), normal({2, 2, 5, 3})},
      [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), true); });

  // ---- joining and indexing ------------------------------------------------------------
  add("cat/dim-1", {normal({2, 3}), normal({2, 4})}, [](const Inputs& x) { return cat({x[0], x[1]}, 1); });
  add("index_select/dim-0", {normal({6, 3}), index({4}, 6)},
      [](const Inputs& x) { return index_select(x[0], 0, x[1]); });
  add("gather/dim-1", {normal({3, 5}), index({3, 4}, 5)}, [](const Inputs& x) { return gather(x[0], 1, x[1]); });
  add("where/broadcast", {mask({4, 1}), normal({4, 3}), normal({3})},
      [](const Inputs& x) { return where(x[0], x[1], x[2]); });
  add("masked_fill", {normal({4, 3}), mask({4, 3})}, [](const Inputs& x) { return masked_fill(x[0], x[1], -2.0); });

  // ---- grids -------------------------------------------------------------------------
  add("adaptive_avg_pool2d/uneven", {normal({2, 5, 7, 3})},
      [](const Inputs& x) { return adaptive_avg_pool2d(x[0], 3, 2); });
  add("conv2d/stride-2-pad-1", {normal({2, 5, 5, 3}), normal({4, 3, 3, 3}), normal({4})},
      [](const Inputs& x) { return conv2d(x[0], x[1], x[2], 2, 1); });
  return t;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> table = build();
  return table;
}

std::vector<Tensor> make_inputs(const OpCase& c, DType float_dtype, uint64_t seed) {
  std::vector<Tensor> out;
  Generator gen(seed);
  for (const InputSpec& in : c.inputs) {
    Tensor t;
    switch (in.kind) {
      case Kind::normal: t = Tensor::randn(in.shape, gen, float_dtype); break;
      case Kind::positive: t = Tensor::uniform(in.shape, 0.5, 1.5, gen, float_dtype); break;
      case Kind::index: {
        std::vector<int64_t> v;
        for (const double u : Tensor::rand(in.shape, gen, DType::f64).to_vector<double>())
          v.push_back(static_cast<int64_t>(u * static_cast<double>(in.bound)));  // u < 1: below bound
        t = Tensor::from_vector(v, in.shape);
        break;
      }
      case Kind::mask: {
        std::vector<uint8_t> v;
        for (const double u : Tensor::rand(in.shape, gen, DType::f64).to_vector<double>()) v.push_back(u < 0.5);
        t = Tensor::from_vector(v, in.shape);
        break;
      }
    }
    const bool floating = in.kind == Kind::normal || in.kind == Kind::positive;
    if (c.gradient && floating) t.set_requires_grad(true);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace vlmc::bench
