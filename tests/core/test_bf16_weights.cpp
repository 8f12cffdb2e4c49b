// Frozen bf16 / f16 weights with f32 activations (core/ops/linalg.cpp,
// kernels/gemm_lowp_weight.h): linear, linear_gelu, embedding and the LLaVA
// splice with a 16-bit weight must equal the same ops on that weight widened
// to f32 (the same values; f32 accumulation in both, so only the summation
// order differs), forward and input gradient, at sizes that cover the
// kernel's vector and column tails; under autocast a bf16 weight's input is
// rounded to bf16 first; a 16-bit weight that requires grad is refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/threads.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/gemm_lowp_weight.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

// f32 accumulation in two orders over the same values: each element within
// a few ulps of Σ|x·w| (the products' magnitude, immune to cancellation).
constexpr double kTolerance = 1e-5;

// |x| · |w|ᵀ + |b|: the scale of each output of linear.
Tensor magnitude(const Tensor& x, const Tensor& w, const Tensor& b) {
  NoGradGuard no_grad;
  Tensor m = matmul(abs(x.detach()), abs(w.detach()).transpose(0, 1));
  return b.defined() ? m + abs(b.detach()) : m;
}

struct Case {
  int64_t m, k, n;
};

// gemm_lowp_weight_nt into a copy of y0 [m, ldy] with beta 0.5: x the first k
// columns of xs [m, ldx], the bf16 weight the first k columns of ws [n, ldw].
// The first n columns must be x · wᵀ + 0.5 y0, the padding after them untouched.
void check_lowp_nt(const Tensor& xs, int64_t k, const Tensor& ws, const Tensor& y0) {
  const int64_t m = xs.size(0), ldx = xs.size(1), n = ws.size(0), ldw = ws.size(1), ldy = y0.size(1);
  const Tensor x = xs.narrow(1, 0, k), wf = ws.narrow(1, 0, k).to(DType::f32);
  Tensor y = y0.clone();
  kernels::cpu::gemm_lowp_weight_nt(m, n, k, xs.data<float>(), ldx, static_cast<const uint16_t*>(ws.data_ptr()), ldw,
                                    DType::bf16, 0.5f, y.data<float>(), ldy);
  const Tensor want = matmul(x, wf.transpose(0, 1)) + y0.narrow(1, 0, n) * 0.5;
  CHECK(test::element_error(y.narrow(1, 0, n), want, magnitude(x, wf, Tensor()) + abs(y0.narrow(1, 0, n))).error <=
        kTolerance);
  CHECK(test::max_abs_error(y.narrow(1, n, ldy - n), y0.narrow(1, n, ldy - n)) == 0.0);
}

}  // namespace

TEST_CASE("linear with a bf16 or f16 weight equals linear with the weight widened to f32", "[bf16_weights]") {
  const DType dtype = GENERATE(DType::bf16, DType::f16);
  const bool with_bias = GENERATE(false, true);
  std::vector<Case> cases;
  for (int64_t m : {1, 3, 17})
    for (int64_t k : {13, 64, 1000})
      for (int64_t n : {1, 9, 4096}) cases.push_back({m, k, n});
  Generator gen(1234);
  for (const Case& c : cases) {
    INFO(dtype_name(dtype) << " M " << c.m << " K " << c.k << " N " << c.n << (with_bias ? " bias" : ""));
    const Tensor w16 = Tensor::randn({c.n, c.k}, gen).to(dtype);  // frozen: no grad
    const Tensor wf = w16.to(DType::f32);                           // the same values in f32
    const Tensor b = with_bias ? Tensor::randn({c.n}, gen).set_requires_grad(true) : Tensor();
    const Tensor b_ref = with_bias ? b.detach().clone().set_requires_grad(true) : Tensor();
    const Tensor x = Tensor::randn({c.m, c.k}, gen).set_requires_grad(true);
    const Tensor x_ref = x.detach().clone().set_requires_grad(true);

    const Tensor y = linear(x, w16, b);
    const Tensor y_ref = linear(x_ref, wf, b_ref);
    REQUIRE(y.dtype() == DType::f32);
    REQUIRE(y.shape() == Shape{c.m, c.n});
    const test::ElementError fwd = test::element_error(y, y_ref, magnitude(x, wf, b));
    CHECK(fwd.error <= kTolerance);
    if (fwd.error > kTolerance) WARN(fwd.str());

    // dx = g · W and db = Σ g, against the f32 weight's.
    const Tensor g = Tensor::randn({c.m, c.n}, gen);
    sum(y * g).backward();
    sum(y_ref * g).backward();
    REQUIRE(x.grad().defined());
    CHECK(!w16.grad().defined());
    const Tensor dx_magnitude = matmul(abs(g), abs(wf));
    const test::ElementError bwd = test::element_error(x.grad(), x_ref.grad(), dx_magnitude);
    CHECK(bwd.error <= kTolerance);
    if (bwd.error > kTolerance) WARN(bwd.str());
    if (with_bias) CHECK(test::max_abs_error(b.grad(), b_ref.grad()) == 0.0);
  }
}

TEST_CASE("linear with a bf16 weight: batched input, strided input, autocast, thread counts", "[bf16_weights]") {
  Generator gen(7);
  const Tensor w16 = Tensor::randn({37, 70}, gen).to(DType::bf16);
  const Tensor wf = w16.to(DType::f32);
  SECTION("a [B, T, K] input and a transposed view") {
    const Tensor x = Tensor::randn({2, 5, 70}, gen);
    CHECK(test::element_error(linear(x, w16), linear(x, wf), magnitude(x.reshape({10, 70}), wf, Tensor())
                                                                 .reshape({2, 5, 37}))
              .error <= kTolerance);
    const Tensor xt = Tensor::randn({70, 4}, gen).transpose(0, 1);  // [4, 70], not contiguous
    CHECK(test::element_error(linear(xt, w16), linear(xt, wf), magnitude(xt, wf, Tensor())).error <= kTolerance);
  }
  SECTION("autocast rounds the input of a bf16 weight's product to bf16, as torch.autocast does") {
    for (int64_t m : {int64_t(3), int64_t(17)}) {  // the streaming kernel, then the GEMM
      INFO("M " << m);
      const Tensor x = Tensor::randn({m, 70}, gen).set_requires_grad(true);
      const Tensor g = Tensor::randn({m, 37}, gen);
      Tensor y;
      {
        AutocastGuard autocast(true);
        y = linear(x, w16);
      }
      const Tensor xr = x.detach().to(DType::bf16).to(DType::f32), gr = g.to(DType::bf16).to(DType::f32);
      CHECK(test::element_error(y, linear(xr, wf), magnitude(xr, wf, Tensor())).error <= kTolerance);
      sum(mul(y, g)).backward();  // dx = g (rounded) · W
      CHECK(test::element_error(x.grad(), matmul(gr, wf), matmul(abs(gr), abs(wf))).error <= kTolerance);
    }
  }
  SECTION("autocast leaves the f32 input of an f16 weight's product unrounded") {
    const Tensor w_half = Tensor::randn({37, 70}, gen).to(DType::f16);
    const Tensor x = Tensor::randn({17, 70}, gen);
    const Tensor plain = linear(x, w_half);
    AutocastGuard autocast(true);
    CHECK(test::max_abs_error(linear(x, w_half), plain) == 0.0);
  }
  SECTION("the streaming kernel's result does not depend on the thread count") {
    // (m > kLowpGemvRows goes to OpenBLAS, whose sums may split by thread.)
    for (int64_t m : {int64_t(1), int64_t(3), kernels::cpu::kLowpGemvRows}) {
      INFO("M " << m);
      const Tensor big = Tensor::randn({1030, 300}, gen).to(DType::bf16);
      const Tensor x = Tensor::randn({m, 300}, gen);
      const int before = num_threads();
      set_num_threads(1);
      const Tensor one = linear(x, big);
      set_num_threads(2);
      const Tensor two = linear(x, big);
      set_num_threads(before);
      CHECK(test::max_abs_error(one, two) == 0.0);
    }
  }
}

TEST_CASE("the low-precision-weight kernels honour leading dimensions and beta", "[bf16_weights]") {
  // x [m, k] inside rows of ldx; w [n, k] inside rows of ldw; y [m, n] inside rows of ldy.
  const int64_t m = GENERATE(2, 11), n = 21, k = 19, ldx = 24, ldw = 27, ldy = 30;
  Generator gen(3);
  const Tensor xs = Tensor::randn({m, ldx}, gen);
  const Tensor ws = Tensor::randn({n, ldw}, gen).to(DType::bf16);
  const Tensor y0 = Tensor::randn({m, ldy}, gen);
  const Tensor x = xs.narrow(1, 0, k), wf = ws.narrow(1, 0, k).to(DType::f32);
  INFO("M " << m);
  check_lowp_nt(xs, k, ws, y0);  // y = x · wᵀ + 0.5 y0 in the first n columns; the padding is untouched
  // dx = g · w + 1.0 dx0, g [m, n] inside rows of ldy, dx [m, k] inside rows of ldx.
  const Tensor gs = Tensor::randn({m, ldy}, gen);
  Tensor dx = xs.clone();
  kernels::cpu::gemm_lowp_weight_nn(m, n, k, gs.data<float>(), ldy, static_cast<const uint16_t*>(ws.data_ptr()), ldw,
                                    DType::bf16, 1.0f, dx.data<float>(), ldx);
  const Tensor g = gs.narrow(1, 0, n);
  CHECK(test::element_error(dx.narrow(1, 0, k), matmul(g, wf) + x, matmul(abs(g), abs(wf)) + abs(x)).error <=
        kTolerance);
  CHECK(test::max_abs_error(dx.narrow(1, k, ldx - k), xs.narrow(1, k, ldx - k)) == 0.0);

  // The bf16-activation forms over the same buffers, the activations rounded:
  // oneDNN's bf16 kernel where it has one, and the widened path.
  const auto path = GENERATE(kernels::cpu::onednn::Bf16Path::native, kernels::cpu::onednn::Bf16Path::widened);
  kernels::cpu::onednn::set_bf16_path(path);
  struct Restore {
    ~Restore() { kernels::cpu::onednn::set_bf16_path(kernels::cpu::onednn::Bf16Path::automatic); }
  } restore;
  const Tensor xs16 = xs.to(DType::bf16), gs16 = gs.to(DType::bf16);
  const Tensor xr = xs16.narrow(1, 0, k).to(DType::f32), gr = gs16.narrow(1, 0, n).to(DType::f32);
  const auto bits = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); };
  Tensor y16 = y0.clone();
  kernels::cpu::gemm_bf16_weight_nt_bf16x(m, n, k, bits(xs16), ldx, bits(ws), ldw, 0.5f, y16.data<float>(), ldy);
  CHECK(test::element_error(y16.narrow(1, 0, n), matmul(xr, wf.transpose(0, 1)) + y0.narrow(1, 0, n) * 0.5,
                            magnitude(xr, wf, Tensor()) + abs(y0.narrow(1, 0, n)))
            .error <= kTolerance);
  CHECK(test::max_abs_error(y16.narrow(1, n, ldy - n), y0.narrow(1, n, ldy - n)) == 0.0);
  Tensor dx16 = xs.clone();
  kernels::cpu::gemm_bf16_weight_nn_bf16x(m, n, k, bits(gs16), ldy, bits(ws), ldw, 1.0f, dx16.data<float>(), ldx);
  CHECK(test::element_error(dx16.narrow(1, 0, k), matmul(gr, wf) + x, matmul(abs(gr), abs(wf)) + abs(x)).error <=
        kTolerance);
  CHECK(test::max_abs_error(dx16.narrow(1, k, ldx - k), xs.narrow(1, k, ldx - k)) == 0.0);
}

TEST_CASE("the low-precision-weight kernels over several widened tiles", "[bf16_weights]") {
  // k = 2^15: a widened tile holds 2^20 / k = 32 weight rows, so n = 70 is three tiles
  // (32, 32, 6), each product going through a dense buffer into y's columns (ldy > n),
  // beta applied once; dx sums the tiles. m = 11 is past the streaming kernel.
  const int64_t m = 11, n = 70, k = int64_t(1) << 15, ldy = 75;
  Generator gen(5);
  const Tensor x = Tensor::randn({m, k}, gen);
  const Tensor w = Tensor::randn({n, k}, gen).to(DType::bf16), wf = w.to(DType::f32);
  const Tensor y0 = Tensor::randn({m, ldy}, gen);
  check_lowp_nt(x, k, w, y0);
  // beta 0 never reads y: NaNs there do not survive.
  Tensor y_nan = Tensor::full({m, n}, NAN);
  kernels::cpu::gemm_lowp_weight_nt(m, n, k, x.data<float>(), k, static_cast<const uint16_t*>(w.data_ptr()), k,
                                    DType::bf16, 0.0f, y_nan.data<float>(), n);
  CHECK(test::element_error(y_nan, matmul(x, wf.transpose(0, 1)), magnitude(x, wf, Tensor())).error <= kTolerance);
  const Tensor g = Tensor::randn({m, n}, gen);
  Tensor dx = x.clone();
  kernels::cpu::gemm_lowp_weight_nn(m, n, k, g.data<float>(), n, static_cast<const uint16_t*>(w.data_ptr()), k,
                                    DType::bf16, 1.0f, dx.data<float>(), k);
  CHECK(test::element_error(dx, matmul(g, wf) + x, matmul(abs(g), abs(wf)) + abs(x)).error <= kTolerance);
}

TEST_CASE("a 16-bit weight that requires grad is refused, naming the op", "[bf16_weights]") {
  Generator gen(5);
  const Tensor w = Tensor::randn({4, 6}, gen).to(DType::bf16).set_requires_grad(true);
  const Tensor x = Tensor::randn({2, 6}, gen);
  REQUIRE_THROWS_WITH(linear(x, w), Catch::Contains("linear: weight") && Catch::Contains("f32 masters"));
  REQUIRE_THROWS_WITH(linear_gelu(x, w), Catch::Contains("linear: weight") && Catch::Contains("f32 masters"));
  REQUIRE_THROWS_WITH(embedding(w, Tensor::from_vector(std::vector<int64_t>{1}, {1})),
                      Catch::Contains("embedding: weight") && Catch::Contains("f32 masters"));
  // The input must be f32 (the computation is f32).
  const Tensor frozen = w.detach();
  REQUIRE_THROWS_WITH(linear(x.to(DType::f64), frozen), Catch::Contains("linear: input") && Catch::Contains("f32"));
  REQUIRE_THROWS_WITH(linear(x, frozen, Tensor::zeros({4}, DType::bf16)),
                      Catch::Contains("linear: bias") && Catch::Contains("f32"));
}

TEST_CASE("linear_gelu with a bf16 weight equals gelu(linear) over the widened weight", "[bf16_weights]") {
  Generator gen(11);
  const Tensor w16 = Tensor::randn({33, 40}, gen).to(DType::bf16);
  const Tensor wf = w16.to(DType::f32);
  const Tensor b = Tensor::randn({33}, gen);
  const Tensor x = Tensor::randn({5, 40}, gen).set_requires_grad(true);
  const Tensor x_ref = x.detach().clone().set_requires_grad(true);
  const Tensor y = linear_gelu(x, w16, b), y_ref = linear_gelu(x_ref, wf, b);
  CHECK(test::rel_error(y, y_ref) < kTolerance);
  sum(y).backward();
  sum(y_ref).backward();
  CHECK(test::rel_error(x.grad(), x_ref.grad()) < kTolerance);
}

TEST_CASE("embedding from a bf16 or f16 table gives the f32 rows", "[bf16_weights]") {
  const DType dtype = GENERATE(DType::bf16, DType::f16);
  Generator gen(13);
  const Tensor table = Tensor::randn({10, 7}, gen).to(dtype);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 0, 9, 3, 5, 1}, {2, 3});
  const Tensor rows = embedding(table, ids);
  REQUIRE(rows.dtype() == DType::f32);
  REQUIRE(rows.shape() == Shape{2, 3, 7});
  CHECK(test::max_abs_error(rows, embedding(table.to(DType::f32), ids)) == 0.0);
  REQUIRE_THROWS_WITH(embedding(table, Tensor::from_vector(std::vector<int64_t>{10}, {1})),
                      Catch::Contains("embedding: index 10") && Catch::Contains("10 embeddings"));
}

TEST_CASE("the LLaVA splice over a bf16 table gives f32 embeddings equal to the widened table's", "[bf16_weights]") {
  Generator gen(17);
  const Tensor table = Tensor::randn({12, 6}, gen).to(DType::bf16);
  const Tensor visual = Tensor::randn({2, 3, 6}, gen).set_requires_grad(true);
  const Tensor visual_ref = visual.detach().clone().set_requires_grad(true);
  SpliceOptions options;
  options.image_token_id = 11;
  // Two sequences, one image each, text ids repeated and out of order.
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{4, 11, 7, 4, 2, 9, 9, 11}, {2, 4});
  const SpliceResult got = splice_image_embeddings(ids, table, visual, Tensor(), Tensor(), options);
  const SpliceResult want =
      splice_image_embeddings(ids, table.to(DType::f32), visual_ref, Tensor(), Tensor(), options);
  REQUIRE(got.inputs_embeds.dtype() == DType::f32);
  CHECK(test::max_abs_error(got.inputs_embeds, want.inputs_embeds) == 0.0);
  CHECK(test::max_abs_error(got.labels, want.labels) == 0.0);
  // The visual tokens' gradient flows as with an f32 table.
  const Tensor g = Tensor::randn(got.inputs_embeds.shape(), gen);
  sum(got.inputs_embeds * g).backward();
  sum(want.inputs_embeds * g).backward();
  CHECK(test::max_abs_error(visual.grad(), visual_ref.grad()) == 0.0);
  // No image: an empty visual tensor of the table's dtype is accepted.
  const Tensor text = Tensor::from_vector(std::vector<int64_t>{1, 2, 3}, {1, 3});
  const SpliceResult none =
      splice_image_embeddings(text, table, Tensor::zeros({0, 1, 6}, DType::bf16), Tensor(), Tensor(), options);
  CHECK(test::max_abs_error(none.inputs_embeds, embedding(table, text)) == 0.0);
  // Visual tokens that are not f32 are refused by name.
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids, table, visual.detach().to(DType::bf16), Tensor(), Tensor(), options),
                      Catch::Contains("visual_tokens") && Catch::Contains("must be f32"));
}
