// The CPU bf16 GEMM (kernels/gemm.h gemm_bf16) against a naive double loop
// over the same bf16 operands: every transpose, padded leading dims, a batch
// with either operand broadcast (stride 0), beta != 0, and beta == 0 over a
// NaN-poisoned C (which must never be read).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/gemm.h"

using namespace vlmc;
using vlmc::bf16_bits_to_float;
using vlmc::float_to_bf16_bits;

namespace {

// n bf16 values spread over about [-2, 2] with all 8 significant bits in use.
std::vector<uint16_t> bf16_values(size_t n, uint32_t seed) {
  std::vector<uint16_t> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& e : v) {
    s = s * 1664525u + 1013904223u;
    e = float_to_bf16_bits(static_cast<float>(s >> 8) / float(1 << 23) - 1.0f);
  }
  return v;
}

}  // namespace

TEST_CASE("cpu gemm_bf16 matches a naive loop over the bf16 operands", "[autocast][gemm_bf16]") {
  const int64_t m = 13, n = 11, k = 37, batch = 3, pad = 3;
  const float alpha = 1.25f;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int broadcast = 0; broadcast < 3; ++broadcast)  // none, a shared, b shared
        for (float beta : {0.0f, 0.5f}) {
          INFO("trans_a " << ta << " trans_b " << tb << " broadcast " << broadcast << " beta "
                          << beta);
          const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, lda = a_cols + pad;
          const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_cols + pad;
          const int64_t ldc = n + pad;
          const int64_t stride_a = broadcast == 1 ? 0 : a_rows * lda + 5;
          const int64_t stride_b = broadcast == 2 ? 0 : b_rows * ldb + 2;
          const int64_t stride_c = m * ldc + 1;
          const auto a = bf16_values(static_cast<size_t>((batch - 1) * stride_a + a_rows * lda), 1);
          const auto b = bf16_values(static_cast<size_t>((batch - 1) * stride_b + b_rows * ldb), 2);
          const float poison = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.75f;
          std::vector<float> c(static_cast<size_t>(batch * stride_c), poison);
          const std::vector<float> c0 = c;
          kernels::cpu::gemm_bf16(ta, tb, m, n, k, alpha, a.data(), lda, stride_a, b.data(), ldb,
                                  stride_b, beta, c.data(), ldc, stride_c, batch);
          for (int64_t p = 0; p < batch; ++p)
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) {
                double s = 0, mag = 0;
                for (int64_t l = 0; l < k; ++l) {
                  const double av = bf16_bits_to_float(
                      a[static_cast<size_t>(p * stride_a + (ta ? l * lda + i : i * lda + l))]);
                  const double bv = bf16_bits_to_float(
                      b[static_cast<size_t>(p * stride_b + (tb ? j * ldb + l : l * ldb + j))]);
                  s += av * bv;
                  mag += std::abs(av * bv);
                }
                const size_t ci = static_cast<size_t>(p * stride_c + i * ldc + j);
                const double want = alpha * s + (beta == 0.0f ? 0.0 : beta * double(c0[ci]));
                // f32 accumulation of exact products: k roundings of at most 2^-24 each.
                CHECK(std::abs(c[ci] - want) <= 1e-6 * (std::abs(alpha) * mag + 1.0));
              }
          // Padding between C's rows and matrices is left alone.
          for (int64_t p = 0; p < batch; ++p)
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = n; j < ldc && p * stride_c + i * ldc + j < int64_t(c.size()); ++j) {
                const size_t ci = static_cast<size_t>(p * stride_c + i * ldc + j);
                CHECK((std::isnan(c[ci]) ? std::isnan(c0[ci]) : c[ci] == c0[ci]));
              }
        }
}

TEST_CASE("cpu gemm_bf16 with k = 0 scales C by beta", "[autocast][gemm_bf16]") {
  std::vector<float> c{1.0f, 2.0f, 3.0f, 4.0f};
  kernels::cpu::gemm_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, 0, nullptr, 2, 0, 0.5f,
                          c.data(), 2, 4, 1);
  CHECK(c == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
}
