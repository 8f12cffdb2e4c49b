#include "tests/support/backend_compare.h"

#include "tests/support/check.h"

namespace vlmc::test {

Tensor random_leaf(const Shape& shape, uint64_t seed, DType dtype) {
  Generator gen(seed);
  Tensor t = Tensor::randn(shape, gen, dtype);
  t.set_requires_grad(true);
  return t;
}

void compare_cpu_cuda(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                      const std::vector<Tensor>& cpu, double tol) {
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> on_gpu;
  for (const Tensor& t : cpu) {
    Tensor g = t.detach().to(gpu);
    if (t.requires_grad()) g.set_requires_grad(true);
    on_gpu.push_back(g);
  }
  const Tensor y_cpu = fn(cpu), y_gpu = fn(on_gpu);
  REQUIRE(y_gpu.device() == gpu);
  CHECK_REL(y_gpu.to(Device::cpu()), y_cpu, tol);
  Generator gen(999);
  const Tensor g = Tensor::randn(y_cpu.shape(), gen, y_cpu.dtype());
  y_cpu.backward(g);
  y_gpu.backward(g.to(gpu));
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!cpu[i].requires_grad()) continue;
    INFO("gradient of input " << i);
    REQUIRE(on_gpu[i].grad().defined());
    CHECK_REL(on_gpu[i].grad().to(Device::cpu()), cpu[i].grad(), tol);
  }
}

}  // namespace vlmc::test
