// CUDA matmul and linear (cuBLAS) against the CPU oracle (OpenBLAS), forward
// and gradients, f32 at 1e-5.
#include <algorithm>
#include <cmath>
#include <catch2/catch.hpp>
#include <functional>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/gemm.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;
using test::random_leaf;
using Catch::Contains;

namespace {
const Device kGpu = Device::cuda(0);
}  // namespace

// The kernels are called directly here; they exist only in a CUDA build.
#if VLMC_WITH_CUDA
TEST_CASE("cuda gemm kernel matches the CPU kernel for every transpose", "[cuda][linalg]") {
  const int64_t m = 37, n = 29, k = 65, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      const Tensor a = random_leaf({batch, ta ? k : m, ta ? m : k}, 1).detach();
      const Tensor b = random_leaf({batch, tb ? n : k, tb ? k : n}, 2).detach();
      const Tensor c0 = random_leaf({batch, m, n}, 3).detach();
      Tensor c_cpu = c0.clone(), c_gpu = c0.to(kGpu);
      const Tensor a_gpu = a.to(kGpu), b_gpu = b.to(kGpu);
      const int64_t lda = ta ? m : k, ldb = tb ? k : n;
      kernels::cpu::gemm_strided_batched<float>(
          ta, tb, m, n, k, 1.5f, a.data<float>(), lda, a.size(1) * a.size(2), b.data<float>(), ldb,
          b.size(1) * b.size(2), 0.5f, c_cpu.data<float>(), n, m * n, batch);
      kernels::cuda::gemm_strided_batched<float>(ta, tb, m, n, k, 1.5f, a_gpu.data<float>(), lda,
                                                 a.size(1) * a.size(2), b_gpu.data<float>(), ldb,
                                                 b.size(1) * b.size(2), 0.5f, c_gpu.data<float>(),
                                                 n, m * n, batch, cuda::stream(0));
      CHECK_REL(c_gpu.to(Device::cpu()), c_cpu, 1e-5);
    }
}

TEST_CASE("cuda gemm with k = 0 gives beta * C, as kernels/gemm.h says", "[cuda][linalg]") {
  const int64_t m = 5, n = 7;
  const Tensor operand = Tensor::zeros({1}, DType::f32, kGpu);  // never read
  Tensor c = Tensor::full({m, n}, NAN, DType::f32, kGpu);        // beta = 0: written, not read
  kernels::cuda::gemm<float>(false, false, m, n, 0, 1.0f, operand.data<float>(), 1, operand.data<float>(), n,
                             0.0f, c.data<float>(), n, cuda::stream(0));
  CHECK(c.to(Device::cpu()).to_vector<float>() == std::vector<float>(m * n, 0.0f));
  Tensor d = Tensor::full({m, n}, 2.0, DType::f32, kGpu);
  kernels::cuda::gemm<float>(false, false, m, n, 0, 1.0f, operand.data<float>(), 1, operand.data<float>(), n,
                             0.5f, d.data<float>(), n, cuda::stream(0));
  CHECK(d.to(Device::cpu()).to_vector<float>() == std::vector<float>(m * n, 1.0f));
}
#endif

TEST_CASE("cuda matmul matches the CPU", "[cuda][linalg]") {
  const auto mm = [](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); };
  uint64_t seed = 10;
  const std::vector<std::pair<Shape, Shape>> cases{{{1, 1}, {1, 1}},
                                                   {{3, 5}, {5, 7}},
                                                   {{2, 1, 3, 4}, {5, 4, 2}},
                                                   {{4, 65, 33}, {33, 17}},
                                                   {{17, 33}, {3, 33, 9}},
                                                   {{300, 257}, {257, 301}},  // > 64K outputs
                                                   {{7}, {7}},
                                                   {{7}, {2, 7, 3}},
                                                   {{2, 3, 7}, {7}},
                                                   {{1, 70000}, {70000, 1}}};
  for (const auto& [sa, sb] : cases) {
    INFO(shape_str(sa) << " x " << shape_str(sb));
    // A dot product of K random terms is ~sqrt(K) while its terms sum to ~K in
    // magnitude: the f32 rounding of two summation orders differs relative to
    // the result by ~eps*sqrt(K) (1.2e-5 at K = 70000 on an H200, 2026-12-04),
    // so the tolerance grows with sqrt(K) beyond 4096 terms.
    const double k = static_cast<double>(sa.back());
    const double tol = 1e-5 * std::max(1.0, std::sqrt(k / 4096.0));
    test::compare_cpu_cuda(mm, {random_leaf(sa, seed), random_leaf(sb, seed + 1)}, tol);
    seed += 2;
  }
  // Non-contiguous operands (transposed views and a narrow).
  test::compare_cpu_cuda(
      [](const std::vector<Tensor>& t) {
        return matmul(t[0].transpose(-1, -2), t[1].narrow(1, 2, 9));
      },
      {random_leaf({3, 33, 20}, 40), random_leaf({33, 12}, 41)});
  // f64 goes through cublasDgemm.
  test::compare_cpu_cuda(mm, {random_leaf({5, 31, 17}, 42, DType::f64), random_leaf({17, 23}, 43, DType::f64)},
          1e-12);
}

TEST_CASE("cuda linear matches the CPU", "[cuda][linalg]") {
  const auto lin = [](const std::vector<Tensor>& t) {
    return linear(t[0], t[1], t.size() > 2 ? t[2] : Tensor());
  };
  uint64_t seed = 50;
  for (const auto& [x, in, out] : std::vector<std::tuple<Shape, int64_t, int64_t>>{
           {{1}, 1, 1}, {{3, 5}, 5, 7}, {{2, 300, 257}, 257, 129}, {{4, 9, 33}, 33, 1}}) {
    INFO(shape_str(x) << " in " << in << " out " << out);
    test::compare_cpu_cuda(lin,
            {random_leaf(x, seed), random_leaf({out, in}, seed + 1), random_leaf({out}, seed + 2)});
    test::compare_cpu_cuda(lin, {random_leaf(x, seed + 3), random_leaf({out, in}, seed + 4)});  // no bias
    seed += 5;
  }
  // Frozen weight: no weight gradient on CUDA either.
  Tensor w = random_leaf({6, 8}, 70).detach().to(kGpu);
  Tensor x = random_leaf({4, 8}, 71).detach().to(kGpu);
  x.set_requires_grad(true);
  sum(linear(x, w)).backward();
  CHECK(x.grad().defined());
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("cuda linalg errors", "[cuda][linalg]") {
  REQUIRE_THROWS_WITH(matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}, DType::f32, kGpu)),
                      Contains("matmul: tensors on cpu and cuda:0"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 3}, DType::f32, kGpu), Tensor::zeros({4, 3})),
                      Contains("linear: tensors on cuda:0 and cpu"));
}
