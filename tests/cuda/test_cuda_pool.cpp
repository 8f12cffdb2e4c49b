// CUDA adaptive pooling against the CPU oracle, forward and backward.
#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;

TEST_CASE("cuda adaptive_avg_pool2d matches the CPU", "[cuda][pool]") {
  const Device gpu = Device::cuda(0);
  uint64_t seed = 100;
  for (auto [b, h, w, c, oh, ow] : std::vector<std::array<int64_t, 6>>{
           {1, 1, 1, 1, 1, 1}, {2, 24, 24, 1024, 12, 12}, {3, 5, 7, 33, 3, 2}, {2, 3, 2, 5, 5, 4}, {1, 27, 27, 17, 8, 8}}) {
    INFO(b << "x" << h << "x" << w << "x" << c << " -> " << oh << "x" << ow);
    Generator gen(seed++);
    Tensor x_cpu = Tensor::randn({b, h, w, c}, gen);
    x_cpu.set_requires_grad(true);
    Tensor x_gpu = x_cpu.detach().to(gpu);
    x_gpu.set_requires_grad(true);
    const Tensor y_cpu = adaptive_avg_pool2d(x_cpu, oh, ow);
    const Tensor y_gpu = adaptive_avg_pool2d(x_gpu, oh, ow);
    CHECK_REL(y_gpu.to(Device::cpu()), y_cpu, 1e-5);
    const Tensor g = Tensor::randn(y_cpu.shape(), gen);
    y_cpu.backward(g);
    y_gpu.backward(g.to(gpu));
    CHECK_REL(x_gpu.grad().to(Device::cpu()), x_cpu.grad(), 1e-5);
  }
}
