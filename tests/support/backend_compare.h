// The CUDA-vs-CPU check shared by the CUDA suites (ggml's test-backend-ops
// shape): run one op description on CPU leaves and on their CUDA copies, then
// compare the output and every input gradient.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "core/ops.h"

namespace vlmc::test {

// A random leaf that requires grad, N(0,1) from the seed, on the CPU.
Tensor random_leaf(const Shape& shape, uint64_t seed, DType dtype = DType::f32);

// fn is applied to the CPU inputs and to copies on cuda:0 (requires_grad kept);
// the output and the gradient of every input that requires grad (from the same
// random output gradient) must agree twice over:
//   * in norm: relative error <= tol (CHECK_REL);
//   * per element: |cuda_i - cpu_i| / (|cpu_i| + RMS(cpu)) <= element_tol
//     (CHECK_ELEMENTWISE), so that one wrong element cannot hide in the norm
//     of a large tensor. Looser than tol by default (10 x tol): a worst
//     element sits a few standard deviations out in a tensor's error spread.
void compare_cpu_cuda(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                      const std::vector<Tensor>& cpu_inputs, double tol = 1e-5,
                      std::optional<double> element_tol = std::nullopt);

}  // namespace vlmc::test
