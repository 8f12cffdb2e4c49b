// scaled_dot_product_attention forward + backward on the CPU, at the shapes the
// main job and LLaVA decoding run, against the same attention composed of
// products (matmul, additive mask, softmax, matmul: transformers' "eager"
// attention, written with vlmc's own ops) in the same run.
//
// Shapes:
//   stage-0 language model   B=32 H=4  T=S=26  Dh=32, causal, a key mask (6 samples padded)
//   stage-0 encoder          B=64 H=4  T=S=17  Dh=32
//   LLaVA prefill (one head group of TinyLlama's sizes)  B=1 H=32 T=S=512 Dh=64, causal
// --quick: the first shape at B=4 (every row kind, validated, timed once).
//
// Each version's output and its q, k, v gradients are validated against the
// fused op in f64 (relative error in norm <= 1e-4) before it is timed. GFLOP/s
// count the multiply-adds of the visible (query, key) pairs: two products
// forward (QKᵀ, P·V) and five backward (QKᵀ again, dO·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dO);
// the ceiling is sgemm (OpenBLAS) at [B·T, Dh] x [Dh, S], measured now.
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/autograd.h"
#include "core/ops.h"

using namespace vlmc;

namespace {

struct Case {
  const char* name;
  int64_t batch, heads, len, dim;
  bool causal;
  int64_t padded_samples;  // samples whose last (b % 7) keys are padding
};

// The products form: softmax(q·kᵀ·scale + bias)·v, bias 0 or -1e30 ([B, 1, T, S]).
Tensor by_products(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  Tensor scores = matmul(q, k.transpose(2, 3)) * scale;
  if (bias.defined()) scores = scores + bias;
  return matmul(softmax(scores, -1), v);
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_attention [--threads N] [--repeats N] [--json PATH] [--quick]", flags))
      return 0;
    if (!flags.rest.empty()) throw std::runtime_error("unknown flag '" + flags.rest[0] + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 2;
  }
  bench::Report report("scaled_dot_product_attention forward + backward (CPU)");
  std::vector<Case> shapes = {{"stage-0 language model", 32, 4, 26, 32, true, 32},
                               {"stage-0 encoder", 64, 4, 17, 32, false, 0},
                               {"prefill", 1, 32, 512, 64, true, 0}};
  if (flags.quick) shapes = {{"stage-0 language model", 4, 4, 26, 32, true, 4}};
  Generator gen(5);
  for (const Case& sh : shapes) {
    const int64_t B = sh.batch, H = sh.heads, T = sh.len, D = sh.dim;
    std::vector<uint8_t> keep(static_cast<size_t>(B * T), 1);
    for (int64_t b = 0; b < sh.padded_samples; ++b)
      for (int64_t j = T - b % 7; j < T; ++j) keep[static_cast<size_t>(b * T + j)] = 0;
    const Tensor mask = sh.padded_samples > 0 ? Tensor::from_vector(keep, {B, T}) : Tensor();
    // The products form's additive bias: masked keys and the causal future.
    std::vector<double> bias_v(static_cast<size_t>(B * T * T), 0.0);
    double visible_pairs = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          const bool hidden = keep[static_cast<size_t>(b * T + j)] == 0 || (sh.causal && j > i);
          bias_v[static_cast<size_t>((b * T + i) * T + j)] = hidden ? -1e30 : 0.0;
          visible_pairs += hidden ? 0 : 1;
        }
    const Tensor bias = Tensor::from_vector(bias_v, {B, 1, T, T});
    const Tensor q64 = Tensor::randn({B, H, T, D}, gen, DType::f64), k64 = Tensor::randn({B, H, T, D}, gen, DType::f64),
                 v64 = Tensor::randn({B, H, T, D}, gen, DType::f64), w64 = Tensor::randn({B, H, T, D}, gen, DType::f64);
    const double flops = 2.0 * 7 * visible_pairs * H * D;
    const double ceiling = bench::host_sgemm_gflops(B * T, T, D);
    const std::string shape_name = std::string(sh.name) + ": B=" + std::to_string(B) + " H=" + std::to_string(H) +
                                   " T=S=" + std::to_string(T) + " Dh=" + std::to_string(D) +
                                   (sh.causal ? " causal" : "") + (mask.defined() ? " key mask" : "");

    // One forward + backward of a version on leaves of dtype t; returns y, dq, dk, dv.
    using Attention = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;
    const auto step = [&](const Attention& attend, DType t) {
      Tensor q = q64.to(t).set_requires_grad(true), k = k64.to(t).set_requires_grad(true),
             v = v64.to(t).set_requires_grad(true);
      const Tensor y = attend(q, k, v);
      sum(y * w64.to(t)).backward();
      return std::vector<Tensor>{y, q.grad(), k.grad(), v.grad()};
    };
    const Attention fused = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
      return scaled_dot_product_attention(q, k, v, mask, sh.causal);
    };
    const std::vector<Tensor> reference = step(fused, DType::f64);
    const std::vector<std::pair<const char*, Attention>> versions = {
        {"vlmc fused kernel", fused},
        {"vlmc products (matmul, softmax, matmul)",
         [&](const Tensor& q, const Tensor& k, const Tensor& v) {
           return by_products(q, k, v, bias.to(q.dtype()));
         }}};
    for (const auto& [name, attend] : versions) {
      bench::Row row;
      row.kernel = "attention";
      row.version = name;
      row.device = "cpu";
      row.shape = shape_name;
      const std::vector<Tensor> got = step(attend, DType::f32);
      for (size_t i = 0; i < got.size(); ++i) row.max_rel_error = std::max(row.max_rel_error, bench::rel_error(got[i], reference[i]));
      row.valid = row.max_rel_error <= 1e-4;
      if (row.valid) {
        // Leaves made once; each repeat is a forward and a backward from fresh grads.
        Tensor q = q64.to(DType::f32).set_requires_grad(true), k = k64.to(DType::f32).set_requires_grad(true),
               v = v64.to(DType::f32).set_requires_grad(true);
        const Tensor w = w64.to(DType::f32);
        row.timing = bench::time_host(
            [&] {
              q.set_grad(Tensor());
              k.set_grad(Tensor());
              v.set_grad(Tensor());
              sum(attend(q, k, v) * w).backward();
            },
            flags.warmup(2), flags.repeats);
        row.gflops = flops / (row.timing.median_ms * 1e-3) / 1e9;
        row.ceiling = ceiling;
        row.ceiling_name = "sgemm GFLOP/s at [B·T, Dh] x [Dh, S]";
      }
      report.add(row);
    }
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_attention");
}
