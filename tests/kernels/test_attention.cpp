// scaled_dot_product_attention (core/ops/attention.cpp, kernels/attention.h).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/autocast.h"
#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "kernels/attention.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;

namespace {

// Unfused reference from existing ops: softmax(q·kᵀ·scale + additive mask)·v with the KV
// heads repeated. hidden_bias [T, S] or [B, 1, 1, S] holds 0 or -1e30 (f64).
Tensor unfused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  const int64_t group = q.size(1) / k.size(1);
  Tensor kk = k, vv = v;
  if (group > 1) {
    std::vector<Tensor> ks, vs;
    for (int64_t h = 0; h < k.size(1); ++h)
      for (int64_t r = 0; r < group; ++r) {
        ks.push_back(k.narrow(1, h, 1));
        vs.push_back(v.narrow(1, h, 1));
      }
    kk = cat(ks, 1);
    vv = cat(vs, 1);
  }
  Tensor scores = matmul(q, kk.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(q.size(3))));
  if (bias.defined()) scores = scores + bias;
  return matmul(softmax(scores, -1), vv);
}

}  // namespace

TEST_CASE("scaled_dot_product_attention on a hand-checked example", "[attention]") {
  // One head, T = 1, S = 2, Dh = 1, scale 1: scores (1·1, 1·2) = (1, 2),
  // p = (1, e)/(1 + e), out = p·(10, 20).
  const Tensor q = Tensor::from_vector(std::vector<double>{1}, {1, 1, 1, 1});
  const Tensor k = Tensor::from_vector(std::vector<double>{1, 2}, {1, 1, 2, 1});
  const Tensor v = Tensor::from_vector(std::vector<double>{10, 20}, {1, 1, 2, 1});
  const double e = std::exp(1.0);
  CHECK(scaled_dot_product_attention(q, k, v, Tensor(), false, 1.0).to_vector<double>()[0] ==
        Approx((10 + 20 * e) / (1 + e)).epsilon(1e-14));
  // Masking key 1 leaves key 0 alone; the default scale 1/sqrt(1) is 1 too.
  const Tensor m = Tensor::from_vector(std::vector<uint8_t>{1, 0}, {1, 2});
  CHECK(scaled_dot_product_attention(q, k, v, m).to_vector<double>()[0] == Approx(10).epsilon(1e-14));
  // Causal with T = 1 < S = 2 is end-aligned: the single query sees both keys.
  CHECK(scaled_dot_product_attention(q, k, v, Tensor(), true, 1.0).to_vector<double>()[0] ==
        Approx((10 + 20 * e) / (1 + e)).epsilon(1e-14));
}

TEST_CASE("scaled_dot_product_attention matches the unfused composition", "[attention]") {
  const Tensor q = test::leaf({2, 4, 5, 3}, 1), k = test::leaf({2, 2, 7, 3}, 2), v = test::leaf({2, 2, 7, 3}, 3);
  CHECK_REL(scaled_dot_product_attention(q, k, v), unfused(q, k, v, Tensor()), 1e-12);
  // Causal, end-aligned: key j hidden from query i when j > i + 2.
  std::vector<double> bias(5 * 7, 0.0);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 7; ++j)
      if (j > i + 2) bias[static_cast<size_t>(i * 7 + j)] = -1e30;
  CHECK_REL(scaled_dot_product_attention(q, k, v, Tensor(), true),
            unfused(q, k, v, Tensor::from_vector(bias, {5, 7})), 1e-12);
}

TEST_CASE("scaled_dot_product_attention matches the unfused composition at every key tiling", "[attention]") {
  // The CPU kernel's score tiles (kernels/cpu/head_products.h): 16-key blocks, an 8-key
  // tail (8 rows at a time), rows left over in 4s and 1s; keys 8, 9, 16, 17 (the encoder),
  // 26 (the language model), 33 with more keys than queries. Values and all three
  // gradients, in f64, causal and not.
  for (const auto& [T, S] : std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {9, 9}, {16, 16}, {17, 17}, {26, 26},
                                                                    {13, 33}, {3, 25}}) {
    for (const bool causal : {false, true}) {
      INFO("T " << T << " S " << S << (causal ? " causal" : ""));
      Generator gen(static_cast<uint64_t>(T * 100 + S));
      const Tensor q0 = Tensor::randn({2, 2, T, 32}, gen, DType::f64);
      const Tensor k0 = Tensor::randn({2, 2, S, 32}, gen, DType::f64), v0 = Tensor::randn({2, 2, S, 32}, gen, DType::f64);
      const Tensor w = Tensor::randn({2, 2, T, 32}, gen, DType::f64);
      std::vector<double> bias(static_cast<size_t>(T * S), 0.0);
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < S; ++j)
          if (causal && j > i + S - T) bias[static_cast<size_t>(i * S + j)] = -1e30;
      auto run = [&](bool fused) {
        Tensor q = q0.detach().set_requires_grad(true), k = k0.detach().set_requires_grad(true),
               v = v0.detach().set_requires_grad(true);
        const Tensor y = fused ? scaled_dot_product_attention(q, k, v, Tensor(), causal)
                               : unfused(q, k, v, Tensor::from_vector(bias, {T, S}));
        sum(y * w).backward();
        return std::vector<Tensor>{y, q.grad(), k.grad(), v.grad()};
      };
      const std::vector<Tensor> got = run(true), want = run(false);
      for (size_t i = 0; i < got.size(); ++i) {
        INFO("output " << i << " (y, dq, dk, dv)");
        CHECK_REL(got[i], want[i], 1e-12);
      }
    }
  }
}

TEST_CASE("scaled_dot_product_attention_packed equals the padded op at the real rows, with zero filler rows",
          "[attention]") {
  // Four right-padded samples of length 7 (one empty), packed in order, then 3 filler rows;
  // grouped KV heads. The padded path gathers the same leaves into [B, H, 7, Dh] heads and
  // the real rows back out, so both paths' gradients land on the same packed leaves.
  const std::vector<int64_t> lengths{5, 0, 7, 3};
  const int64_t B = 4, L = 7, Hq = 4, Hkv = 2, Dh = 8, covered = 15, N = covered + 3;
  Generator gen(33);
  for (const DType t : {DType::f64, DType::f32}) {
    INFO(dtype_name(t));
    const Tensor q0 = Tensor::randn({N, Hq * Dh}, gen, t), k0 = Tensor::randn({N, Hkv * Dh}, gen, t),
                 v0 = Tensor::randn({N, Hkv * Dh}, gen, t);
    const Tensor w = cat({Tensor::randn({covered, Hq * Dh}, gen, t), Tensor::zeros({N - covered, Hq * Dh}, t)}, 0);
    std::vector<int64_t> to_padded(static_cast<size_t>(B * L), N - 1), real_positions, keep(static_cast<size_t>(B * L), 0);
    for (int64_t b = 0, row = 0; b < B; ++b)
      for (int64_t i = 0; i < lengths[static_cast<size_t>(b)]; ++i, ++row) {
        to_padded[static_cast<size_t>(b * L + i)] = row;
        real_positions.push_back(b * L + i);
        keep[static_cast<size_t>(b * L + i)] = 1;
      }
    const Tensor gather = Tensor::from_vector(to_padded, {B * L}), real = Tensor::from_vector(real_positions, {covered});
    const Tensor mask = Tensor::from_vector(keep, {B, L});
    auto run = [&](bool packed) {
      Tensor q = q0.detach().set_requires_grad(true), k = k0.detach().set_requires_grad(true),
             v = v0.detach().set_requires_grad(true);
      Tensor out;  // [covered or N, Hq·Dh]
      if (packed) {
        out = scaled_dot_product_attention_packed(q, k, v, lengths, L, Hq, Hkv);
      } else {
        auto heads = [&](const Tensor& x, int64_t h) {
          return index_select(x, 0, gather).view({B, L, h, Dh}).transpose(1, 2);
        };
        const Tensor o = scaled_dot_product_attention(heads(q, Hq), heads(k, Hkv), heads(v, Hkv), mask, true,
                                                      std::nullopt, true);
        out = index_select(o.transpose(1, 2).reshape({B * L, Hq * Dh}), 0, real);
      }
      sum(out * w.narrow(0, 0, out.size(0))).backward();
      return std::vector<Tensor>{out, q.grad(), k.grad(), v.grad()};
    };
    const std::vector<Tensor> packed = run(true), padded = run(false);
    const double tol = t == DType::f64 ? 1e-12 : 1e-6;
    CHECK_REL(packed[0].narrow(0, 0, covered), padded[0], tol);
    CHECK(test::max_abs_error(packed[0].narrow(0, covered, N - covered), Tensor::zeros({N - covered, Hq * Dh}, t)) ==
          0.0);
    for (size_t i = 1; i < 4; ++i) {
      INFO("gradient " << i << " (dq, dk, dv)");
      CHECK_REL(packed[i], padded[i], tol);
      CHECK(test::max_abs_error(packed[i].narrow(0, covered, N - covered),
                                Tensor::zeros({N - covered, packed[i].size(1)}, t)) == 0.0);
    }
  }
  // Refused by name: a length past the padded length, more rows than q holds, GPU-only shapes.
  const Tensor q = Tensor::zeros({6, 8}), kv = Tensor::zeros({6, 8});
  REQUIRE_THROWS_WITH(scaled_dot_product_attention_packed(q, kv, kv, {3, 8}, 7, 1, 1),
                      Catch::Contains("sample 1 has length 8, outside [0, 7]"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention_packed(q, kv, kv, {4, 4}, 7, 1, 1),
                      Catch::Contains("the lengths add up to 8 rows, but q has 6"));
}

TEST_CASE("scaled_dot_product_attention matches PyTorch's golden values and gradients", "[attention]") {
  const test::GoldenFile golden = test::load_golden("attention");
  const auto& tensors = golden.tensors;
  int cases = 0;
  for (const auto& [name, args] : golden.cases) {
    INFO("case " << name);
    REQUIRE(args.at("op") == "sdpa");
    const bool causal = args.at("causal").get<bool>();
    auto leaf = [&](const std::string& in) {
      Tensor t = tensors.at(name + ".in." + in).clone();
      t.set_requires_grad(true);
      return t;
    };
    Tensor q = leaf("q"), k = leaf("k"), v = leaf("v");
    const auto mit = tensors.find(name + ".in.mask");
    const Tensor mask = mit == tensors.end() ? Tensor() : mit->second;
    const Tensor y = scaled_dot_product_attention(q, k, v, mask, causal);
    CHECK_REL(y, tensors.at(name + ".out"), 1e-5);
    sum(y * tensors.at(name + ".proj")).backward();
    CHECK_REL(q.grad(), tensors.at(name + ".grad.q"), 1e-5);
    CHECK_REL(k.grad(), tensors.at(name + ".grad.k"), 1e-5);
    CHECK_REL(v.grad(), tensors.at(name + ".grad.v"), 1e-5);
    ++cases;
  }
  CHECK(cases == 8);
}

TEST_CASE("scaled_dot_product_attention f64 gradients by finite differences", "[attention]") {
  const auto sdpa = [](const Tensor& mask, bool causal, std::optional<double> scale = std::nullopt) {
    return [=](const std::vector<Tensor>& in) {
      return scaled_dot_product_attention(in[0], in[1], in[2], mask, causal, scale);
    };
  };
  // Plain, causal T = S, causal S > T.
  CHECK_GRADIENTS(sdpa(Tensor(), false), {test::leaf({2, 2, 4, 3}, 1), test::leaf({2, 2, 6, 3}, 2),
                                          test::leaf({2, 2, 6, 3}, 3)});
  CHECK_GRADIENTS(sdpa(Tensor(), true), {test::leaf({1, 2, 5, 4}, 4), test::leaf({1, 2, 5, 4}, 5),
                                         test::leaf({1, 2, 5, 4}, 6)});
  CHECK_GRADIENTS(sdpa(Tensor(), true, 0.7), {test::leaf({1, 1, 3, 2}, 7), test::leaf({1, 1, 7, 2}, 8),
                                              test::leaf({1, 1, 7, 2}, 9)});
  // Padding mask (i64) with grouped KV heads (Hq = 4, Hkv = 2), odd sizes.
  const Tensor mask = Tensor::from_vector(std::vector<int64_t>{1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1}, {2, 7});
  CHECK_GRADIENTS(sdpa(mask, false), {test::leaf({2, 4, 5, 3}, 10), test::leaf({2, 2, 7, 3}, 11),
                                      test::leaf({2, 2, 7, 3}, 12)});
  // Non-contiguous q (a transposed [B, T, H, Dh] leaf) and k (a narrow).
  CHECK_GRADIENTS(
      [](const std::vector<Tensor>& in) {
        return scaled_dot_product_attention(in[0].transpose(1, 2), in[1].narrow(2, 1, 4), in[2], Tensor(), true);
      },
      {test::leaf({1, 3, 2, 4}, 13), test::leaf({1, 2, 5, 4}, 14), test::leaf({1, 2, 4, 4}, 15)});
}

TEST_CASE("scaled_dot_product_attention: fully masked rows give zeros and zero gradients", "[attention]") {
  Tensor q = test::leaf({2, 2, 3, 4}, 21), k = test::leaf({2, 1, 4, 4}, 22), v = test::leaf({2, 1, 4, 4}, 23);
  // Sample 1 masks every key; with causal and S > T the rest still works.
  const Tensor mask = Tensor::from_vector(std::vector<uint8_t>{1, 1, 0, 1, 0, 0, 0, 0}, {2, 4});
  const Tensor y = scaled_dot_product_attention(q, k, v, mask, true);
  sum(y * Tensor::full(y.shape(), 1.5, DType::f64)).backward();
  const std::vector<double> yv = y.to_vector<double>();
  const std::vector<double> gq = q.grad().to_vector<double>(), gk = k.grad().to_vector<double>(),
                            gv = v.grad().to_vector<double>();
  for (const auto& vec : {yv, gq, gk, gv}) {
    const size_t half = vec.size() / 2;
    for (size_t i = half; i < vec.size(); ++i) REQUIRE(vec[i] == 0.0);  // sample 1: exactly zero
    for (size_t i = 0; i < half; ++i) REQUIRE(std::isfinite(vec[i]));
  }
  // Masked keys of sample 0 get no gradient.
  for (int64_t d = 0; d < 4; ++d) {
    CHECK(gk[static_cast<size_t>(2 * 4 + d)] == 0.0);
    CHECK(gv[static_cast<size_t>(2 * 4 + d)] == 0.0);
  }
  // Causal with S < T: the first query rows see no key.
  const Tensor y2 = scaled_dot_product_attention(test::leaf({1, 1, 4, 2}, 24), test::leaf({1, 1, 2, 2}, 25),
                                                 test::leaf({1, 1, 2, 2}, 26), Tensor(), true);
  const std::vector<double> y2v = y2.to_vector<double>();
  for (size_t i = 0; i < 4; ++i) CHECK(y2v[i] == 0.0);  // rows 0 and 1
  CHECK(std::isfinite(y2v[4]));
  CHECK(y2v[4] != 0.0);
}

TEST_CASE("scaled_dot_product_attention f32 agrees with f64", "[attention]") {
  Generator gen(31);
  const Tensor q = Tensor::randn({2, 4, 33, 16}, gen, DType::f64), k = Tensor::randn({2, 2, 40, 16}, gen, DType::f64),
               v = Tensor::randn({2, 2, 40, 16}, gen, DType::f64);
  CHECK_REL(scaled_dot_product_attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), Tensor(), true),
            scaled_dot_product_attention(q, k, v, Tensor(), true), 1e-6);
}

TEST_CASE("scaled_dot_product_attention f32 gradients agree with f64, on and off the CPU kernel's tiles",
          "[attention]") {
  // Head dims 32 and 64 fill the register tiles (kernels/cpu/head_products.h); 36 adds a
  // tail, 4 has only the tail. 2 query rows take dot products, 6 a transposed head, 40
  // two blocks of rows. Grouped KV heads, a key mask, causal with S > T.
  for (const auto& [T, S, D] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {2, 9, 32}, {6, 6, 4}, {6, 11, 36}, {40, 40, 32}, {40, 45, 64}}) {
    INFO("T " << T << " S " << S << " D " << D);
    Generator gen(static_cast<uint64_t>(T * 100 + D));
    const Tensor q64 = Tensor::randn({2, 4, T, D}, gen, DType::f64), k64 = Tensor::randn({2, 2, S, D}, gen, DType::f64),
                 v64 = Tensor::randn({2, 2, S, D}, gen, DType::f64), w64 = Tensor::randn({2, 4, T, D}, gen, DType::f64);
    std::vector<uint8_t> keep(static_cast<size_t>(2 * S), 1);
    keep[1] = 0;
    keep[static_cast<size_t>(S + S - 1)] = 0;
    const Tensor mask = Tensor::from_vector(keep, {2, S});
    auto run = [&](DType t) {
      Tensor q = q64.to(t).set_requires_grad(true), k = k64.to(t).set_requires_grad(true),
             v = v64.to(t).set_requires_grad(true);
      const Tensor y = scaled_dot_product_attention(q, k, v, mask, true);
      sum(y * w64.to(t)).backward();
      return std::vector<Tensor>{y, q.grad(), k.grad(), v.grad()};
    };
    const std::vector<Tensor> f32 = run(DType::f32), f64 = run(DType::f64);
    for (size_t i = 0; i < f32.size(); ++i) {
      INFO("output " << i << " (y, dq, dk, dv)");
      CHECK_REL(f32[i].to(DType::f64), f64[i], 1e-5);
    }
  }
}

TEST_CASE("scaled_dot_product_attention: a key mask of ones gives the bits of no mask", "[attention]") {
  // LLaMA's default mask is no mask (tests/modules/test_llama.cpp relies on this).
  for (const auto& [T, D] : std::vector<std::pair<int64_t, int64_t>>{{2, 4}, {6, 4}, {6, 36}, {40, 32}}) {
    INFO("T " << T << " D " << D);
    Generator gen(static_cast<uint64_t>(T + D));
    const Tensor q0 = Tensor::randn({2, 2, T, D}, gen), k0 = Tensor::randn({2, 2, T, D}, gen),
                 v0 = Tensor::randn({2, 2, T, D}, gen), w = Tensor::randn({2, 2, T, D}, gen);
    auto run = [&](const Tensor& mask) {
      Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
             v = v0.clone().set_requires_grad(true);
      const Tensor y = scaled_dot_product_attention(q, k, v, mask, true);
      sum(y * w).backward();
      return std::vector<std::vector<float>>{y.to_vector<float>(), q.grad().to_vector<float>(),
                                             k.grad().to_vector<float>(), v.grad().to_vector<float>()};
    };
    const auto none = run(Tensor()), ones = run(Tensor::ones({2, T}, DType::u8));
    for (size_t i = 0; i < none.size(); ++i) {
      INFO("output " << i << " (y, dq, dk, dv)");
      CHECK(none[i] == ones[i]);
    }
  }
}

TEMPLATE_TEST_CASE("attention's saved probabilities give the bits of the recomputed ones", "[attention]", float,
                   double) {
  // The CPU kernels called directly, with and without probs: the forward's outputs and
  // the backward's gradients must not differ in a bit. Shapes: one block of 17 rows
  // (the encoder's), causal over two blocks with more keys than queries, grouped KV
  // heads, a block of fewer rows than the transposed path's minimum (3), a key mask
  // with a fully masked batch, and trailing queries unread.
  struct Case {
    int64_t B, Hq, Hkv, T, S, D;
    bool causal, masked, unread;
  };
  for (const Case c : {Case{3, 4, 4, 17, 17, 32, false, false, false}, Case{2, 4, 2, 37, 45, 16, true, false, false},
                       Case{2, 2, 1, 3, 5, 8, true, false, false}, Case{3, 2, 2, 20, 20, 12, true, true, true},
                       Case{2, 2, 2, 9, 9, 4, false, true, false}}) {
    INFO("B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " T " << c.T << " S " << c.S << " D " << c.D
              << " causal " << c.causal << " masked " << c.masked << " unread " << c.unread);
    const kernels::AttentionShape s{c.B, c.Hq, c.Hkv, c.T, c.S, c.D, c.unread};
    const kernels::AttentionStrides st = kernels::AttentionStrides::contiguous(s);
    const DType dt = std::is_same_v<TestType, float> ? DType::f32 : DType::f64;
    Generator gen(static_cast<uint64_t>(c.T * 100 + c.S));
    const Tensor q = Tensor::randn({c.B, c.Hq, c.T, c.D}, gen, dt), k = Tensor::randn({c.B, c.Hkv, c.S, c.D}, gen, dt),
                 v = Tensor::randn({c.B, c.Hkv, c.S, c.D}, gen, dt), g = Tensor::randn({c.B, c.Hq, c.T, c.D}, gen, dt);
    std::vector<int64_t> keep(static_cast<size_t>(c.B * c.S), 1);
    if (c.masked) {
      for (int64_t j = 0; j < c.S; ++j) keep[static_cast<size_t>(j)] = 0;                        // batch 0: none
      for (int64_t j = c.S - 4; j < c.S; ++j) keep[static_cast<size_t>(c.S + j)] = 0;             // batch 1: the last 4
    }
    const int64_t* mask = c.masked ? keep.data() : nullptr;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    auto run = [&](bool save) {
      Tensor out = Tensor::zeros(q.shape(), dt), lse = Tensor::zeros({c.B, c.Hq, c.T}, dt);
      Tensor probs = Tensor::zeros({c.B, c.Hq, c.T, c.S}, dt), delta = Tensor::zeros({c.B, c.Hq, c.T}, dt);
      Tensor dq = Tensor::zeros(q.shape(), dt), dk = Tensor::zeros(k.shape(), dt), dv = Tensor::zeros(v.shape(), dt);
      TestType* p = save ? probs.data<TestType>() : nullptr;
      kernels::cpu::attention_forward<TestType>(out.data<TestType>(), lse.data<TestType>(), q.data<TestType>(),
                                                k.data<TestType>(), v.data<TestType>(), mask, c.causal, scale, s, st,
                                                p);
      kernels::cpu::attention_backward<TestType>(dq.data<TestType>(), dk.data<TestType>(), dv.data<TestType>(),
                                                 delta.data<TestType>(), g.data<TestType>(), q.data<TestType>(),
                                                 k.data<TestType>(), v.data<TestType>(), lse.data<TestType>(), mask,
                                                 c.causal, scale, s, st, p);
      return std::vector<Tensor>{out, lse, dq, dk, dv, probs};
    };
    const auto recomputed = run(false), saved = run(true);
    for (size_t i = 0; i < 5; ++i) {
      INFO("output " << i << " (out, lse, dq, dk, dv)");
      CHECK(recomputed[i].template to_vector<double>() == saved[i].template to_vector<double>());  // exact for f32
    }
    // The saved rows are probabilities: each read row sums to 1 (0 for a fully masked one).
    // (Rows nobody reads stay as the caller left them: zeros here.)
    double worst = 0;
    for (const double row_sum : sum(saved[5], {-1}).template to_vector<double>())
      worst = std::max(worst, std::min(std::abs(row_sum - 1.0), std::abs(row_sum)));
    CHECK(worst <= 1e-5);
  }
}

TEST_CASE("scaled_dot_product_attention with trailing queries unread: the read rows and all gradients to rounding",
          "[attention]") {
  // Right padding of 0, 3, 37 and all 40 positions (T = S = 40: two row blocks, the
  // cut inside the first, at its end and before the start), then a cut inside the
  // second block with S > T (queries aligned at the end).
  for (const auto& [T, S] : std::vector<std::pair<int64_t, int64_t>>{{40, 40}, {37, 45}}) {
    INFO("T " << T << " S " << S);
    const int64_t B = 4, D = 16;
    const std::vector<int64_t> real{S, S - 3, S - 37 > 0 ? S - 37 : 1, 0};
    std::vector<uint8_t> m;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < S; ++j) m.push_back(j < real[static_cast<size_t>(b)] ? 1 : 0);
    const Tensor mask = Tensor::from_vector(m, {B, S});
    // Rows read: queries aligned with a key at or before the sample's last real one.
    std::vector<float> rows;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i) rows.push_back(i + S - T < real[static_cast<size_t>(b)] ? 1.0f : 0.0f);
    const Tensor read = Tensor::from_vector(rows, {B, 1, T, 1});
    Generator gen(static_cast<uint64_t>(T + S));
    const Tensor q0 = Tensor::randn({B, 2, T, D}, gen), k0 = Tensor::randn({B, 1, S, D}, gen),
                 v0 = Tensor::randn({B, 1, S, D}, gen), w = Tensor::randn({B, 2, T, D}, gen) * read;
    auto run = [&](bool unread) {
      Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
             v = v0.clone().set_requires_grad(true);
      const Tensor y = scaled_dot_product_attention(q, k, v, mask, true, std::nullopt, unread);
      sum(y * w).backward();  // zero gradient at the unread rows
      return std::vector<Tensor>{y * read, y * (1.0 - read), q.grad(), k.grad(), v.grad()};
    };
    const auto all = run(false), skipped = run(true);
    // The rows read, to rounding: a block cut short may take other tiles (or dot products).
    CHECK(test::max_abs_error(skipped[0], all[0]) <= 1e-5 * test::rms(all[0]));
    CHECK(test::max_abs_error(skipped[1], Tensor::zeros(skipped[1].shape())) == 0.0);  // zeros on the CPU
    for (size_t i = 2; i < all.size(); ++i) {
      INFO("gradient " << i - 2 << " (dq, dk, dv)");
      CHECK(test::max_abs_error(skipped[i], all[i]) <= 1e-5 * test::rms(all[i]));
    }
  }
}

TEST_CASE("scaled_dot_product_attention reads and writes a projection's heads in place, with the bits of contiguous operands",
          "[attention]") {
  // A module's heads: the [B, H, L, Dh] views of [B, L, H·Dh] projections (rows
  // H·Dh apart), 4 query heads on 2 KV heads, a key mask, causal.
  const int64_t B = 2, L = 6, H = 4, Hkv = 2, D = 8;
  Generator gen(41);
  auto projection = [&](int64_t heads) {
    return Tensor::randn({B, L, heads * D}, gen).set_requires_grad(true);
  };
  Tensor xq = projection(H), xk = projection(Hkv), xv = projection(Hkv);
  auto heads = [&](const Tensor& x, int64_t h) { return x.view({B, L, h, D}).transpose(1, 2); };
  const Tensor mask = Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1}, {B, L});
  const Tensor y = scaled_dot_product_attention(heads(xq, H), heads(xk, Hkv), heads(xv, Hkv), mask, true);
  // The same values as contiguous leaves.
  Tensor q = heads(xq, H).contiguous().detach().set_requires_grad(true);
  Tensor k = heads(xk, Hkv).contiguous().detach().set_requires_grad(true);
  Tensor v = heads(xv, Hkv).contiguous().detach().set_requires_grad(true);
  const Tensor yc = scaled_dot_product_attention(q, k, v, mask, true);
  CHECK(y.to_vector<float>() == yc.to_vector<float>());
  // The output lies as [B, L, H, Dh]: the caller's transpose back is contiguous.
  CHECK(y.transpose(1, 2).is_contiguous());
  const Tensor w = Tensor::randn(y.shape(), gen);
  sum(y * w).backward();
  sum(yc * w).backward();
  CHECK(xq.grad().to_vector<float>() == q.grad().transpose(1, 2).contiguous().to_vector<float>());
  CHECK(xk.grad().to_vector<float>() == k.grad().transpose(1, 2).contiguous().to_vector<float>());
  CHECK(xv.grad().to_vector<float>() == v.grad().transpose(1, 2).contiguous().to_vector<float>());
  // A gradient arriving strided (the output's own layout, transposed back) is read in place too.
  Tensor q2 = q.detach().set_requires_grad(true);
  const Tensor y2 = scaled_dot_product_attention(q2, k.detach(), v.detach(), mask, true);
  sum(y2.transpose(1, 2).contiguous() * w.transpose(1, 2)).backward();
  CHECK(q2.grad().to_vector<float>() == q.grad().to_vector<float>());
}

TEST_CASE("scaled_dot_product_attention rejects bad arguments by name", "[attention]") {
  const Tensor q = Tensor::zeros({2, 4, 5, 8}), k = Tensor::zeros({2, 2, 7, 8});
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, Tensor::zeros({2, 2, 6, 8})),
                      Catch::Contains("scaled_dot_product_attention: q [2,4,5,8], k [2,2,7,8], v [2,2,6,8]: k and v "
                                      "shapes differ"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, Tensor::zeros({3, 2, 7, 8}), Tensor::zeros({3, 2, 7, 8})),
                      Catch::Contains("q [2,4,5,8], k [3,2,7,8], v [3,2,7,8]: batch sizes 2 and 3 differ"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, Tensor::zeros({2, 2, 7, 4}), Tensor::zeros({2, 2, 7, 4})),
                      Catch::Contains("q [2,4,5,8], k [2,2,7,4], v [2,2,7,4]: head dims 8 and 4 differ"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, Tensor::zeros({2, 3, 7, 8}), Tensor::zeros({2, 3, 7, 8})),
                      Catch::Contains("4 query heads are not a multiple of 3 KV heads"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(Tensor::zeros({4, 5, 8}), k, k),
                      Catch::Contains("q [4,5,8], k [2,2,7,8], v [2,2,7,8] must be q [B, Hq, T, Dh]"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, k, Tensor::ones({2, 6}, DType::u8)),
                      Catch::Contains("key_padding_mask [2,6] must be [B, S] = [2,7] for q [2,4,5,8]"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, k, Tensor::ones({2, 7})),
                      Catch::Contains("key_padding_mask must be u8 or i64, got f32"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k.to(DType::f64), k), Catch::Contains("scaled_dot_product_attention"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q.to(DType::i64), k, k), Catch::Contains("must be f32 or f64"));
}

TEST_CASE("scaled_dot_product_attention under autocast runs by bf16 products, near the f32 kernel",
          "[attention][autocast]") {
  // The product form (core/ops/attention.cpp), whose two products round their
  // operands to bf16 as every product under autocast; with and without a key
  // mask, causal with T < S and T > S, and a sample whose keys are all masked
  // (its rows see no key: zeros and zero gradients, as the fused kernel).
  Generator gen(77);
  const std::vector<uint8_t> mask_values = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   // sample 0: no key
                                            1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1};  // sample 1
  const Tensor mask = Tensor::from_vector(mask_values, {2, 11});
  for (const auto& [causal, t, masked] : std::vector<std::tuple<bool, int64_t, bool>>{
           {false, 9, false}, {true, 9, false}, {true, 14, false}, {false, 9, true}, {true, 9, true}, {true, 14, true}}) {
    INFO("causal " << causal << ", T " << t << ", key mask " << masked);
    const Tensor q0 = Tensor::randn({2, 4, t, 16}, gen), k0 = Tensor::randn({2, 2, 11, 16}, gen),
                 v0 = Tensor::randn({2, 2, 11, 16}, gen), g = Tensor::randn({2, 4, t, 16}, gen);
    std::vector<Tensor> grads[2];
    Tensor outs[2];
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
             v = v0.clone().set_requires_grad(true);
      {
        AutocastGuard guard(bf16 == 1);
        outs[bf16] = scaled_dot_product_attention(q, k, v, masked ? mask : Tensor(), causal);
      }
      outs[bf16].backward(g);
      grads[bf16] = {q.grad(), k.grad(), v.grad()};
    }
    // bf16 operands move results by ~2^-8 relative; the f32 kernel is the reference.
    CHECK(test::rel_error(outs[1], outs[0]) > 0);  // the bf16 rounding happened
    CHECK_REL(outs[1], outs[0], 2e-2);
    for (int i = 0; i < 3; ++i) {
      INFO("gradient " << i);
      CHECK_REL(grads[1][i], grads[0][i], 3e-2);
    }
    if (masked) {  // sample 0 sees no key: zeros out, and no gradient reaches its q, k, v
      CHECK(max(abs(outs[1].narrow(0, 0, 1))).item() == 0.0);
      for (int i = 0; i < 3; ++i) CHECK(max(abs(grads[1][i].narrow(0, 0, 1))).item() == 0.0);
    }
    CHECK(std::isfinite(max(abs(outs[1])).item()));
  }
}
