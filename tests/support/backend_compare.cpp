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
                      const std::vector<Tensor>& cpu, double tol, std::optional<double> element_tol) {
  const double elem_tol = element_tol.value_or(10 * tol);
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> on_gpu;
  for (const Tensor& t : cpu) {
    Tensor g = t.detach().to(gpu);
    if (t.requires_grad()) g.set_requires_grad(true);
    on_gpu.push_back(g);
  }
  const Tensor y_cpu = fn(cpu), y_gpu = fn(on_gpu);
  REQUIRE(y_gpu.device() == gpu);
  {
    INFO("output");
    const Tensor y = y_gpu.to(Device::cpu());
    CHECK_REL(y, y_cpu, tol);
    CHECK_ELEMENTWISE(y, y_cpu, elem_tol);
  }
  Generator gen(999);
  const Tensor g = Tensor::randn(y_cpu.shape(), gen, y_cpu.dtype());
  y_cpu.backward(g);
  y_gpu.backward(g.to(gpu));
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!cpu[i].requires_grad()) continue;
    INFO("gradient of input " << i);
    REQUIRE(on_gpu[i].grad().defined());
    const Tensor grad = on_gpu[i].grad().to(Device::cpu());
    CHECK_REL(grad, cpu[i].grad(), tol);
    CHECK_ELEMENTWISE(grad, cpu[i].grad(), elem_tol);
  }
}

}  // namespace vlmc::test
