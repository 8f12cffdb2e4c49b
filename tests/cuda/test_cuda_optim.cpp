// CUDA multi-tensor AdamW and gradient norm (kernels/adamw.h) against the CPU
// kernels: many tensors (more than one launch's worth), odd sizes (1, 3, 4097,
// more than one chunk), with and without a device-side grad_scale, 10 steps of
// the optimizer's scalars within 1e-5, and the norm / clip coefficient.
// The kernel cases call kernels::cuda directly (CUDA builds only); the last
// ones run optim::AdamW(fused) and optim::clip_coefficient on CUDA against the
// same calls on the CPU.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/adamw.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;

#if VLMC_WITH_CUDA
namespace {

const Device kGpu = Device::cuda(0);

// 60 tensors (> kAdamWTensorsPerLaunch, < kSquareSumTensorsPerLaunch) and 200
// (> both): sizes cycle through odd ones, one over a 64K chunk.
std::vector<int64_t> sizes(int count) {
  const int64_t cycle[] = {1, 3, 4097, 17, 70001, 256, 5};
  std::vector<int64_t> out;
  for (int i = 0; i < count; ++i) out.push_back(cycle[i % 7]);
  return out;
}

struct Buffers {
  std::vector<Tensor> p, g, m, v;  // on one device
};

Buffers random_buffers(const std::vector<int64_t>& n, uint64_t seed) {
  Generator gen(seed);
  Buffers b;
  for (int64_t k : n) {
    b.p.push_back(Tensor::randn({k}, gen));
    b.g.push_back(Tensor::randn({k}, gen));
    b.m.push_back(mul(Tensor::randn({k}, gen), 0.1));
    b.v.push_back(Tensor::rand({k}, gen));  // v >= 0
  }
  return b;
}

Buffers to(const Buffers& b, Device d) {
  Buffers out;
  for (size_t i = 0; i < b.p.size(); ++i) {
    out.p.push_back(b.p[i].to(d).clone());
    out.g.push_back(b.g[i].to(d).clone());
    out.m.push_back(b.m[i].to(d).clone());
    out.v.push_back(b.v[i].to(d).clone());
  }
  return out;
}

// The metadata of step t (1-based), as optim::AdamW's fused path builds it;
// every third tensor gets another lr and no weight decay.
std::vector<kernels::AdamWTensor<float>> list_of(const Buffers& b, int t) {
  std::vector<kernels::AdamWTensor<float>> list;
  for (size_t i = 0; i < b.p.size(); ++i) {
    const double lr = i % 3 == 0 ? 1e-2 : 1e-3, wd = i % 3 == 0 ? 0.0 : 0.1;
    const double b1 = 0.9, b2 = 0.999;
    kernels::AdamWTensor<float> e;
    e.param = b.p[i].data<float>();
    e.grad = b.g[i].data<float>();
    e.exp_avg = b.m[i].data<float>();
    e.exp_avg_sq = b.v[i].data<float>();
    e.numel = b.p[i].numel();
    e.decay_factor = float(1.0 - lr * wd);
    e.beta1 = float(b1);
    e.one_minus_beta1 = float(1.0 - b1);
    e.beta2 = float(b2);
    e.one_minus_beta2 = float(1.0 - b2);
    e.neg_step_size = float(-(lr / (1.0 - std::pow(b1, t))));
    e.sqrt_bc2 = float(std::sqrt(1.0 - std::pow(b2, t)));
    e.eps = 1e-8f;
    list.push_back(e);
  }
  return list;
}

void check_close(const Buffers& gpu, const Buffers& cpu, double tol) {
  for (size_t i = 0; i < cpu.p.size(); ++i) {
    INFO("tensor " << i << " of " << cpu.p.size());
    CHECK_REL(gpu.p[i], cpu.p[i], tol);
    CHECK_REL(gpu.m[i], cpu.m[i], tol);
    CHECK_REL(gpu.v[i], cpu.v[i], tol);
  }
}

std::vector<kernels::SquareSumTensor<float>> norm_list(const std::vector<Tensor>& g) {
  std::vector<kernels::SquareSumTensor<float>> list;
  for (const Tensor& t : g) list.push_back({t.data<float>(), t.numel()});
  return list;
}

}  // namespace

TEST_CASE("CUDA multi-tensor AdamW matches the CPU over 10 steps", "[cuda][optim]") {
  for (int count : {5, 60, 200}) {
    for (bool scaled : {false, true}) {
      INFO(count << " tensors, grad_scale " << scaled);
      const Buffers start = random_buffers(sizes(count), 100 + count);
      Buffers cpu = to(start, Device::cpu()), gpu = to(start, kGpu);
      const Tensor scale_c = Tensor::scalar(0.3), scale_g = scale_c.to(kGpu);
      for (int t = 1; t <= 10; ++t) {
        const auto lc = list_of(cpu, t), lg = list_of(gpu, t);
        kernels::cpu::adamw<float>(lc.data(), int64_t(lc.size()),
                                   scaled ? scale_c.data<float>() : nullptr);
        kernels::cuda::adamw(lg.data(), int64_t(lg.size()), scaled ? scale_g.data<float>() : nullptr,
                             stream_of(gpu.p[0]));
      }
      check_close(gpu, cpu, 1e-5);
      // The gradients are only read.
      for (size_t i = 0; i < start.g.size(); ++i)
        CHECK(gpu.g[i].to_vector<float>() == start.g[i].to_vector<float>());
    }
  }
}

TEST_CASE("CUDA AdamW leaves buffers outside the list alone", "[cuda][optim]") {
  // A buffer of 4097 of which the list names the first 4000: the tail must keep
  // its value (no thread may run past a tensor's numel).
  Tensor big = Tensor::full({4097}, 7.0).to(kGpu);
  Tensor g = Tensor::ones({4097}).to(kGpu), m = Tensor::zeros({4097}).to(kGpu),
         v = Tensor::zeros({4097}).to(kGpu);
  kernels::AdamWTensor<float> e;
  e.param = big.data<float>();
  e.grad = g.data<float>();
  e.exp_avg = m.data<float>();
  e.exp_avg_sq = v.data<float>();
  e.numel = 4000;
  e.beta1 = 0.9f;
  e.one_minus_beta1 = 0.1f;
  e.beta2 = 0.999f;
  e.one_minus_beta2 = 0.001f;
  e.neg_step_size = -0.1f;
  e.sqrt_bc2 = std::sqrt(0.001f);
  e.eps = 1e-8f;
  kernels::cuda::adamw(&e, 1, nullptr, stream_of(big));
  const std::vector<float> out = big.to_vector<float>();
  for (size_t i = 0; i < 4000; ++i) REQUIRE(std::abs(out[i] - 6.99f) < 1e-5f);
  for (size_t i = 4000; i < out.size(); ++i) REQUIRE(out[i] == 7.0f);
}

TEST_CASE("CUDA sum of squares and clip coefficient match the CPU", "[cuda][optim]") {
  for (int count : {1, 60, 200}) {
    INFO(count << " tensors");
    const Buffers cpu = random_buffers(sizes(count), 7 + count);
    const Buffers gpu = to(cpu, kGpu);
    const auto lc = norm_list(cpu.g), lg = norm_list(gpu.g);
    Tensor sq_c = Tensor::empty({}), norm_c = Tensor::empty({}), coef_c = Tensor::empty({});
    Tensor sq_g = Tensor::full({}, NAN).to(kGpu), norm_g = Tensor::empty({}, DType::f32, kGpu),
           coef_g = Tensor::empty({}, DType::f32, kGpu);
    Tensor scratch = Tensor::full({kernels::cuda::sum_squares_scratch_size(count)}, NAN,
                                  DType::f64, kGpu);  // poisoned: every partial is written
    kernels::cpu::sum_squares<float>(sq_c.data<float>(), lc.data(), count);
    kernels::cpu::clip_coefficient(norm_c.data<float>(), coef_c.data<float>(), sq_c.data<float>(),
                                   1.0);
    const cudaStream_t stream = stream_of(sq_g);
    kernels::cuda::sum_squares(sq_g.data<float>(), lg.data(), count, scratch.data<double>(),
                               stream);
    kernels::cuda::clip_coefficient(norm_g.data<float>(), coef_g.data<float>(),
                                    sq_g.data<float>(), 1.0, stream);
    CHECK(std::abs(sq_g.item() - sq_c.item()) <= 1e-6 * sq_c.item());
    CHECK(std::abs(norm_g.item() - norm_c.item()) <= 1e-6 * norm_c.item());
    CHECK(std::abs(coef_g.item() - coef_c.item()) <= 1e-6 * coef_c.item());
    // Deterministic: a second run gives the same bits.
    const float first = static_cast<float>(sq_g.item());
    kernels::cuda::sum_squares(sq_g.data<float>(), lg.data(), count, scratch.data<double>(),
                               stream);
    CHECK(static_cast<float>(sq_g.item()) == first);
  }
}

TEST_CASE("CUDA clip coefficient is 1 below the threshold and NaN for a NaN norm",
          "[cuda][optim]") {
  Tensor sq = Tensor::scalar(4.0).to(kGpu), norm = Tensor::empty({}, DType::f32, kGpu),
         coef = Tensor::empty({}, DType::f32, kGpu);
  kernels::cuda::clip_coefficient(norm.data<float>(), coef.data<float>(), sq.data<float>(), 10.0,
                                  stream_of(sq));
  CHECK(norm.item() == 2.0);
  CHECK(coef.item() == 1.0);
  sq.fill_(NAN);
  kernels::cuda::clip_coefficient(norm.data<float>(), coef.data<float>(), sq.data<float>(), 10.0,
                                  stream_of(sq));
  CHECK(std::isnan(coef.item()));
}
#endif  // VLMC_WITH_CUDA

static const Device kGpuDevice = Device::cuda(0);

TEST_CASE("cuda fused AdamW with device-side clipping follows the CPU for 10 steps", "[cuda][optim]") {
  // Two groups (decay / no decay at another lr), odd shapes, a clip that bites.
  const std::vector<Shape> shapes{{7, 5}, {4097}, {3}, {1}, {33, 65}};
  std::vector<Tensor> cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor p = test::random_leaf(shapes[i], 100 + i);
    cpu_params.push_back(p);
    Tensor q = p.detach().to(kGpuDevice);
    q.set_requires_grad(true);
    gpu_params.push_back(q);
  }
  auto groups = [](const std::vector<Tensor>& ps) {
    std::vector<optim::ParamGroup> g(2);
    g[0].params = {ps[0], ps[4]};
    g[0].lr = 1e-2;
    g[0].weight_decay = 0.1;
    g[1].params = {ps[1], ps[2], ps[3]};
    g[1].lr = 3e-2;
    g[1].weight_decay = 0.0;
    return g;
  };
  optim::AdamW cpu_opt(groups(cpu_params), true), gpu_opt(groups(gpu_params), true);
  for (int step = 0; step < 10; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Tensor g = test::random_leaf(shapes[i], 1000 + 10 * step + i).detach() * 3.0;
      cpu_params[i].set_grad(g);
      gpu_params[i].set_grad(g.to(kGpuDevice));
    }
    const optim::GradClip cpu_clip = optim::clip_coefficient(cpu_params, 1.0);
    const optim::GradClip gpu_clip = optim::clip_coefficient(gpu_params, 1.0);
    CHECK(gpu_clip.total_norm.device() == kGpuDevice);
    CHECK_REL(gpu_clip.total_norm.to(Device::cpu()), cpu_clip.total_norm, 1e-5);
    cpu_opt.step(cpu_clip.coef);
    gpu_opt.step(gpu_clip.coef);
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("parameter " << i);
    CHECK_REL(gpu_params[i].detach().to(Device::cpu()), cpu_params[i].detach(), 1e-5);
  }
}
