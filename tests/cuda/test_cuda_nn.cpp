// CUDA softmax, norms, embedding, cross entropy and dropout against the CPU
// oracle, forward and gradients, f32 at 1e-5.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;
using test::random_leaf;
using Catch::Contains;

namespace {

const Device kGpu = Device::cuda(0);

// Random i64 values in [low, high) (seeded), on the CPU.
Tensor random_indices(const Shape& shape, int64_t low, int64_t high, uint64_t seed) {
  Generator gen(seed);
  const std::vector<double> u = Tensor::rand(shape, gen, DType::f64).to_vector<double>();
  std::vector<int64_t> v(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    v[i] = low + static_cast<int64_t>(u[i] * static_cast<double>(high - low));
  return Tensor::from_vector(v, shape);
}

}  // namespace

TEST_CASE("cuda softmax and log_softmax match the CPU", "[cuda][nn]") {
  uint64_t seed = 1;
  for (bool log : {false, true}) {
    const auto op = [log](const Tensor& x, int64_t dim) {
      return log ? log_softmax(x, dim) : softmax(x, dim);
    };
    for (const auto& [shape, dim] : std::vector<std::pair<Shape, int64_t>>{{{1, 1}, -1},
                                                                           {{3, 7}, -1},
                                                                           {{5, 300}, 0},
                                                                           {{70001}, 0},
                                                                           {{300, 257}, -1},
                                                                           {{2, 3, 4}, 1},
                                                                           {{2000, 40}, 1}}) {
      INFO((log ? "log_softmax " : "softmax ") << shape_str(shape) << " dim " << dim);
      test::compare_cpu_cuda([&](const std::vector<Tensor>& t) { return op(t[0], dim); },
              {random_leaf(shape, seed++)});
    }
    // Non-contiguous input.
    test::compare_cpu_cuda([&](const std::vector<Tensor>& t) { return op(t[0].transpose(0, 1), -1); },
            {random_leaf({33, 9}, seed++)});
  }
  // Large logits stay finite.
  const Tensor big = Tensor::from_vector(std::vector<float>{1000, 1000, -1000, 0}, {2, 2});
  CHECK(softmax(big.to(kGpu), -1).to_vector<float>() == std::vector<float>{0.5f, 0.5f, 0.0f, 1.0f});
}

TEST_CASE("cuda layer_norm and rms_norm match the CPU", "[cuda][nn]") {
  uint64_t seed = 100;
  for (const auto& [x, norm] : std::vector<std::pair<Shape, Shape>>{{{1, 1}, {1}},
                                                                    {{7, 33}, {33}},
                                                                    {{300, 257}, {257}},
                                                                    {{4, 5, 6}, {5, 6}},
                                                                    {{3, 4100}, {4100}},
                                                                    {{2, 1024}, {1024}},
                                                                    {{0, 8}, {8}}}) {  // weight grads: 0
    INFO(shape_str(x) << " over " << shape_str(norm));
    test::compare_cpu_cuda([n = norm](const std::vector<Tensor>& t) { return layer_norm(t[0], n, t[1], t[2]); },
            {random_leaf(x, seed), random_leaf(norm, seed + 1), random_leaf(norm, seed + 2)});
    test::compare_cpu_cuda([n = norm](const std::vector<Tensor>& t) { return layer_norm(t[0], n); },
            {random_leaf(x, seed + 3)});
    test::compare_cpu_cuda([n = norm](const std::vector<Tensor>& t) { return rms_norm(t[0], n, t[1]); },
            {random_leaf(x, seed + 4), random_leaf(norm, seed + 5)});
    test::compare_cpu_cuda([n = norm](const std::vector<Tensor>& t) { return rms_norm(t[0], n); },
            {random_leaf(x, seed + 6)});
    seed += 7;
  }
  // Non-contiguous input; frozen weight (only x and bias need gradients).
  Tensor w = random_leaf({9}, 200).detach();
  test::compare_cpu_cuda(
      [w](const std::vector<Tensor>& t) {
        return layer_norm(t[0].transpose(0, 1), {9}, w.to(t[0].device()), t[1]);
      },
      {random_leaf({9, 13}, 201), random_leaf({9}, 202)});
}

TEST_CASE("cuda embedding matches the CPU", "[cuda][nn]") {
  uint64_t seed = 300;
  for (const auto& [num, d, idx_shape] : std::vector<std::tuple<int64_t, int64_t, Shape>>{
           {1, 1, {1}}, {50, 33, {4, 7}}, {1000, 128, {600}}, {7, 5, {3, 100}}}) {
    INFO("num " << num << " dim " << d << " indices " << shape_str(idx_shape));
    const Tensor idx = random_indices(idx_shape, 0, num, seed);
    test::compare_cpu_cuda([idx](const std::vector<Tensor>& t) { return embedding(t[0], idx.to(t[0].device())); },
            {random_leaf({num, d}, seed + 1)});
    seed += 2;
  }
}

TEST_CASE("cuda embedding reports out-of-range indices without reading them", "[cuda][nn]") {
  const Tensor w = Tensor::zeros({50, 4}, DType::f32, kGpu);
  const Tensor idx = Tensor::from_vector(std::vector<int64_t>{3, 50, 7}, {3}).to(kGpu);
  // The op does not wait for the GPU: the error comes at the next read.
  const Tensor out = embedding(w, idx);
  REQUIRE_THROWS_WITH(out.to_vector<float>(),
                      Contains("embedding: index 50 is out of range for 50 embeddings"));
  const Tensor neg = Tensor::from_vector(std::vector<int64_t>{-4}, {1}).to(kGpu);
  (void)embedding(w, neg);
  REQUIRE_THROWS_WITH(cuda::synchronize(0), Contains("embedding: index -4 is out of range"));
  // Reported once: the next read is clean.
  CHECK(embedding(w, Tensor::from_vector(std::vector<int64_t>{0}, {1}).to(kGpu)).to_vector<float>() ==
        std::vector<float>(4, 0.0f));
  REQUIRE_THROWS_WITH(embedding(w, Tensor::from_vector(std::vector<int64_t>{0}, {1})),
                      Contains("embedding: tensors on cuda:0 and cpu"));
  REQUIRE_THROWS_WITH(embedding(w, Tensor::from_vector(std::vector<int64_t>{0}, {1})),
                      Contains("embedding: tensors on cuda:0 and cpu"));
}

TEST_CASE("cuda cross_entropy matches the CPU", "[cuda][nn]") {
  uint64_t seed = 400;
  for (const auto& [n, c] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 33}, {300, 257}, {2100, 40}, {3, 5000}}) {
    INFO("N " << n << " C " << c);
    // Targets in [-1, c), -1 being the ignore_index here; row 0 is always
    // kept so that the mean is never the all-ignored NaN.
    Tensor targets = random_indices({n}, -1, c, seed);
    targets.narrow(0, 0, 1).fill_(0.0);
    test::compare_cpu_cuda(
        [targets](const std::vector<Tensor>& t) {
          return cross_entropy(t[0], targets.to(t[0].device()), -1);
        },
        {random_leaf({n, c}, seed + 1)});
    const Tensor kept = random_indices({n}, 0, c, seed + 2);
    test::compare_cpu_cuda(
        [kept](const std::vector<Tensor>& t) {
          return cross_entropy(t[0], kept.to(t[0].device()));
        },
        {random_leaf({n, c}, seed + 3)});
    seed += 4;
  }
}

TEST_CASE("cuda cross_entropy: all ignored is NaN, bad targets are errors", "[cuda][nn]") {
  Tensor logits = random_leaf({3, 4}, 500).detach().to(kGpu);
  logits.set_requires_grad(true);
  const Tensor none = Tensor::from_vector(std::vector<int64_t>{-100, -100, -100}, {3}).to(kGpu);
  const Tensor loss = cross_entropy(logits, none);
  CHECK(std::isnan(loss.item()));
  loss.backward();
  CHECK(logits.grad().to_vector<float>() == std::vector<float>(12, 0.0f));
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 4, 1}, {3}).to(kGpu);
  const Tensor bad_loss = cross_entropy(logits, bad);
  REQUIRE_THROWS_WITH(bad_loss.item(), Contains("cross_entropy: target 4 is out of range for 4 classes"));
}

TEST_CASE("cuda dropout draws the CPU's mask", "[cuda][nn]") {
  uint64_t seed = 600;
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(70001)}) {
    for (double p : {0.1, 0.5, 1.0}) {
      INFO("n " << n << " p " << p);
      const Tensor x = random_leaf({n}, seed++);
      Generator g_cpu(seed), g_gpu(seed);
      g_cpu.advance(5);
      g_gpu.advance(5);
      const Tensor y_cpu = dropout(x, p, true, g_cpu);
      Tensor x_gpu = x.detach().to(kGpu);
      x_gpu.set_requires_grad(true);
      const Tensor y_gpu = dropout(x_gpu, p, true, g_gpu);
      CHECK(test::max_abs_error(y_gpu.to(Device::cpu()), y_cpu) == 0.0);
      const Tensor g = random_leaf({n}, seed++).detach();
      y_cpu.backward(g);
      y_gpu.backward(g.to(kGpu));
      CHECK(test::max_abs_error(x_gpu.grad().to(Device::cpu()), x.grad()) == 0.0);
    }
  }
}
