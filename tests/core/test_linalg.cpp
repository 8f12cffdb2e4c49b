// matmul and linear: values, finite-difference gradients, errors, and the
// CPU GEMM kernel against a naive loop.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;
using vlmc::test::leaf;

namespace {

// Reference batched product in double over the explicit index maths:
// a [B, m, k] and b [B, k, n] as host vectors.
std::vector<double> naive_bmm(const std::vector<double>& a, const std::vector<double>& b,
                              int64_t batch, int64_t m, int64_t k, int64_t n) {
  std::vector<double> c(static_cast<size_t>(batch * m * n), 0.0);
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t l = 0; l < k; ++l)
          s += a[static_cast<size_t>((p * m + i) * k + l)] *
               b[static_cast<size_t>((p * k + l) * n + j)];
        c[static_cast<size_t>((p * m + i) * n + j)] = s;
      }
  return c;
}

Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::f64) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dtype);
}

}  // namespace

TEST_CASE("gemm kernel matches a naive loop for every transpose and leading dim", "[linalg]") {
  const int64_t m = 5, n = 7, k = 3, pad = 2;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      // Stored shapes with padded rows: A is [m, k] or [k, m], B is [k, n] or [n, k].
      const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, lda = a_cols + pad;
      const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_cols + pad, ldc = n + pad;
      std::vector<float> a(static_cast<size_t>(a_rows * lda)), b(static_cast<size_t>(b_rows * ldb));
      for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7) % 11) - 5.0f;
      for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 5) % 13) - 6.0f;
      std::vector<float> c(static_cast<size_t>(m * ldc), 1.0f);
      kernels::cpu::gemm<float>(ta, tb, m, n, k, 2.0f, a.data(), lda, b.data(), ldb, 0.5f, c.data(),
                                ldc);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t l = 0; l < k; ++l) {
            const double av =
                ta ? a[static_cast<size_t>(l * lda + i)] : a[static_cast<size_t>(i * lda + l)];
            const double bv =
                tb ? b[static_cast<size_t>(j * ldb + l)] : b[static_cast<size_t>(l * ldb + j)];
            s += av * bv;
          }
          CHECK(c[static_cast<size_t>(i * ldc + j)] == Approx(2.0 * s + 0.5));
        }
      // The padding between rows of C is left alone.
      CHECK(c[static_cast<size_t>(n)] == 1.0f);
    }
}

TEST_CASE("gemm with beta 0 ignores NaNs already in C", "[linalg]") {
  std::vector<double> a{1, 2, 3, 4}, b{1, 0, 0, 1}, c(4, NAN);
  kernels::cpu::gemm<double>(false, false, 2, 2, 2, 1.0, a.data(), 2, b.data(), 2, 0.0, c.data(),
                             2);
  CHECK(c == std::vector<double>{1, 2, 3, 4});
}

TEST_CASE("matmul values on a small hand-checked example", "[linalg]") {
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{7, 8, 9, 10, 11, 12}, {3, 2});
  const Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{2, 2});
  CHECK(c.to_vector<float>() == std::vector<float>{58, 64, 139, 154});
  // Transposed views go to GEMM as transposed operands: (Bᵀ Aᵀ) = (AB)ᵀ.
  CHECK(matmul(b.transpose(0, 1), a.transpose(0, 1)).to_vector<float>() ==
        std::vector<float>{58, 139, 64, 154});
}

TEST_CASE("matmul promotes 1-D operands as torch.matmul", "[linalg]") {
  const Tensor v = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  const Tensor w = Tensor::from_vector(std::vector<double>{4, 5, 6}, {3});
  const Tensor m = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1}, {3, 2});
  const Tensor mt = Tensor::from_vector(std::vector<double>{1, 0, 1, 0, 1, 1}, {2, 3});
  const Tensor dot = matmul(v, w);
  CHECK(dot.shape() == Shape{});
  CHECK(dot.item() == 32.0);
  const Tensor vm = matmul(v, m);  // [3] x [3,2] -> [2]
  CHECK(vm.shape() == Shape{2});
  CHECK(vm.to_vector<double>() == std::vector<double>{4, 5});
  const Tensor mv = matmul(mt, v);  // [2,3] x [3] -> [2]
  CHECK(mv.shape() == Shape{2});
  CHECK(mv.to_vector<double>() == std::vector<double>{4, 5});
  const Tensor batched = matmul(mt.expand({4, 2, 3}), v);  // [4,2,3] x [3] -> [4,2]
  CHECK(batched.shape() == Shape{4, 2});
  const Tensor vb = matmul(v, m.expand({4, 3, 2}));  // [3] x [4,3,2] -> [4,2]
  CHECK(vb.shape() == Shape{4, 2});
  CHECK(vb.to_vector<double>() == std::vector<double>{4, 5, 4, 5, 4, 5, 4, 5});
}

TEST_CASE("matmul broadcasts batch dims", "[linalg]") {
  // [2,1,3,4] x [5,4,2] -> [2,5,3,2]
  const Tensor a = randn({2, 1, 3, 4}, 1), b = randn({5, 4, 2}, 2);
  const Tensor c = matmul(a, b);
  REQUIRE(c.shape() == Shape{2, 5, 3, 2});
  const std::vector<double> expected =
      naive_bmm(a.expand({2, 5, 3, 4}).contiguous().to_vector<double>(),
                b.expand({2, 5, 4, 2}).contiguous().to_vector<double>(), 10, 3, 4, 2);
  CHECK_REL(c, Tensor::from_vector(expected, {2, 5, 3, 2}), 1e-14);
  // A shared right operand folds into one GEMM: same values as per-batch products.
  const Tensor x = randn({3, 4, 5}, 3), w = randn({5, 6}, 4);
  const Tensor y = matmul(x, w);
  for (int64_t i = 0; i < 3; ++i) CHECK_REL(y.select(0, i), matmul(x.select(0, i), w), 1e-14);
}

TEST_CASE("matmul f32 matches a double reference at 1e-6", "[linalg]") {
  const Tensor a = randn({3, 37, 65}, 5, DType::f32), b = randn({3, 65, 29}, 6, DType::f32);
  const std::vector<double> expected =
      naive_bmm(a.to_vector<double>(), b.to_vector<double>(), 3, 37, 65, 29);
  CHECK_REL(matmul(a, b), Tensor::from_vector(expected, {3, 37, 29}), 1e-6);
}

TEST_CASE("matmul gradients", "[linalg]") {
  SECTION("2-D") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({3, 4}, 1), leaf({4, 5}, 2)});
  }
  SECTION("batched broadcasting [2,1,3,4] x [5,4,2]") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({2, 1, 3, 4}, 3), leaf({5, 4, 2}, 4)});
  }
  SECTION("shared right operand [3,4,5] x [5,2] (folded dB)") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({3, 4, 5}, 5), leaf({5, 2}, 6)});
  }
  SECTION("shared left operand [4,5] x [3,5,2]") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({4, 5}, 7), leaf({3, 5, 2}, 8)});
  }
  SECTION("1-D cases") {
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({4}, 9), leaf({4}, 10)});
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({4}, 11), leaf({2, 4, 3}, 12)});
    CHECK_GRADIENTS([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); },
                    {leaf({2, 3, 4}, 13), leaf({4}, 14)});
  }
  SECTION("non-contiguous inputs") {
    // Transposed views (described to GEMM as transposed), and a narrow whose
    // batch stride does not collapse (copied first).
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return matmul(t[0].transpose(-1, -2), t[1].transpose(0, 1));
        },
        {leaf({2, 4, 3}, 15), leaf({5, 4}, 16)});
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return matmul(t[0].narrow(2, 1, 3).transpose(0, 1), t[1]);
        },
        {leaf({4, 2, 5, 3}, 17), leaf({4, 3, 2}, 18)});
  }
}

TEST_CASE("matmul errors name the op and the shapes", "[linalg]") {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  REQUIRE_THROWS_WITH(matmul(a, b),
                      Contains("matmul: a [2,3] and b [4,5]: inner dims 3 and 4 differ"));
  REQUIRE_THROWS_WITH(
      matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({5, 4, 2})),
      Contains("matmul: a [2,3,4] and b [5,4,2]: batch dims [2] and [5] do not broadcast"));
  REQUIRE_THROWS_WITH(matmul(Tensor::scalar(1), Tensor::zeros({3})),
                      Contains("matmul: a [] and b [3]: both operands need at least 1 dim"));
  REQUIRE_THROWS_WITH(matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}, DType::f64)),
                      Contains("matmul: dtypes f32 and f64 differ"));
  REQUIRE_THROWS_WITH(matmul(Tensor::zeros({2, 3}, DType::i64), Tensor::zeros({3, 2}, DType::i64)),
                      Contains("matmul: a i64 [2,3] on cpu must be f32 or f64"));
}

TEST_CASE("matmul with an empty inner dim gives zeros", "[linalg]") {
  const Tensor c = matmul(Tensor::zeros({2, 0}), Tensor::zeros({0, 3}));
  CHECK(c.shape() == Shape{2, 3});
  CHECK(c.to_vector<float>() == std::vector<float>(6, 0.0f));
}

TEST_CASE("linear values on a small hand-checked example", "[linalg]") {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = Tensor::from_vector(std::vector<float>{1, 0, -1, 2, 1, 0}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{10, 20}, {2});
  CHECK(linear(x, w, b).to_vector<float>() == std::vector<float>{8, 24, 8, 33});
  CHECK(linear(x, w).to_vector<float>() == std::vector<float>{-2, 4, -2, 13});
  const Tensor y1 = linear(Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}), w, b);
  CHECK(y1.shape() == Shape{2});
  CHECK(y1.to_vector<float>() == std::vector<float>{8, 24});
}

TEST_CASE("linear matches matmul with the transposed weight plus bias", "[linalg]") {
  const Tensor x = randn({3, 7, 33}, 21, DType::f32), w = randn({17, 33}, 22, DType::f32);
  const Tensor b = randn({17}, 23, DType::f32);
  const Tensor y = linear(x, w, b);
  CHECK(y.shape() == Shape{3, 7, 17});
  std::vector<double> expected = naive_bmm(
      x.to_vector<double>(), w.transpose(0, 1).contiguous().to_vector<double>(), 1, 21, 33, 17);
  const std::vector<double> bias = b.to_vector<double>();
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += bias[i % 17];
  CHECK_REL(y, Tensor::from_vector(expected, {3, 7, 17}), 1e-6);
}

TEST_CASE("linear gradients", "[linalg]") {
  const auto fn = [](const std::vector<Tensor>& t) {
    return linear(t[0], t[1], t.size() > 2 ? t[2] : Tensor());
  };
  SECTION("with bias, 3-D input") {
    CHECK_GRADIENTS(fn, {leaf({2, 3, 4}, 31), leaf({5, 4}, 32), leaf({5}, 33)});
  }
  SECTION("without bias") { CHECK_GRADIENTS(fn, {leaf({3, 4}, 34), leaf({2, 4}, 35)}); }
  SECTION("1-D input") { CHECK_GRADIENTS(fn, {leaf({4}, 36), leaf({3, 4}, 37), leaf({3}, 38)}); }
  SECTION("non-contiguous input and weight") {
    CHECK_GRADIENTS(
        [](const std::vector<Tensor>& t) {
          return linear(t[0].transpose(0, 1), t[1].transpose(0, 1), t[2]);
        },
        {leaf({4, 3, 2}, 39), leaf({2, 5}, 40), leaf({5}, 41)});
  }
}

TEST_CASE("linear with a frozen weight computes no weight gradient", "[linalg]") {
  Tensor x = leaf({3, 4}, 51);
  Tensor w = randn({2, 4}, 52);  // requires_grad = false: frozen
  Tensor b = leaf({2}, 53);
  sum(linear(x, w, b)).backward();
  CHECK_FALSE(w.grad().defined());
  REQUIRE(x.grad().defined());
  REQUIRE(b.grad().defined());
  CHECK(b.grad().to_vector<double>() == std::vector<double>{3, 3});
  // dx = ones · W: every row of dx is the column sums of W.
  const Tensor expected = sum(w, {0}, true).expand({3, 4});
  CHECK_REL(x.grad(), expected, 1e-15);
  // And the gradient check with the weight frozen.
  CHECK_GRADIENTS([w](const std::vector<Tensor>& t) { return linear(t[0], w, t[1]); },
                  {leaf({2, 4}, 54), leaf({2}, 55)});
}

TEST_CASE("linear errors name the op and the shapes", "[linalg]") {
  const Tensor x = Tensor::empty({4, 576, 1000}), w = Tensor::empty({4096, 1024});
  REQUIRE_THROWS_WITH(linear(x, w), "linear: input [4,576,1000] does not match weight [4096,1024]");
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({3})),
                      Contains("linear: weight [3] must be 2-D [out, in]"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}), Tensor::zeros({5})),
                      Contains("linear: bias [5] does not match weight [4,3] (expected [4])"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}, DType::f64)),
                      Contains("linear: dtypes f32 and f64 differ"));
}

TEST_CASE("batched matmul does not depend on the thread count", "[linalg]") {
  const Tensor a = randn({16, 9, 13}, 61, DType::f32), b = randn({16, 13, 11}, 62, DType::f32);
  const int saved = num_threads();
  set_num_threads(1);
  const std::vector<float> one = matmul(a, b).to_vector<float>();
  set_num_threads(2);
  const std::vector<float> two = matmul(a, b).to_vector<float>();
  set_num_threads(saved);
  CHECK(one == two);
}
