// CPU sgemm through kernels::cpu::gemm (Eigen -> OpenBLAS).
//
// Validates the kernel against a naive triple loop on a small case with every
// transpose combination, then times an n x n x n sgemm: one warm-up, best of
// five, reported as GFLOP/s (2 n³ flops per product) with the thread count.
// --quick (the smoke test ctest runs) keeps the validation and times one
// 256³ product without a warm-up; it exits 1 when validation fails, as the
// full run does.
//
//   bench_gemm [--threads N] [--size N] [--quick] [--help]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/threads.h"
#include "kernels/gemm.h"

namespace {

void usage() {
  std::printf(
      "usage: bench_gemm [--threads N] [--size N] [--quick]\n"
      "  --threads N  threads for OpenMP and OpenBLAS (default: vlmc's, from VLMC_NUM_THREADS or "
      "all cores)\n"
      "  --size N     square problem size n for the timed n x n x n sgemm (default 2048; 256 with "
      "--quick)\n"
      "  --quick      smoke test: validate, then time one sgemm without warm-up\n");
}

// Returns the largest relative error of the kernel against a naive loop over
// m x n x k with padded leading dims, over all four transpose combinations.
double validate() {
  const int64_t m = 19, n = 23, k = 17, pad = 3;
  double worst = 0;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      std::vector<float> a(static_cast<size_t>((ta ? k : m) * lda)),
          b(static_cast<size_t>((tb ? n : k) * ldb));
      std::vector<float> c(static_cast<size_t>(m * ldc), NAN);
      for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.37f * static_cast<float>(i));
      for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(0.11f * static_cast<float>(i));
      vlmc::kernels::cpu::gemm<float>(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                                      c.data(), ldc);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0, mag = 0;
          for (int64_t l = 0; l < k; ++l) {
            const double av =
                ta ? a[static_cast<size_t>(l * lda + i)] : a[static_cast<size_t>(i * lda + l)];
            const double bv =
                tb ? b[static_cast<size_t>(j * ldb + l)] : b[static_cast<size_t>(l * ldb + j)];
            s += av * bv;
            mag += std::fabs(av * bv);
          }
          const double err =
              std::fabs(c[static_cast<size_t>(i * ldc + j)] - s) / std::max(mag, 1e-30);
          worst = std::max(worst, std::isnan(err) ? INFINITY : err);
        }
    }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t size = 2048;
  bool quick = false, size_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else if (arg == "--quick") {
      quick = true;
    } else if ((arg == "--threads" || arg == "--size") && i + 1 < argc) {
      char* end = nullptr;
      const long value = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || value < 1) {
        std::fprintf(stderr, "bench_gemm: %s expects a positive integer, got '%s'\n", arg.c_str(),
                     argv[i]);
        return 2;
      }
      if (arg == "--threads") {
        vlmc::set_num_threads(static_cast<int>(value));
      } else {
        size = value;
        size_given = true;
      }
    } else {
      std::fprintf(stderr, "bench_gemm: unknown argument '%s'\n", arg.c_str());
      usage();
      return 2;
    }
  }

  const double error = validate();
  std::printf("validate: 19x23x17, all transposes, max relative error %.2e\n", error);
  if (!(error < 1e-5)) {
    std::fprintf(stderr, "bench_gemm: validation FAILED\n");
    return 1;
  }

  const int64_t n = quick && !size_given ? 256 : size;
  const int repeats = quick ? 1 : 5;
  std::vector<float> a(static_cast<size_t>(n * n)), b(a.size()), c(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>((i * 7) % 101) / 101.0f - 0.5f;
    b[i] = static_cast<float>((i * 13) % 97) / 97.0f - 0.5f;
  }
  const auto run = [&] {
    vlmc::kernels::cpu::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                                    c.data(), n);
  };
  if (!quick) run();  // warm-up: OpenBLAS buffers, thread pool, page faults
  double best = INFINITY;
  for (int rep = 0; rep < repeats; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  const double gflops = 2.0 * static_cast<double>(n) * n * n / best / 1e9;
  std::printf("sgemm %ldx%ldx%ld: best of %d %.2f ms, %.1f GFLOP/s, %d threads\n",
              static_cast<long>(n), static_cast<long>(n), static_cast<long>(n), repeats, best * 1e3, gflops,
              vlmc::num_threads());
  return 0;
}
