// CUDA conv2d and conv2d_batchnorm against the CPU oracle, on fresh random
// inputs at many shapes (odd grids, channel counts off the 64-wide tiles, a
// rectangular kernel, pointwise and strided 1x1 convs, one element, more
// than 64K outputs):
//   - at the op level: outputs, running statistics, the batch count and
//     every gradient;
//   - at the kernel level, for each forward version, with every output and
//     the workspace poisoned (NaN / 0xFF bytes) before the run, so that an
//     element a kernel fails to write fails the comparison.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/conv_bn.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const Device kGpu = Device::cuda(0);
const Device kCpu = Device::cpu();

struct Case {
  int64_t b, h, w, cin, cout, kh, kw, stride, pad;
};

std::vector<Case> cases() {
  return {
      {1, 1, 1, 1, 1, 1, 1, 1, 0},        // one element (eval only: training needs 2 values)
      {2, 7, 5, 3, 5, 3, 3, 2, 1},        // odd grid, stride 2
      {3, 6, 7, 17, 33, 3, 3, 1, 1},      // channels off the tile sizes
      {2, 9, 8, 5, 70, 3, 2, 2, 0},       // rectangular kernel, no padding
      {2, 5, 5, 40, 24, 1, 1, 1, 0},      // pointwise
      {2, 7, 7, 8, 16, 1, 1, 2, 0},       // 1x1 with stride (patches needed)
      {2, 24, 24, 32, 128, 3, 3, 1, 1},   // 147,456 outputs
      {4, 24, 24, 64, 96, 3, 3, 2, 1},    // the C-Abstractor's downsampling conv, narrower
  };
}

int64_t rows_of(const Case& c) {
  return c.b * ((c.h + 2 * c.pad - c.kh) / c.stride + 1) * ((c.w + 2 * c.pad - c.kw) / c.stride + 1);
}

// The same values as a CPU leaf and a GPU leaf.
struct Pair {
  Tensor cpu, gpu;
};
Pair leaves(const Tensor& values) {
  Pair p{values.clone(), values.to(kGpu)};
  p.cpu.set_requires_grad(true);
  p.gpu.set_requires_grad(true);
  return p;
}

// Inputs of one case, on the host.
struct Inputs {
  kernels::ConvShape s;
  Tensor x, w, conv_bias, gamma, beta, running_mean, running_var, dy;
};

Inputs make_inputs(const Case& c, uint64_t seed, bool conv_bias, bool affine) {
  Generator gen(seed);
  Inputs in;
  in.s = kernels::make_conv_shape(c.b, c.h, c.w, c.cin, c.cout, c.kh, c.kw, c.stride, c.stride, c.pad, c.pad);
  in.x = Tensor::randn({c.b, c.h, c.w, c.cin}, gen);
  // Scaled as nn.Conv2d's initialisation, so z has about unit variance.
  in.w = mul(Tensor::randn({c.cout, c.cin, c.kh, c.kw}, gen), 1.0 / std::sqrt(double(c.cin * c.kh * c.kw)));
  if (conv_bias) in.conv_bias = Tensor::randn({c.cout}, gen);
  if (affine) {
    in.gamma = add(mul(Tensor::randn({c.cout}, gen), 0.5), 1.0);
    in.beta = mul(Tensor::randn({c.cout}, gen), 0.5);
  }
  in.running_mean = mul(Tensor::randn({c.cout}, gen), 0.5);
  in.running_var = add(Tensor::rand({c.cout}, gen), 0.5);
  in.dy = Tensor::randn({in.s.batch, in.s.out_h, in.s.out_w, in.s.out_c}, gen);
  return in;
}

// ---- kernel level: poisoned buffers ---------------------------------------------------------

template <typename T = float>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
Tensor on(const Tensor& t, Device d) { return t.defined() ? t.to(d).clone() : Tensor(); }
Tensor poisoned(const Shape& shape, Device d) { return Tensor::full(shape, NAN, DType::f32, d); }
Tensor scratch(size_t bytes, Device d) {  // 0xFF bytes: NaN as f32 and f64
  return Tensor::full({static_cast<int64_t>(bytes)}, 255, DType::u8, d);
}
size_t workspace_bytes(Device d, const kernels::ConvShape& s, kernels::ConvPass pass) {
  if (!d.is_cuda()) return kernels::cpu::workspace_bytes(s, sizeof(float), pass);
#if VLMC_WITH_CUDA
  return kernels::cuda::workspace_bytes(s, sizeof(float), pass);
#else
  throw Error("this build has no CUDA");
#endif
}

struct Forward {
  Tensor y, z, mean, rstd, running_mean, running_var, count;
};

// kernels::{cpu,cuda}::conv_bn_forward on device d, outputs and workspace poisoned.
Forward run_forward(Device d, const Inputs& in, const kernels::BatchNormParams& p) {
  const kernels::ConvShape& s = in.s;
  const Shape out{s.batch, s.out_h, s.out_w, s.out_c};
  Forward f{poisoned(out, d), poisoned(out, d), poisoned({s.out_c}, d), poisoned({s.out_c}, d),
            on(in.running_mean, d), on(in.running_var, d), Tensor::full({}, 3, DType::i64, d)};
  const Tensor x = on(in.x, d), w = on(in.w, d), cb = on(in.conv_bias, d), g = on(in.gamma, d), b = on(in.beta, d);
  const Tensor ws = scratch(workspace_bytes(d, s, kernels::ConvPass::forward), d);
  if (!d.is_cuda()) {
    kernels::cpu::conv_bn_forward<float>(ptr(f.y), ptr(f.z), ptr(f.mean), ptr(f.rstd), ptr(f.running_mean),
                                         ptr(f.running_var), ptr<int64_t>(f.count), ptr(x), ptr(w), ptr(cb), ptr(g),
                                         ptr(b), s, p, ws.data_ptr());
  } else {
#if VLMC_WITH_CUDA
    kernels::cuda::conv_bn_forward<float>(ptr(f.y), ptr(f.z), ptr(f.mean), ptr(f.rstd), ptr(f.running_mean),
                                          ptr(f.running_var), ptr<int64_t>(f.count), ptr(x), ptr(w), ptr(cb), ptr(g),
                                          ptr(b), s, p, ws.data_ptr(), cuda::stream(d.index));
#endif
  }
  return f;
}

struct Backward {
  Tensor dx, dw, dconv_bias, dgamma, dbeta;
};

// kernels::{cpu,cuda}::conv_bn_backward from the CPU forward's saved tensors.
Backward run_backward(Device d, const Inputs& in, const Forward& saved, const kernels::BatchNormParams& p) {
  const kernels::ConvShape& s = in.s;
  Backward g{poisoned({s.batch, s.in_h, s.in_w, s.in_c}, d), poisoned({s.out_c, s.in_c, s.k_h, s.k_w}, d),
             in.conv_bias.defined() ? poisoned({s.out_c}, d) : Tensor(),
             in.gamma.defined() ? poisoned({s.out_c}, d) : Tensor(),
             in.beta.defined() ? poisoned({s.out_c}, d) : Tensor()};
  const Tensor x = on(in.x, d), w = on(in.w, d), gamma = on(in.gamma, d), beta = on(in.beta, d), dy = on(in.dy, d);
  const Tensor z = on(saved.z, d), mean = on(saved.mean, d), rstd = on(saved.rstd, d);
  const Tensor ws = scratch(workspace_bytes(d, s, kernels::ConvPass::backward), d);
  if (!d.is_cuda()) {
    kernels::cpu::conv_bn_backward<float>(ptr(g.dx), ptr(g.dw), ptr(g.dconv_bias), ptr(g.dgamma), ptr(g.dbeta),
                                          ptr(dy), ptr(x), ptr(w), ptr(z), ptr(mean), ptr(rstd), ptr(gamma), ptr(beta),
                                          s, p, ws.data_ptr());
  } else {
#if VLMC_WITH_CUDA
    kernels::cuda::conv_bn_backward<float>(ptr(g.dx), ptr(g.dw), ptr(g.dconv_bias), ptr(g.dgamma), ptr(g.dbeta),
                                           ptr(dy), ptr(x), ptr(w), ptr(z), ptr(mean), ptr(rstd), ptr(gamma),
                                           ptr(beta), s, p, ws.data_ptr(), cuda::stream(d.index));
#endif
  }
  return g;
}

// Plain convolution kernels: z, then dx, dw, dbias from dy.
struct PlainConv {
  Tensor z, dx, dw, dbias;
};
PlainConv run_plain(Device d, const Inputs& in) {
  const kernels::ConvShape& s = in.s;
  PlainConv r{poisoned({s.batch, s.out_h, s.out_w, s.out_c}, d), poisoned({s.batch, s.in_h, s.in_w, s.in_c}, d),
              poisoned({s.out_c, s.in_c, s.k_h, s.k_w}, d), poisoned({s.out_c}, d)};
  const Tensor x = on(in.x, d), w = on(in.w, d), cb = on(in.conv_bias, d), dy = on(in.dy, d);
  const Tensor fws = scratch(workspace_bytes(d, s, kernels::ConvPass::forward), d);
  const Tensor bws = scratch(workspace_bytes(d, s, kernels::ConvPass::backward), d);
  if (!d.is_cuda()) {
    kernels::cpu::conv2d_forward<float>(ptr(r.z), ptr(x), ptr(w), ptr(cb), s, fws.data_ptr());
    kernels::cpu::conv2d_backward<float>(ptr(r.dx), ptr(r.dw), ptr(r.dbias), ptr(dy), ptr(x), ptr(w), s,
                                         bws.data_ptr());
  } else {
#if VLMC_WITH_CUDA
    kernels::cuda::conv2d_forward<float>(ptr(r.z), ptr(x), ptr(w), ptr(cb), s, fws.data_ptr(), cuda::stream(d.index));
    kernels::cuda::conv2d_backward<float>(ptr(r.dx), ptr(r.dw), ptr(r.dbias), ptr(dy), ptr(x), ptr(w), s,
                                          bws.data_ptr(), cuda::stream(d.index));
#endif
  }
  return r;
}

Tensor host(const Tensor& t) { return t.to(kCpu); }

}  // namespace

TEST_CASE("cuda conv2d kernels write every output and match the CPU (poisoned buffers)", "[cuda][conv_bn]") {
  uint64_t seed = 300;
  for (const Case& c : cases()) {
    for (const bool bias : {true, false}) {
      INFO(c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw
                << " stride " << c.stride << " pad " << c.pad << (bias ? ", bias" : ""));
      const Inputs in = make_inputs(c, seed++, bias, false);
      const PlainConv want = run_plain(kCpu, in), got = run_plain(kGpu, in);
      CHECK_REL(host(got.z), want.z, 1e-5);
      CHECK_REL(host(got.dx), want.dx, 1e-5);
      CHECK_REL(host(got.dw), want.dw, 1e-5);
      CHECK_REL(host(got.dbias), want.dbias, 1e-5);
    }
  }
}

TEST_CASE("cuda conv_bn kernels, versions 1 and 2, write every output and match the CPU (poisoned buffers)",
          "[cuda][conv_bn]") {
  uint64_t seed = 400;
  for (const Case& c : cases()) {
    for (const bool training : {true, false}) {
      if (training && rows_of(c) < 2) continue;
      for (const int version : {1, 2}) {
        // Alternate the optional pieces so each shape sees several combinations.
        const bool gelu = (seed % 2) == 0, bias = (seed % 3) != 0, affine = (seed % 4) != 1;
        INFO(c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw
                  << " stride " << c.stride << " pad " << c.pad << (training ? ", training" : ", eval") << ", v"
                  << version << (gelu ? ", gelu" : "") << (bias ? ", conv bias" : "") << (affine ? ", affine" : ""));
        const Inputs in = make_inputs(c, seed++, bias, affine);
        kernels::BatchNormParams p;
        p.training = training;
        p.gelu = gelu;
        p.cuda_version = version;
        const Forward want = run_forward(kCpu, in, p), got = run_forward(kGpu, in, p);
        CHECK_REL(host(got.z), want.z, 1e-5);
        CHECK_REL(host(got.mean), want.mean, 1e-5);
        CHECK_REL(host(got.rstd), want.rstd, 1e-5);
        CHECK_REL(host(got.y), want.y, 1e-5);
        CHECK_REL(host(got.running_mean), want.running_mean, 1e-5);
        CHECK_REL(host(got.running_var), want.running_var, 1e-5);
        CHECK(host(got.count).item() == want.count.item());
        CHECK(want.count.item() == (training ? 4 : 3));

        const Backward gwant = run_backward(kCpu, in, want, p), ggot = run_backward(kGpu, in, want, p);
        CHECK_REL(host(ggot.dx), gwant.dx, 1e-5);
        CHECK_REL(host(ggot.dw), gwant.dw, 1e-5);
        if (affine) {
          CHECK_REL(host(ggot.dgamma), gwant.dgamma, 1e-5);
          CHECK_REL(host(ggot.dbeta), gwant.dbeta, 1e-5);
        }
        if (bias) {
          // Zero up to rounding in training (the mean subtraction cancels the bias).
          if (training) {
            CHECK(test::max_abs_error(host(ggot.dconv_bias), gwant.dconv_bias) <= 1e-4);
          } else {
            CHECK_REL(host(ggot.dconv_bias), gwant.dconv_bias, 1e-5);
          }
        }
      }
    }
  }
}

TEST_CASE("cuda conv kernels on an empty batch: zero weight and channel gradients, as on the CPU",
          "[cuda][conv_bn]") {
  // M = 0 rows: no kernel may launch (a grid of 0 blocks is an error), but the
  // gradients of the weight, bias, gamma and beta are sums of nothing: zero.
  // The outputs start poisoned, so one left unwritten fails.
  const auto all_zero = [](const Tensor& t) {
    const std::vector<float> v = host(t).to_vector<float>();
    return std::all_of(v.begin(), v.end(), [](float e) { return e == 0.0f; });
  };
  for (const Case& c : {Case{0, 7, 5, 3, 5, 3, 3, 2, 1}, Case{0, 5, 5, 40, 24, 1, 1, 1, 0}}) {
    INFO("0x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw);
    const Inputs in = make_inputs(c, 450, true, true);
    const PlainConv want = run_plain(kCpu, in), got = run_plain(kGpu, in);
    CHECK(all_zero(want.dw));
    CHECK(all_zero(want.dbias));
    CHECK(all_zero(got.dw));
    CHECK(all_zero(got.dbias));
    for (const bool training : {true, false}) {
      INFO((training ? "training" : "eval"));
      kernels::BatchNormParams p;
      p.training = training;
      const Forward fwant = run_forward(kCpu, in, p), fgot = run_forward(kGpu, in, p);
      CHECK(host(fgot.count).item() == fwant.count.item());
      if (training) {  // the statistics of nothing: NaN on both (the op refuses M < 2)
        for (const Tensor& t : {fwant.mean, fwant.rstd, host(fgot.mean), host(fgot.rstd), host(fgot.running_var)})
          CHECK(std::isnan(t.to_vector<float>()[0]));
      } else {  // the running statistics, written as on the CPU
        CHECK_REL(host(fgot.mean), fwant.mean, 1e-6);
        CHECK_REL(host(fgot.rstd), fwant.rstd, 1e-6);
      }
      const Backward gwant = run_backward(kCpu, in, fwant, p), ggot = run_backward(kGpu, in, fwant, p);
      for (const Tensor& t : {gwant.dw, gwant.dconv_bias, gwant.dgamma, gwant.dbeta, ggot.dw, ggot.dconv_bias,
                              ggot.dgamma, ggot.dbeta})
        CHECK(all_zero(t));
    }
  }
}

TEST_CASE("cuda conv2d matches the CPU through the op", "[cuda][conv_bn]") {
  uint64_t seed = 500;
  for (const Case& c : cases()) {
    INFO(c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw
              << " stride " << c.stride << " pad " << c.pad);
    test::compare_cpu_cuda(
        [c](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], c.stride, c.pad); },
        {test::random_leaf({c.b, c.h, c.w, c.cin}, seed), test::random_leaf({c.cout, c.cin, c.kh, c.kw}, seed + 1),
         test::random_leaf({c.cout}, seed + 2)});
    seed += 3;
  }
}

TEST_CASE("cuda conv2d_batchnorm matches the CPU through the op (training and eval, with GELU)", "[cuda][conv_bn]") {
  uint64_t seed = 600;
  for (const Case& c : cases()) {
    for (const bool training : {true, false}) {
      if (training && rows_of(c) < 2) continue;
      for (const bool gelu : {false, true}) {
        INFO(c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw
                  << " stride " << c.stride << " pad " << c.pad << (training ? ", training" : ", eval")
                  << (gelu ? ", gelu" : ""));
        const Inputs in = make_inputs(c, seed++, true, true);
        const Pair x = leaves(in.x), w = leaves(in.w), cb = leaves(in.conv_bias), g = leaves(in.gamma),
                   b = leaves(in.beta);
        Tensor rm_cpu = in.running_mean.clone(), rv_cpu = in.running_var.clone();
        Tensor rm_gpu = in.running_mean.to(kGpu), rv_gpu = in.running_var.to(kGpu);
        Tensor n_cpu = Tensor::full({}, 7, DType::i64), n_gpu = Tensor::full({}, 7, DType::i64, kGpu);
        const Tensor y_cpu = conv2d_batchnorm(x.cpu, w.cpu, cb.cpu, g.cpu, b.cpu, rm_cpu, rv_cpu, n_cpu, training, 0.1,
                                              1e-5, gelu, c.stride, c.pad);
        const Tensor y_gpu = conv2d_batchnorm(x.gpu, w.gpu, cb.gpu, g.gpu, b.gpu, rm_gpu, rv_gpu, n_gpu, training, 0.1,
                                              1e-5, gelu, c.stride, c.pad);
        REQUIRE(y_gpu.device() == kGpu);
        CHECK_REL(host(y_gpu), y_cpu, 1e-5);
        CHECK_REL(host(rm_gpu), rm_cpu, 1e-5);
        CHECK_REL(host(rv_gpu), rv_cpu, 1e-5);
        CHECK(n_gpu.item() == n_cpu.item());
        CHECK(n_cpu.item() == (training ? 8 : 7));
        y_cpu.backward(in.dy);
        y_gpu.backward(in.dy.to(kGpu));
        CHECK_REL(host(x.gpu.grad()), x.cpu.grad(), 1e-5);
        CHECK_REL(host(w.gpu.grad()), w.cpu.grad(), 1e-5);
        CHECK_REL(host(g.gpu.grad()), g.cpu.grad(), 1e-5);
        CHECK_REL(host(b.gpu.grad()), b.cpu.grad(), 1e-5);
        if (training) {
          CHECK(test::max_abs_error(host(cb.gpu.grad()), cb.cpu.grad()) <= 1e-4);
        } else {
          CHECK_REL(host(cb.gpu.grad()), cb.cpu.grad(), 1e-5);
        }
      }
    }
  }
}
