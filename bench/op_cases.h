// The one table of op cases, in the spirit of ggml's test-backend-ops: each
// row is an op of core/ops.h called on inputs of given shapes and kinds, with
// how it is judged. Three drivers read it, so an op added here is checked
// three ways at once:
//   tests/core/test_op_cases.cpp        f64 gradients against central differences (CPU)
//   tests/cuda/test_cuda_op_cases.cpp   CUDA against the CPU: output and every input gradient
//   bench/bench_ops.cpp                 forward + backward time of every case, CPU and CUDA
// The PyTorch golden files (tests/golden/) are the fourth check, of values.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlmc::bench {

struct InputSpec {
  enum class Kind {
    normal,    // N(0, 1), float
    positive,  // in [0.5, 1.5), float (log, sqrt, a divisor, a fractional power's base)
    index,     // i64 in [0, bound)
    mask,      // u8, about half ones
  };
  Shape shape;
  Kind kind = Kind::normal;
  int64_t bound = 0;  // index: values in [0, bound)
};

struct OpCase {
  std::string name;  // "softmax/dim-1": op, then what the case exercises
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  bool gradient = true;  // differentiable in its float inputs
  double cuda_tol = 1e-5;  // CPU vs CUDA, f32: relative error in norm (per element: 10x)
  double grad_atol = 1e-7, grad_rtol = 1e-5;  // f64 central differences
};

const std::vector<OpCase>& op_cases();

// The case's inputs on the CPU, seeded: float kinds in `float_dtype`, leaves
// that require grad when the case has a gradient.
std::vector<Tensor> make_inputs(const OpCase& c, DType float_dtype, uint64_t seed);

}  // namespace vlmc::bench
