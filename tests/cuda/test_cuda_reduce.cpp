// CUDA reductions against the CPU: sum, mean, max, argmax and sum_to on fresh
// random f32 inputs, forward values and gradients within 1e-5 relative, and
// indices equal. Shapes reach every kernel path: short rows (warp per row),
// long rows (block per row), rows and columns split over the grid (few
// outputs, long r), one element, and more than 64K elements.
#include <cmath>
#include <functional>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/reduce.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

using Fn = std::function<Tensor(const Tensor&)>;

const Device kGpu = Device::cuda(0);

// Compares fn on the CPU and the GPU for fresh N(0,1) inputs of shape s, with
// the gradient of a random projection of the output.
void compare(const Fn& fn, const Shape& s, uint64_t seed) {
  Generator gen(seed);
  Tensor c = Tensor::randn(s, gen);
  Tensor g = c.to(kGpu);
  c.set_requires_grad(true);
  g.set_requires_grad(true);
  const Tensor out_c = fn(c), out_g = fn(g);
  REQUIRE(out_g.device() == kGpu);
  REQUIRE(out_g.shape() == out_c.shape());
  CHECK_REL(out_g, out_c, 1e-5);
  const Tensor grad = Tensor::randn(out_c.shape(), gen);
  out_c.backward(grad);
  out_g.backward(grad.to(kGpu));
  REQUIRE(g.grad().defined());
  CHECK_REL(g.grad(), c.grad(), 1e-5);
}

struct DimCase {
  Shape shape;
  std::vector<int64_t> dims;
};

// outer/r/inner per case noted: the kernel path each exercises.
const std::vector<DimCase> kDimCases = {
    {{1}, {0}},                 // one element
    {{7, 13}, {1}},             // short rows, warp per row
    {{7, 13}, {0}},             // columns, inner 13
    {{257, 1025}, {1}},         // long rows, block per row
    {{4097, 5}, {-1}},          // many short rows
    {{3, 100001}, {1}},         // few long rows: split rows
    {{100001, 3}, {0}},         // few columns, long r: split columns
    {{33, 65, 17}, {1}},        // middle dim
    {{33, 65, 17}, {0, 2}},     // non-adjacent dims (permuted)
    {{33, 65, 17}, {-1, -3}},   // the same with negative dims
    {{5, 40000, 2}, {1}},       // inner 2, long r: split columns
    {{2, 3, 70001}, {0, 1}},    // adjacent leading dims, wide inner
};

}  // namespace

TEST_CASE("cuda sum and mean match the CPU", "[cuda][reduce]") {
  uint64_t seed = 1000;
  for (const DimCase& c : kDimCases) {
    for (bool keepdim : {false, true}) {
      INFO(shape_str(c.shape) << " dims " << shape_str(c.dims) << " keepdim " << keepdim);
      compare([&](const Tensor& x) { return sum(x, c.dims, keepdim); }, c.shape, ++seed);
      compare([&](const Tensor& x) { return mean(x, c.dims, keepdim); }, c.shape, ++seed);
    }
  }
  for (const Shape& s : {Shape{1}, Shape{7, 13}, Shape{1000003}, Shape{300, 257}}) {
    INFO("all of " << shape_str(s));
    compare([](const Tensor& x) { return sum(x); }, s, ++seed);
    compare([](const Tensor& x) { return mean(x); }, s, ++seed);
  }
  // Non-contiguous input.
  compare([](const Tensor& x) { return sum(x.transpose(0, 1), {1}); }, {513, 257}, ++seed);
}

TEST_CASE("cuda sums of many values stay accurate", "[cuda][reduce]") {
  Generator gen(1100);
  const Tensor x = add(Tensor::rand({4000000}, gen), 0.5);
  const Tensor ref = sum(x.to(DType::f64));
  CHECK_REL(sum(x.to(kGpu)).to(Device::cpu(), DType::f64), ref, 1e-5);
  const Tensor y = x.view({2000, 2000});
  CHECK_REL(sum(y.to(kGpu), {0}).to(Device::cpu(), DType::f64), sum(y.to(DType::f64), {0}), 1e-5);
}

TEST_CASE("cuda max and argmax match the CPU", "[cuda][reduce]") {
  uint64_t seed = 2000;
  for (const DimCase& c : kDimCases) {
    if (c.dims.size() != 1) continue;
    for (bool keepdim : {false, true}) {
      INFO(shape_str(c.shape) << " dim " << c.dims[0] << " keepdim " << keepdim);
      compare([&](const Tensor& x) { return max(x, c.dims[0], keepdim).values; }, c.shape, ++seed);
      Generator gen(++seed);
      const Tensor x = Tensor::randn(c.shape, gen);
      CHECK(argmax(x.to(kGpu), c.dims[0], keepdim).to_vector<int64_t>() ==
            argmax(x, c.dims[0], keepdim).to_vector<int64_t>());
    }
  }
  for (const Shape& s : {Shape{1}, Shape{7, 13}, Shape{1000003}, Shape{300, 257}}) {
    INFO("all of " << shape_str(s));
    compare([](const Tensor& x) { return max(x); }, s, ++seed);
  }
  compare([](const Tensor& x) { return max(x.transpose(0, 1), 1).values; }, {513, 257}, ++seed);
}

TEST_CASE("cuda max: ties give the first index on every path and NaN propagates", "[cuda][reduce]") {
  // Values from a handful of integers: every row has many ties.
  Generator gen(3000);
  for (const DimCase& c : kDimCases) {
    if (c.dims.size() != 1) continue;
    INFO(shape_str(c.shape) << " dim " << c.dims[0]);
    Tensor x = Tensor::randn(c.shape, gen);
    {
      float* p = x.data<float>();
      for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::floor(p[i] * 1.5f);
    }
    const MaxResult mc = max(x, c.dims[0]), mg = max(x.to(kGpu), c.dims[0]);
    CHECK(mg.indices.to_vector<int64_t>() == mc.indices.to_vector<int64_t>());
    CHECK(test::max_abs_error(mg.values, mc.values) == 0.0);
  }
  Tensor big = Tensor::zeros({3000001});
  {
    float* p = big.data<float>();
    p[2999999] = 7;
    p[1234567] = 7;
    p[2000000] = 7;
  }
  CHECK(argmax(big.to(kGpu), 0).item() == 1234567);
  CHECK(max(big.to(kGpu)).item() == 7);

  Tensor n = Tensor::randn({4, 100001}, gen);
  {
    float* p = n.data<float>();
    p[1 * 100001 + 99999] = NAN;
    p[1 * 100001 + 5] = NAN;
    p[3 * 100001 + 0] = NAN;
  }
  const MaxResult nc = max(n, 1), ng = max(n.to(kGpu), 1);
  CHECK(ng.indices.to_vector<int64_t>() == nc.indices.to_vector<int64_t>());
  CHECK(ng.indices.to_vector<int64_t>()[1] == 5);
  const std::vector<float> v = ng.values.to_vector<float>();
  CHECK(std::isnan(v[1]));
  CHECK(std::isnan(v[3]));
  CHECK_FALSE(std::isnan(v[0]));
  CHECK(std::isnan(max(n.to(kGpu)).item()));
}

TEST_CASE("cuda sum_to matches the CPU", "[cuda][reduce]") {
  uint64_t seed = 4000;
  for (const auto& [from, to] : std::vector<std::pair<Shape, Shape>>{
           {{2, 3, 4}, {4}}, {{2, 3, 4}, {3, 1}}, {{300, 257}, {257}}, {{300, 257}, {300, 1}},
           {{65537}, {}}, {{5, 7, 9}, {5, 1, 9}}}) {
    INFO(shape_str(from) << " -> " << shape_str(to));
    compare([&](const Tensor& x) { return sum_to(x, to); }, from, ++seed);
  }
}

TEST_CASE("cuda reductions: f64 and empty inputs", "[cuda][reduce]") {
  Generator gen(5000);
  const Tensor x = Tensor::randn({37, 4099}, gen, DType::f64);
  CHECK_REL(sum(x.to(kGpu), {1}), sum(x, {1}), 1e-12);
  CHECK_REL(max(x.to(kGpu), 0).values, max(x, 0).values, 0.0);
  CHECK(sum(Tensor::zeros({0, 3}, DType::f32, kGpu), {0}).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(std::isnan(mean(Tensor::zeros({0}, DType::f32, kGpu)).item()));
  // Infinities survive the compensated sum (inf - inf in the carry would give NaN).
  Tensor inf = Tensor::ones({100000});
  inf.data<float>()[777] = INFINITY;
  CHECK(sum(inf.to(kGpu)).item() == INFINITY);
  CHECK(sum(inf.view({100, 1000}).to(kGpu), {0}).to_vector<float>()[777] == INFINITY);
}

#if VLMC_WITH_CUDA  // asks kernels::cuda for the workspace sizes
TEST_CASE("cuda reductions take their split partials from the caching allocator", "[cuda][reduce]") {
  // Two outputs of 4M values each: r is split over the GPU, and the partials
  // must show in the allocator's peak like any tensor.
  const int64_t outer = 2, r = int64_t(1) << 22;
  const size_t sum_bytes = kernels::cuda::sum_workspace_bytes(outer, r, 1, sizeof(float));
  const size_t max_bytes = kernels::cuda::max_workspace_bytes(outer, r, 1, sizeof(float));
  REQUIRE(sum_bytes > 0);
  REQUIRE(max_bytes > sum_bytes);  // the partials' indices too
  const Tensor x = Tensor::ones({outer, r}, DType::f32, kGpu);
  for (const bool is_sum : {true, false}) {
    INFO((is_sum ? "sum" : "max"));
    cuda::synchronize(0);
    cuda::reset_peak_allocated(0);
    const size_t before = cuda::allocator_stats(0).allocated_bytes;
    const Tensor y = is_sum ? sum(x, {1}) : max(x, 1).values;
    CHECK(y.to_vector<float>() == std::vector<float>{is_sum ? float(r) : 1.0f, is_sum ? float(r) : 1.0f});
    CHECK(cuda::allocator_stats(0).peak_allocated_bytes >= before + (is_sum ? sum_bytes : max_bytes));
  }
}
#endif
