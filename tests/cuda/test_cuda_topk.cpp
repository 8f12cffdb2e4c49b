// CUDA against CPU for topk_indices and gather_rows: random scores with
// deliberate ties and NaNs, both radix-select versions (keys cached in shared
// memory, and re-read from global memory for long rows), more rows than one
// grid holds, every copy width; output buffers poisoned before each kernel
// call so unwritten elements fail the comparison.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/topk.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const Device kGpu = Device::cuda(0);

// Scores from a few distinct values (ties everywhere), a sprinkle of NaN and
// -0.0, in the given dtype.
Tensor tied_scores(int64_t rows, int64_t n, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> v(static_cast<size_t>(rows * n));
  const int64_t levels = 1 + static_cast<int64_t>(rng() % 50);
  for (double& x : v) {
    const uint64_t r = rng() % 1000;
    x = r == 0 ? NAN : r == 1 ? -0.0 : static_cast<double>(static_cast<int64_t>(rng() % levels)) - levels / 2.0;
  }
  return Tensor::from_vector(v, {rows, n}).to(dtype);
}

// Distinct random positions per row (a permutation prefix), not sorted.
Tensor distinct_indices(int64_t rows, int64_t n, int64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> out;
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    out.insert(out.end(), perm.begin(), perm.begin() + k);
  }
  return Tensor::from_vector(out, {rows, k});
}

}  // namespace

TEST_CASE("cuda topk_indices matches the CPU on tied and NaN scores", "[cuda][topk]") {
  uint64_t seed = 500;
  // v2 (cached keys) up to n = 10240 (f32) / 5120 (f64); v1 beyond.
  for (auto [rows, n, k] : std::vector<std::array<int64_t, 3>>{{1, 1, 1},
                                                               {4, 576, 144},
                                                               {16, 576, 144},
                                                               {3, 257, 100},
                                                               {2, 4096, 4096},
                                                               {3, 4096, 1},
                                                               {2, 6000, 2999},
                                                               {2, 12000, 700},
                                                               {70000, 3, 2}}) {
    for (const DType dtype : {DType::f32, DType::f64}) {
      INFO(rows << "x" << n << " k=" << k << " " << dtype_name(dtype));
      const Tensor scores = tied_scores(rows, n, dtype, seed++);
      const Tensor want = topk_indices(scores, k);
      const Tensor scores_gpu = scores.to(kGpu);
#if VLMC_WITH_CUDA  // the kernels exist only in a CUDA build
      // Kernel level, into a poisoned buffer.
      Tensor out = Tensor::full({rows, k}, -77, DType::i64, kGpu);
      if (dtype == DType::f32) {
        kernels::cuda::topk_indices<float>(out.data<int64_t>(), scores_gpu.data<float>(), rows, n, k, cuda::stream(0));
      } else {
        kernels::cuda::topk_indices<double>(out.data<int64_t>(), scores_gpu.data<double>(), rows, n, k, cuda::stream(0));
      }
      CHECK(out.to_vector<int64_t>() == want.to_vector<int64_t>());
#endif
      // Op level.
      const Tensor got = topk_indices(scores_gpu, k);
      CHECK(got.device() == kGpu);
      CHECK(got.to_vector<int64_t>() == want.to_vector<int64_t>());
    }
  }
}

TEST_CASE("cuda topk_indices on continuous scores (the seed's sigmoid)", "[cuda][topk]") {
  Generator gen(77);
  const Tensor scores = sigmoid(Tensor::randn({16, 576}, gen));
  CHECK(topk_indices(scores.to(kGpu), 144).to_vector<int64_t>() == topk_indices(scores, 144).to_vector<int64_t>());
}

TEST_CASE("cuda gather_rows matches the CPU, forward and backward", "[cuda][topk]") {
  uint64_t seed = 600;
  for (auto [rows, n, d, k] : std::vector<std::array<int64_t, 4>>{
           {1, 1, 1, 1}, {4, 576, 1024, 144}, {2, 5, 3, 5}, {3, 100, 7, 50}, {2, 33, 4, 1}, {70000, 2, 1, 1}}) {
    for (const DType dtype : {DType::f32, DType::f64}) {
      INFO(rows << "x" << n << "x" << d << " k=" << k << " " << dtype_name(dtype));
      Generator gen(seed++);
      const Tensor x = Tensor::randn({rows, n, d}, gen, dtype);
      const Tensor idx = distinct_indices(rows, n, k, seed++);
      const Tensor xg = x.to(kGpu), idxg = idx.to(kGpu);

      const Tensor g = Tensor::randn({rows, k, d}, gen, dtype);
      const Tensor gg = g.to(kGpu);
#if VLMC_WITH_CUDA  // the kernels exist only in a CUDA build
      // Kernel level: forward into NaN, inverse into a poisoned map, backward into NaN.
      const int64_t row_bytes = d * static_cast<int64_t>(dtype_size(dtype));
      Tensor y = Tensor::full({rows, k, d}, NAN, dtype, kGpu);
      kernels::cuda::gather_rows(y.data_ptr(), xg.data_ptr(), idxg.data<int64_t>(), rows, n, k, row_bytes,
                                 cuda::stream(0));
      CHECK_REL(y.to(Device::cpu()), gather_rows(x, idx), 1e-5);
      Tensor inverse = Tensor::full({rows, n}, 12345, DType::i64, kGpu);
      Tensor error = Tensor::zeros({3}, DType::i64, kGpu);
      kernels::cuda::invert_row_indices(inverse.data<int64_t>(), error.data<int64_t>(), idxg.data<int64_t>(), rows,
                                        n, k, cuda::stream(0));
      CHECK(error.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0});
      std::vector<int64_t> inverse_cpu(static_cast<size_t>(rows * n));
      int64_t error_cpu[3] = {0, 0, 0};
      kernels::cpu::invert_row_indices(inverse_cpu.data(), error_cpu, idx.data<int64_t>(), rows, n, k);
      CHECK(inverse.to_vector<int64_t>() == inverse_cpu);
      Tensor dx = Tensor::full({rows, n, d}, NAN, dtype, kGpu);
      kernels::cuda::gather_rows_backward(dx.data_ptr(), gg.data_ptr(), inverse.data<int64_t>(), rows, n, k,
                                          row_bytes, cuda::stream(0));
      Tensor dx_cpu = Tensor::full({rows, n, d}, NAN, dtype);
      kernels::cpu::gather_rows_backward(dx_cpu.data_ptr(), g.data_ptr(), inverse_cpu.data(), rows, n, k, row_bytes);
      CHECK_REL(dx.to(Device::cpu()), dx_cpu, 1e-5);
#endif

      // Op level with autograd.
      Tensor xc = x.clone(), xgl = x.to(kGpu);
      xc.set_requires_grad(true);
      xgl.set_requires_grad(true);
      const Tensor yc = gather_rows(xc, idx), yg = gather_rows(xgl, idx);  // CPU indices for a GPU x
      CHECK_REL(yg.to(Device::cpu()), yc, 1e-5);
      yc.backward(g);
      yg.backward(gg);
      CHECK_REL(xgl.grad().to(Device::cpu()), xc.grad(), 1e-5);
    }
  }
}

TEST_CASE("cuda gather_rows moves rows of odd byte sizes and alignments", "[cuda][topk]") {
  // u8 rows of 3 bytes (1-byte units), i64 rows at an odd element offset.
  const Tensor x = Tensor::arange(2 * 5 * 3).to(DType::u8).view({2, 5, 3});
  const Tensor idx = distinct_indices(2, 5, 3, 9);
  CHECK(gather_rows(x.to(kGpu), idx.to(kGpu)).to_vector<int64_t>() == gather_rows(x, idx).to_vector<int64_t>());
  const Tensor big = Tensor::arange(1 + 2 * 5 * 6);
  const Tensor shifted = big.narrow(0, 1, 60).view({2, 5, 6});  // data pointer 8 bytes past 16-byte alignment
  const Tensor big_gpu = big.to(kGpu);
  CHECK(gather_rows(big_gpu.narrow(0, 1, 60).view({2, 5, 6}), idx).to_vector<int64_t>() ==
        gather_rows(shifted, idx).to_vector<int64_t>());
}

TEST_CASE("cuda gather_rows reports bad indices", "[cuda][topk]") {
  const Tensor x = Tensor::zeros({2, 5, 3}, DType::f32, kGpu);
  // Reported at the next synchronisation, not at the call (no host wait there).
  const Tensor outside = gather_rows(x, Tensor::from_vector(std::vector<int64_t>{0, 5, 1, 2}, {2, 2}).to(kGpu));
  REQUIRE_THROWS_WITH(outside.to_vector<float>(), Catch::Contains("gather_rows: index 5 in row 0 is outside [0, 5)"));
  (void)gather_rows(x, Tensor::from_vector(std::vector<int64_t>{0, 1, 3, 3}, {2, 2}).to(kGpu));
  REQUIRE_THROWS_WITH(cuda::synchronize(0), Catch::Contains("gather_rows: index 3 appears twice in row 1"));
}
