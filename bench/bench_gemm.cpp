// The CPU GEMMs on both backends (kernels/cpu/onednn_matmul.h), in one run:
// f32 through kernels::cpu::gemm on OpenBLAS and on oneDNN, and bf16
// operands through gemm_bf16 widened to f32 (then oneDNN's f32 kernel) and
// natively on oneDNN, at shapes of the seed's connector and of a TinyLlama layer. Prints
// GFLOP/s (2·M·N·K flops; best of five after a warm-up) and the ratios that
// decide the defaults: oneDNN / OpenBLAS for f32, and for bf16 oneDNN's
// native kernel / the operands widened to f32 (kernels/cpu/onednn_matmul.h).
//
// Validates each backend against a naive triple loop on a small case with
// every transpose combination first, and exits 1 when one fails. --quick (the
// smoke test ctest runs) keeps the validation and times one 256³ product per
// row without a warm-up.
//
//   bench_gemm [--threads N] [--size N] [--quick] [--help]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/dtype.h"
#include "kernels/gemm.h"

extern "C" char* openblas_get_corename(void);  // OpenBLAS: the kernel family it picked for this CPU

namespace {

void usage() {
  std::printf(
      "usage: bench_gemm [--threads N] [--size N] [--quick]\n"
      "  --threads N  threads for OpenMP, OpenBLAS and oneDNN (default: vlmc's, from VLMC_NUM_THREADS or "
      "all cores)\n"
      "  --size N     the square shape's n, timed besides the model shapes (default 2048; with --quick "
      "only n = 256)\n"
      "  --quick      smoke test: validate, then time each row once at 256^3 without warm-up\n");
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

  namespace onednn = vlmc::kernels::cpu::onednn;
  const std::string cpu = vlmc::cpu_model_name();
  std::printf("%s, %d threads; OpenBLAS kernels: %s\n", cpu.c_str(), vlmc::num_threads(), openblas_get_corename());
  std::printf("f32 on oneDNN: %s\nbf16 on oneDNN: %s\n", onednn::describe(onednn::Operands::f32).c_str(),
              onednn::describe(onednn::Operands::bf16).c_str());

  for (bool use_onednn : {false, true}) {
    onednn::set_enabled(use_onednn);
    const double error = validate();
    std::printf("validate %s: 19x23x17, all transposes, max relative error %.2e\n",
                use_onednn ? "oneDNN" : "OpenBLAS", error);
    if (!(error < 1e-5)) {
      std::fprintf(stderr, "bench_gemm: validation FAILED\n");
      return 1;
    }
  }

  struct Shape {
    const char* name;
    int64_t m, n, k;
  };
  std::vector<Shape> shapes;
  if (quick) {
    const int64_t n = size_given ? size : 256;
    shapes.push_back({"square", n, n, n});
  } else {
    shapes.push_back({"square", size, size, size});
    shapes.push_back({"seed MLP fc1 (B=4, N=576, 1024->4096)", 2304, 4096, 1024});
    shapes.push_back({"TinyLlama MLP up (460 tokens, 2048->5632)", 460, 5632, 2048});
    shapes.push_back({"small (800 tokens, 128->256)", 800, 256, 128});
  }
  const int repeats = quick ? 1 : 5;
  std::printf("\n%-44s %10s %10s %10s %10s   %9s %9s\n", "y = x.W^T (M x K times [N, K]^T)", "f32 OBLAS",
              "f32 oDNN", "bf16 wide", "bf16 oDNN", "f32 oD/OB", "nat/wide");
  for (const Shape& sh : shapes) {
    std::vector<float> x(static_cast<size_t>(sh.m * sh.k)), w(static_cast<size_t>(sh.n * sh.k)),
        y(static_cast<size_t>(sh.m * sh.n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7) % 101) / 101.0f - 0.5f;
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 13) % 97) / 97.0f - 0.5f;
    std::vector<uint16_t> xb(x.size()), wb(w.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = vlmc::float_to_bf16_bits(x[i]);
    for (size_t i = 0; i < w.size(); ++i) wb[i] = vlmc::float_to_bf16_bits(w[i]);
    // use_onednn: f32 on oneDNN (else OpenBLAS); bf16 as `path` says.
    const auto gflops = [&](bool use_onednn, onednn::Bf16Path path, const std::function<void()>& run) {
      onednn::set_enabled(use_onednn);
      onednn::set_bf16_path(path);
      if (!quick) run();  // warm-up: primitives, packing buffers, the thread pool, page faults
      double best = INFINITY;
      for (int rep = 0; rep < repeats; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return 2.0 * static_cast<double>(sh.m) * sh.n * sh.k / best / 1e9;
    };
    const auto f32 = [&] {
      vlmc::kernels::cpu::gemm<float>(false, true, sh.m, sh.n, sh.k, 1.0f, x.data(), sh.k, w.data(), sh.k, 0.0f,
                                      y.data(), sh.n);
    };
    const auto bf16 = [&] {
      vlmc::kernels::cpu::gemm_bf16(false, true, sh.m, sh.n, sh.k, 1.0f, xb.data(), sh.k, 0, wb.data(), sh.k, 0,
                                    0.0f, y.data(), sh.n, 0, 1);
    };
    using onednn::Bf16Path;
    const double f32_openblas = gflops(false, Bf16Path::widened, f32);
    const double f32_onednn = gflops(true, Bf16Path::widened, f32);
    const double bf16_widened = gflops(true, Bf16Path::widened, bf16);
    const double bf16_native = gflops(true, Bf16Path::native, bf16);
    const std::string label = std::string(sh.name) + " " + std::to_string(sh.m) + "x" + std::to_string(sh.n) +
                              "x" + std::to_string(sh.k);
    std::printf("%-44s %10.1f %10.1f %10.1f %10.1f   %8.2fx %8.2fx\n", label.c_str(), f32_openblas, f32_onednn,
                bf16_widened, bf16_native, f32_onednn / f32_openblas, bf16_native / bf16_widened);
  }
  onednn::set_enabled(true);
  onednn::set_bf16_path(onednn::Bf16Path::automatic);
  std::printf("(GFLOP/s, best of %d. bf16 wide: the operands widened to f32, then oneDNN's f32 kernel; bf16 "
              "oDNN: oneDNN's bf16 kernel; nat/wide: their ratio. Autocast multiplies natively where oneDNN's "
              "kernel is AMX's, or avx512_core_bf16 on an AMD CPU: kernels/cpu/onednn_matmul.h)\n",
              repeats);
  return 0;
}
