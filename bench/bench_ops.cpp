// Every case of the op table (bench/op_cases.h) timed forward + backward at
// the table's small shapes, on the CPU and on cuda:0 when one is visible: the
// per-call cost of an op where dispatch, allocation and autograd bookkeeping
// weigh as much as the arithmetic (the regime of the main job's small model).
//
// Validation before timing: a CPU row's f32 output against the same case in
// f64 (relative error in norm <= 1e-4), a CUDA row's against the CPU's f32
// output (the case's cuda_tol). The gradient check and the CUDA comparison of
// gradients are the tests' (tests/core/test_op_cases.cpp, tests/cuda/).
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "bench/op_cases.h"
#include "core/autograd.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"

using namespace vlmc;

namespace {

std::string shapes_of(const bench::OpCase& c) {
  std::string out;
  for (const bench::InputSpec& in : c.inputs) {
    out += out.empty() ? "" : " ";
    out += shape_str(in.shape);
  }
  return out;
}

// The inputs on `device`, leaves again where the CPU ones required grad.
std::vector<Tensor> on(const std::vector<Tensor>& cpu, Device device) {
  std::vector<Tensor> out;
  for (const Tensor& t : cpu) {
    Tensor d = t.detach().to(device);
    if (t.requires_grad()) d.set_requires_grad(true);
    out.push_back(d);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(argc, argv, "usage: bench_ops [--threads N] [--repeats N] [--json PATH] [--quick]",
                                   flags))
      return 0;
    if (!flags.rest.empty()) throw std::runtime_error("unknown flag '" + flags.rest[0] + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ops: %s\n", e.what());
    return 2;
  }
  bench::Report report("every op-table case, forward + backward at its small shapes");
  const bool gpu = cuda::is_available();
  uint64_t seed = 100;
  for (const bench::OpCase& c : bench::op_cases()) {
    const std::vector<Tensor> cpu32 = bench::make_inputs(c, DType::f32, seed);
    const Tensor want64 = [&] {
      NoGradGuard no_grad;
      return c.fn(bench::make_inputs(c, DType::f64, seed));  // the same draws, in f64
    }();
    Tensor cpu_out;
    {
      NoGradGuard no_grad;
      cpu_out = c.fn(cpu32);
    }
    ++seed;
    for (const Device device : flags.devices(gpu)) {
      const std::vector<Tensor> inputs = on(cpu32, device);
      bench::Row row;
      row.kernel = c.name;
      row.version = c.gradient ? "forward+backward" : "forward";
      row.device = device.str();
      row.shape = shapes_of(c);
      Tensor out;
      {
        NoGradGuard no_grad;
        out = c.fn(inputs);
      }
      row.max_rel_error = device.is_cuda() ? bench::rel_error(out.to(Device::cpu()), cpu_out) : bench::rel_error(out, want64);
      row.valid = row.max_rel_error <= (device.is_cuda() ? c.cuda_tol : 1e-4);
      if (row.valid) {
        const Tensor grad_out = Tensor::ones(out.shape(), DType::f32, device);
        auto step = [&] {
          const Tensor y = c.fn(inputs);
          if (c.gradient) y.backward(grad_out);
        };
        row.timing = device.is_cuda() ? bench::time_device(step, cuda::stream(0), flags.warmup(3), flags.repeats)
                                      : bench::time_host(step, flags.warmup(3), flags.repeats);
      }
      report.add(row);
    }
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_ops");
}
