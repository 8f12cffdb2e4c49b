// bf16 autocast on CUDA against the CPU oracle: the cuBLAS gemm_bf16 kernel
// (C poisoned with NaN when beta = 0, so an unwritten or read C fails), then
// matmul, linear and linear_gelu under AutocastGuard, forward and gradients
// (the backward runs outside the guard, so the captured mode is tested too).
//
// Tolerances: both devices multiply the same bf16 operands (products of two
// bf16 values are exact in f32) and accumulate in f32, only in a different
// order, so results are expected to agree to ~1e-6 (not measured); 1e-4
// relative leaves room for that order at these sizes. linear_gelu's gradients
// get 5e-4: their GEMMs round dz = dy ⊙ GELU'(z) to bf16, and z is expected to
// differ between the devices by the accumulation order (~1e-6), so an element
// lying on a bf16 rounding boundary can round one bf16 ulp (2^-8 relative)
// apart on the two devices. Every case here passed on an H200 (2026-12-04).
#include <catch2/catch.hpp>

#include <functional>
#include <limits>
#include <vector>

#include "core/autocast.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/gemm.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;
using test::random_leaf;

namespace {
const Device kGpu = Device::cuda(0);

// fn applied under an AutocastGuard(true) (the backward runs after it exits).
std::function<Tensor(const std::vector<Tensor>&)> autocast(
    std::function<Tensor(const std::vector<Tensor>&)> fn) {
  return [fn](const std::vector<Tensor>& t) {
    AutocastGuard guard(true);
    return fn(t);
  };
}
}  // namespace

#if VLMC_WITH_CUDA  // the kernel is called directly: CUDA builds only
TEST_CASE("cuda gemm_bf16 matches the CPU kernel", "[cuda][autocast]") {
  const int64_t m = 37, n = 29, k = 70, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool share_b : {false, true})
        for (float beta : {0.0f, 0.5f}) {
          INFO("trans_a " << ta << " trans_b " << tb << " share_b " << share_b << " beta "
                          << beta);
          const Tensor a =
              random_leaf({batch, ta ? k : m, ta ? m : k}, 1).detach().to(DType::bf16);
          const Tensor b =
              random_leaf({share_b ? 1 : batch, tb ? n : k, tb ? k : n}, 2).detach().to(
                  DType::bf16);
          const Tensor c0 = beta == 0.0f
                                ? Tensor::full({batch, m, n}, std::numeric_limits<double>::quiet_NaN())
                                : random_leaf({batch, m, n}, 3).detach();
          Tensor c_cpu = c0.clone(), c_gpu = c0.to(kGpu);
          const Tensor a_gpu = a.to(kGpu), b_gpu = b.to(kGpu);
          const int64_t lda = ta ? m : k, ldb = tb ? k : n;
          const int64_t sa = a.size(1) * a.size(2), sb = share_b ? 0 : b.size(1) * b.size(2);
          const auto bits = [](const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); };
          kernels::cpu::gemm_bf16(ta, tb, m, n, k, 1.5f, bits(a), lda, sa, bits(b), ldb, sb, beta,
                                  c_cpu.data<float>(), n, m * n, batch);
          kernels::cuda::gemm_bf16(ta, tb, m, n, k, 1.5f, bits(a_gpu), lda, sa, bits(b_gpu), ldb,
                                   sb, beta, c_gpu.data<float>(), n, m * n, batch,
                                   cuda::stream(0));
          CHECK_REL(c_gpu.to(Device::cpu()), c_cpu, 1e-5);
        }
}
#endif

TEST_CASE("cuda matmul under autocast matches the CPU", "[cuda][autocast]") {
  const auto mm = autocast([](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); });
  test::compare_cpu_cuda(mm, {random_leaf({45, 70}, 10), random_leaf({70, 33}, 11)}, 1e-4);
  test::compare_cpu_cuda(mm, {random_leaf({3, 21, 40}, 12), random_leaf({40, 17}, 13)}, 1e-4);
  test::compare_cpu_cuda(mm, {random_leaf({2, 9, 24}, 14), random_leaf({2, 24, 31}, 15)}, 1e-4);
}

TEST_CASE("cuda linear under autocast matches the CPU", "[cuda][autocast]") {
  const auto lin =
      autocast([](const std::vector<Tensor>& t) { return linear(t[0], t[1], t[2]); });
  test::compare_cpu_cuda(
      lin, {random_leaf({2, 19, 64}, 20), random_leaf({48, 64}, 21), random_leaf({48}, 22)}, 1e-4);
}

TEST_CASE("cuda linear_gelu under autocast matches the CPU", "[cuda][autocast]") {
  // v3's vector loads (k % 8 == 0) and its scalar path (k = 50).
  for (int64_t k : {64, 50}) {
    INFO("k " << k);
    const std::vector<Tensor> in{random_leaf({70, k}, 30), random_leaf({40, k}, 31),
                                 random_leaf({40}, 32)};
    const auto forward =
        autocast([](const std::vector<Tensor>& t) { return linear_gelu(t[0], t[1], t[2]); });
    // Forward at 1e-4 (no gradient wanted: inputs detached).
    std::vector<Tensor> detached;
    for (const Tensor& t : in) detached.push_back(t.detach());
    const Tensor y_cpu = forward(detached);
    std::vector<Tensor> on_gpu;
    for (const Tensor& t : detached) on_gpu.push_back(t.to(kGpu));
    CHECK_REL(forward(on_gpu).to(Device::cpu()), y_cpu, 1e-4);
    // Gradients (and the forward again, with z kept) at 5e-4, see the header.
    test::compare_cpu_cuda(forward, in, 5e-4);
  }
}
