// The CPU GEMMs, f32 (kernels/gemm.h gemm) and bf16 (gemm_bf16), on their two
// backends (kernels/cpu/onednn_matmul.h): oneDNN's matmul and OpenBLAS (bf16:
// the operands widened to f32), each against a naive double loop over the
// stored values: every transpose, padded leading dims, a batch with either
// operand broadcast (stride 0), alpha, beta != 0, and beta == 0 over a
// NaN-poisoned C (never read). Where the build or the CPU has no oneDNN
// kernel, both runs take OpenBLAS and the test says so in its output.
#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/onednn_matmul.h"
#include "kernels/dtype.h"
#include "kernels/gemm.h"

using namespace vlmc;
namespace onednn = vlmc::kernels::cpu::onednn;

namespace {

// oneDNN for every product it can take, bf16 natively even where the
// automatic path would widen (no AMX, not AMD), or OpenBLAS only; the defaults are
// restored when a test ends, failing or not.
struct BackendGuard {
  explicit BackendGuard(bool onednn_on) {
    onednn::set_enabled(onednn_on);
    onednn::set_bf16_path(onednn::Bf16Path::native);
  }
  ~BackendGuard() {
    onednn::set_enabled(true);
    onednn::set_bf16_path(onednn::Bf16Path::automatic);
  }
};

std::vector<float> values(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& e : v) {
    s = s * 1664525u + 1013904223u;
    e = static_cast<float>(s >> 8) / float(1 << 23) - 1.0f;
  }
  return v;
}

// One strided-batched product, f32 (gemm_strided_batched) or bf16 operands
// (gemm_bf16), checked element by element against a double loop over the
// stored values: |c - want| <= 1e-6 * (|alpha| * sum |a*b| + |beta * c0|).
template <bool kBf16>
void check_product(bool ta, bool tb, int broadcast, float alpha, float beta, int64_t batch, int64_t m = 13,
                   int64_t pad_c = 3) {
  using Stored = std::conditional_t<kBf16, uint16_t, float>;
  const auto stored = [](size_t count, uint32_t seed) {
    const std::vector<float> v = values(count, seed);
    std::vector<Stored> out(count);
    for (size_t i = 0; i < count; ++i) {
      if constexpr (kBf16) {
        out[i] = float_to_bf16_bits(v[i]);
      } else {
        out[i] = v[i];
      }
    }
    return out;
  };
  const auto value = [](Stored x) -> double {
    if constexpr (kBf16) {
      return bf16_bits_to_float(x);
    } else {
      return x;
    }
  };
  const int64_t n = 11, k = 37, pad = 3;
  const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, lda = a_cols + pad;
  const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_cols + pad;
  const int64_t ldc = n + pad_c;
  const int64_t stride_a = broadcast == 1 ? 0 : a_rows * lda + 5;
  const int64_t stride_b = broadcast == 2 ? 0 : b_rows * ldb + 2;
  const int64_t stride_c = m * ldc + 1;
  const auto a = stored(static_cast<size_t>((batch - 1) * stride_a + a_rows * lda), 1);
  const auto b = stored(static_cast<size_t>((batch - 1) * stride_b + b_rows * ldb), 2);
  const float poison = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.75f;
  std::vector<float> c(static_cast<size_t>(batch * stride_c), poison);
  const std::vector<float> c0 = c;
  if constexpr (kBf16) {
    kernels::cpu::gemm_bf16(ta, tb, m, n, k, alpha, a.data(), lda, stride_a, b.data(), ldb, stride_b, beta, c.data(),
                            ldc, stride_c, batch);
  } else {
    kernels::cpu::gemm_strided_batched<float>(ta, tb, m, n, k, alpha, a.data(), lda, stride_a, b.data(), ldb,
                                              stride_b, beta, c.data(), ldc, stride_c, batch);
  }
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0, mag = 0;
        for (int64_t l = 0; l < k; ++l) {
          const double av = value(a[static_cast<size_t>(p * stride_a + (ta ? l * lda + i : i * lda + l))]);
          const double bv = value(b[static_cast<size_t>(p * stride_b + (tb ? j * ldb + l : l * ldb + j))]);
          s += av * bv;
          mag += std::abs(av * bv);
        }
        const size_t ci = static_cast<size_t>(p * stride_c + i * ldc + j);
        const double old = beta == 0.0f ? 0.0 : beta * double(c0[ci]);
        CHECK(std::abs(c[ci] - (alpha * s + old)) <= 1e-6 * (std::abs(alpha) * mag + std::abs(old)) + 1e-30);
      }
  // Padding between C's rows and matrices is left alone.
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = n; j < ldc && p * stride_c + i * ldc + j < int64_t(c.size()); ++j) {
        const size_t ci = static_cast<size_t>(p * stride_c + i * ldc + j);
        CHECK((std::isnan(c[ci]) ? std::isnan(c0[ci]) : c[ci] == c0[ci]));
      }
}

template <bool kBf16>
void check_products_on_both_backends() {
  const onednn::Operands operands = kBf16 ? onednn::Operands::bf16 : onednn::Operands::f32;
  for (bool use_onednn : {true, false}) {
    const BackendGuard guard(use_onednn);
    const std::string backend = onednn::describe(operands);
    WARN((kBf16 ? "bf16" : "f32") << " backend: " << backend);
    if (use_onednn && onednn::enabled(operands)) CHECK(backend.rfind("oneDNN", 0) == 0);
    if (!use_onednn) CHECK(backend.rfind("OpenBLAS", 0) == 0);
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        // Three matrices (none, a or b shared), and one alone (oneDNN takes its strided
        // rows of C through a dense buffer).
        for (int broadcast = 0; broadcast < 4; ++broadcast)
          for (float beta : {0.0f, 0.5f, 1.0f})
            for (float alpha : {1.0f, -1.25f}) {
              const int64_t batch = broadcast == 3 ? 1 : 3;
              INFO(backend << ": trans_a " << ta << " trans_b " << tb << " broadcast " << broadcast << " batch "
                           << batch << " alpha " << alpha << " beta " << beta);
              check_product<kBf16>(ta, tb, broadcast == 3 ? 0 : broadcast, alpha, beta, batch);
            }
  }
}

// Products of one matrix with enough rows to be split into a panel per thread
// (kernels/cpu/onednn_matmul.cpp), 45 rows so the panels differ in height, on 2
// and 3 threads: C dense (the panels write it in place, beta's sum included)
// and with padded rows (through the dense buffer).
template <bool kBf16>
void check_row_panels() {
  const BackendGuard guard(true);
  const int saved = omp_get_max_threads();
  for (const int threads : {2, 3}) {
    omp_set_num_threads(threads);
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const int64_t pad_c : {0, 3})
          for (float beta : {0.0f, 1.0f})
            for (float alpha : {1.0f, -1.25f}) {
              INFO("threads " << threads << " trans_a " << ta << " trans_b " << tb << " ldc n + " << pad_c << " alpha "
                              << alpha << " beta " << beta);
              check_product<kBf16>(ta, tb, 0, alpha, beta, 1, 45, pad_c);
            }
  }
  omp_set_num_threads(saved);
}

// linear's product, C = op(A)·op(B) + bias in every row (gemm_bias, gemm_bf16_bias),
// against a double loop: C NaN-poisoned (never read), its padding untouched.
template <bool kBf16>
void check_bias_product(bool ta, bool tb, int64_t m, int64_t pad_c) {
  const int64_t n = 11, k = 37, pad = 2, ldc = n + pad_c;
  const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad;
  const std::vector<float> av = values(static_cast<size_t>((ta ? k : m) * lda), 7);
  const std::vector<float> bv = values(static_cast<size_t>((tb ? n : k) * ldb), 8);
  const std::vector<float> bias = values(static_cast<size_t>(n), 9);
  std::vector<uint16_t> ah(av.size()), bh(bv.size());
  for (size_t i = 0; i < av.size(); ++i) ah[i] = float_to_bf16_bits(av[i]);
  for (size_t i = 0; i < bv.size(); ++i) bh[i] = float_to_bf16_bits(bv[i]);
  std::vector<float> c(static_cast<size_t>(m * ldc), std::numeric_limits<float>::quiet_NaN());
  if constexpr (kBf16) {
    kernels::cpu::gemm_bf16_bias(ta, tb, m, n, k, ah.data(), lda, bh.data(), ldb, bias.data(), c.data(), ldc);
  } else {
    kernels::cpu::gemm_bias<float>(ta, tb, m, n, k, av.data(), lda, bv.data(), ldb, bias.data(), c.data(), ldc);
  }
  const auto a_at = [&](int64_t i, int64_t l) {
    const size_t at = static_cast<size_t>(ta ? l * lda + i : i * lda + l);
    return kBf16 ? double(bf16_bits_to_float(ah[at])) : double(av[at]);
  };
  const auto b_at = [&](int64_t l, int64_t j) {
    const size_t at = static_cast<size_t>(tb ? j * ldb + l : l * ldb + j);
    return kBf16 ? double(bf16_bits_to_float(bh[at])) : double(bv[at]);
  };
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = bias[static_cast<size_t>(j)], mag = std::abs(s);
      for (int64_t l = 0; l < k; ++l) {
        s += a_at(i, l) * b_at(l, j);
        mag += std::abs(a_at(i, l) * b_at(l, j));
      }
      INFO("row " << i << " column " << j);
      CHECK(std::abs(c[static_cast<size_t>(i * ldc + j)] - s) <= 1e-6 * mag);
    }
    for (int64_t j = n; j < ldc; ++j) CHECK(std::isnan(c[static_cast<size_t>(i * ldc + j)]));
  }
}

}  // namespace

TEST_CASE("cpu gemm_bias and gemm_bf16_bias add the bias to every row on both backends, 1-3 threads",
          "[gemm][gemm_bf16][onednn][threads]") {
  const int saved = omp_get_max_threads();
  for (bool use_onednn : {true, false}) {
    const BackendGuard guard(use_onednn);
    for (const int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          // 13 rows: one product; 45: a panel per thread on 2 and 3 (kMinPanelRows).
          for (const int64_t m : {13, 45})
            for (const int64_t pad_c : {0, 3}) {
              INFO((use_onednn ? onednn::describe(onednn::Operands::f32) : std::string("OpenBLAS"))
                   << ", threads " << threads << " trans_a " << ta << " trans_b " << tb << " m " << m << " ldc n + "
                   << pad_c);
              check_bias_product<false>(ta, tb, m, pad_c);
              check_bias_product<true>(ta, tb, m, pad_c);
            }
    }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("cpu gemm f32 and bf16: products split into row panels per thread match a naive loop",
          "[gemm][onednn][threads]") {
  check_row_panels<false>();
  check_row_panels<true>();
}

TEST_CASE("cpu gemm_bf16: heights oneDNN's AMX blocking serves badly run as two products and match a naive loop",
          "[gemm_bf16][onednn]") {
  // The rule (onednn_matmul.h): the largest divisor of m in [32, 64], when over
  // 48, whose largest divisor up to 16 is 3 or less.
  CHECK(onednn::amx_head_rows(464) == 448);  // block 58, tiles of 2
  CHECK(onednn::amx_head_rows(472) == 448);  // 59, 1
  CHECK(onednn::amx_head_rows(992) == 960);  // 62, 2
  CHECK(onednn::amx_head_rows(408) == 384);  // 51, 3
  CHECK(onednn::amx_head_rows(480) == 0);    // 60, 15
  CHECK(onednn::amx_head_rows(376) == 0);    // 47: blocks of 48 are weighed too
  CHECK(onednn::amx_head_rows(458) == 0);    // no divisor in [32, 64]
  CHECK(onednn::amx_head_rows(116) == 0);    // 58, but under 128 rows
  // One thread, so the rows are not split into panels first. On a CPU with
  // AMX these products run as 448 rows and 16; elsewhere as one.
  const BackendGuard guard(true);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const int64_t pad_c : {0, 3})
        for (float beta : {0.0f, 1.0f})
          for (float alpha : {1.0f, -1.25f}) {
            INFO("trans_a " << ta << " trans_b " << tb << " ldc n + " << pad_c << " alpha " << alpha << " beta "
                            << beta << ": " << onednn::describe(onednn::Operands::bf16));
            check_product<true>(ta, tb, 0, alpha, beta, 1, 464, pad_c);
          }
  omp_set_num_threads(saved);
}

TEST_CASE("cpu gemm f32: oneDNN and OpenBLAS both match a naive loop", "[gemm][onednn]") {
  check_products_on_both_backends<false>();
}

TEST_CASE("cpu gemm_bf16: oneDNN and the widened OpenBLAS product both match a naive loop", "[gemm_bf16][autocast]") {
  check_products_on_both_backends<true>();
}

TEST_CASE("cpu gemm_bf16 with k = 0 scales C by beta", "[gemm_bf16][autocast]") {
  std::vector<float> c{1.0f, 2.0f, 3.0f, 4.0f};
  kernels::cpu::gemm_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, 0, nullptr, 2, 0, 0.5f, c.data(), 2, 4, 1);
  CHECK(c == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
}

TEST_CASE("cpu gemm f32 repeats bit for bit, and the same from inside a parallel region", "[gemm][onednn]") {
  const int64_t m = 70, n = 90, k = 300;
  const auto a = values(static_cast<size_t>(m * k), 3), b = values(static_cast<size_t>(k * n), 4);
  const auto run = [&](std::vector<float>& c) {
    kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  };
  std::vector<float> first(static_cast<size_t>(m * n)), second(first.size());
  run(first);
  run(second);
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  // Called by each thread of a team (a caller's own parallel loop): every
  // thread's product is whole, whatever the library does with its threads.
  std::vector<std::vector<float>> per_thread(4, std::vector<float>(first.size()));
#pragma omp parallel for num_threads(2) schedule(static)
  for (int t = 0; t < 4; ++t) run(per_thread[static_cast<size_t>(t)]);
  for (const auto& c : per_thread)
    for (size_t i = 0; i < c.size(); ++i) CHECK(std::abs(c[i] - first[i]) <= 1e-5 * (std::abs(first[i]) + 1.0));
}

TEST_CASE("cpu gemm: a shape's kept oneDNN memory objects follow every call's buffers, on every thread",
          "[gemm][onednn]") {
  // One shape, two sets of buffers, alternated: each thread keeps the shape's
  // memory objects and points them at the call's buffers (onednn_matmul.cpp,
  // bound()); a stale pointer would write into, or read from, the other set.
  const BackendGuard guard(true);
  const int64_t m = 40, n = 24, k = 33;
  const auto naive = [&](const std::vector<float>& a, const std::vector<float>& b) {
    std::vector<float> c(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) acc += double(a[size_t(i * k + p)]) * double(b[size_t(p * n + j)]);
        c[size_t(i * n + j)] = static_cast<float>(acc);
      }
    return c;
  };
  std::vector<std::vector<float>> as, bs, wants;
  for (uint32_t set = 0; set < 4; ++set) {
    as.push_back(values(static_cast<size_t>(m * k), 10 + set));
    bs.push_back(values(static_cast<size_t>(k * n), 20 + set));
    wants.push_back(naive(as.back(), bs.back()));
  }
  const auto close = [&](const std::vector<float>& c, const std::vector<float>& want) {
    double worst = 0;
    for (size_t i = 0; i < c.size(); ++i) worst = std::max(worst, double(std::abs(c[i] - want[i])));
    return worst <= 1e-4;
  };
  for (int round = 0; round < 3; ++round)
    for (size_t set = 0; set < as.size(); ++set) {
      std::vector<float> c(static_cast<size_t>(m * n), std::nanf(""));
      kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, as[set].data(), k, bs[set].data(), n, 0.0f, c.data(), n);
      INFO("round " << round << " set " << set);
      CHECK(close(c, wants[set]));
    }
  // Each thread of a caller's team with its own set, at once.
  std::vector<std::vector<float>> outs(as.size(), std::vector<float>(static_cast<size_t>(m * n)));
#pragma omp parallel for num_threads(2) schedule(static)
  for (int64_t set = 0; set < static_cast<int64_t>(as.size()); ++set)
    kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, as[size_t(set)].data(), k, bs[size_t(set)].data(), n, 0.0f,
                              outs[size_t(set)].data(), n);
  for (size_t set = 0; set < as.size(); ++set) CHECK(close(outs[set], wants[set]));
}

TEST_CASE("cpu gemm_bf16: oneDNN and the widened OpenBLAS product agree", "[gemm_bf16][onednn]") {
  const int64_t m = 33, n = 65, k = 130;
  std::vector<uint16_t> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(n * k));
  const auto av = values(a.size(), 5), bv = values(b.size(), 6);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float_to_bf16_bits(av[i]);
  for (size_t i = 0; i < b.size(); ++i) b[i] = float_to_bf16_bits(bv[i]);
  std::vector<std::vector<float>> out;
  for (bool use_onednn : {true, false}) {
    const BackendGuard guard(use_onednn);
    WARN("bf16 backend: " << onednn::describe(onednn::Operands::bf16));
    out.emplace_back(static_cast<size_t>(m * n));
    kernels::cpu::gemm_bf16(false, true, m, n, k, 1.0f, a.data(), k, 0, b.data(), k, 0, 0.0f, out.back().data(), n,
                            0, 1);
  }
  for (size_t i = 0; i < out[0].size(); ++i) CHECK(std::abs(out[0][i] - out[1][i]) <= 1e-5 * (std::abs(out[1][i]) + 1.0));
}
