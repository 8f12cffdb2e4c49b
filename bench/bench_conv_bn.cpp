// Conv2d + BatchNorm2d (+ GELU) at the seed's C-Abstractor shapes: 3x3 convs
// of width 1024 -> 1024 on channels-last grids, B = 4 and 16 images, the
// downsampling conv (24x24, stride 2, pad 1 -> 12x12) and the one after it
// (12x12, stride 1, pad 1), no conv bias (batch norm follows).
//
// Rows: forward in training mode (batch statistics + running-stat update),
// forward in eval mode, forward + backward in training mode (all gradients);
// on CUDA each forward version (v1: separate statistics pass, v2: statistics
// fused into the GEMM epilogue) and, where cuDNN is linked, cuDNN's
// convolution + batch norm (FMA math, i.e. exact f32, and TF32 math).
// GFLOP/s counts the convolution only (2*M*N*K forward, 3x that forward +
// backward) against the same-run sgemm ceiling at the same GEMM shape
// (OpenBLAS on the CPU, cuBLAS f32 without TF32 on the GPU).
//
// Validation before timing: CPU rows against a direct double-precision
// convolution + batch norm on 8 of the channels (the full reference would take
// minutes); CUDA and cuDNN rows against the CPU result on every element.
//
// --quick (the smoke test ctest runs): width 128 -> 128 at B = 2, both convs
// (stride 2 and stride 1), every row above, one repeat, no warm-up; 128
// channels are still two of the kernels' 64-channel chunks.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/conv_bn.h"
#include "kernels/gemm.h"

#if VLMC_WITH_CUDNN
#include <cudnn.h>
#endif

using namespace vlmc;

namespace {

constexpr int64_t kFullChannels = 1024, kQuickChannels = 128;
constexpr double kEps = 1e-5, kMomentum = 0.1;

struct Problem {
  kernels::ConvShape s;
  std::string label;
  // Host inputs (f32): x [B,H,W,C], w [C,C,3,3], gamma, beta, running stats, dy.
  Tensor x, w, gamma, beta, running_mean, running_var, dy;
  double flops() const { return 2.0 * s.rows() * s.out_c * s.patch(); }
};

Problem make_problem(int64_t batch, int64_t grid, int64_t stride, int64_t channels) {
  Problem p;
  p.s = kernels::make_conv_shape(batch, grid, grid, channels, channels, 3, 3, stride, stride, 1, 1);
  p.label = "B=" + std::to_string(batch) + " " + std::to_string(grid) + "x" + std::to_string(grid) + " s" +
            std::to_string(stride) + " " + std::to_string(channels) + "->" + std::to_string(channels) + " 3x3";
  Generator gen(static_cast<uint64_t>(batch * 100 + grid + stride));
  p.x = Tensor::randn({batch, grid, grid, channels}, gen);
  p.w = mul(Tensor::randn({channels, channels, 3, 3}, gen), 1.0 / std::sqrt(double(p.s.patch())));
  p.gamma = add(mul(Tensor::randn({channels}, gen), 0.2), 1.0);
  p.beta = mul(Tensor::randn({channels}, gen), 0.2);
  p.running_mean = mul(Tensor::randn({channels}, gen), 0.1);
  p.running_var = add(Tensor::rand({channels}, gen), 0.5);
  p.dy = Tensor::randn({batch, p.s.out_h, p.s.out_w, channels}, gen);
  return p;
}

// ---- reference: direct convolution in double on a few channels ------------------------------

// The channels checked of c: both ends and some between (at c = 1024:
// 0, 1, 137, 255, 512, 700, 1022, 1023).
std::vector<int64_t> checked_channels(int64_t c) {
  return {0, 1, 137 * c / 1024, 255 * c / 1024, c / 2, 700 * c / 1024, c - 2, c - 1};
}

struct Reference {
  // Per checked channel j: y[m], and the gradients dgamma, dbeta of sum(y * dy).
  std::vector<std::vector<double>> y;
  std::vector<double> dgamma, dbeta;
};

Reference reference(const Problem& p, bool training, bool gelu) {
  const kernels::ConvShape& s = p.s;
  const std::vector<float> x = p.x.to_vector<float>(), w = p.w.to_vector<float>(), dy = p.dy.to_vector<float>();
  const std::vector<float> gamma = p.gamma.to_vector<float>(), beta = p.beta.to_vector<float>();
  const std::vector<float> rm = p.running_mean.to_vector<float>(), rv = p.running_var.to_vector<float>();
  const int64_t M = s.rows(), N = s.out_c;
  Reference r;
  for (const int64_t n : checked_channels(N)) {
    std::vector<double> z(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
      const int64_t wo = m % s.out_w, ho = (m / s.out_w) % s.out_h, b = m / (s.out_w * s.out_h);
      double acc = 0;
      for (int64_t ki = 0; ki < s.k_h; ++ki)
        for (int64_t kj = 0; kj < s.k_w; ++kj) {
          const int64_t hi = ho * s.stride_h - s.pad_h + ki, wi = wo * s.stride_w - s.pad_w + kj;
          if (hi < 0 || hi >= s.in_h || wi < 0 || wi >= s.in_w) continue;
          const float* xs = &x[static_cast<size_t>(((b * s.in_h + hi) * s.in_w + wi) * s.in_c)];
          const float* ws = &w[static_cast<size_t>(n * s.patch() + ki * s.k_w + kj)];
          for (int64_t c = 0; c < s.in_c; ++c) acc += double(xs[c]) * ws[c * s.k_h * s.k_w];
        }
      z[static_cast<size_t>(m)] = acc;
    }
    double mean = rm[static_cast<size_t>(n)], var = rv[static_cast<size_t>(n)];
    if (training) {
      mean = 0;
      for (double v : z) mean += v;
      mean /= double(M);
      var = 0;
      for (double v : z) var += (v - mean) * (v - mean);
      var /= double(M);
    }
    const double rstd = 1 / std::sqrt(var + kEps), g = gamma[static_cast<size_t>(n)], bt = beta[static_cast<size_t>(n)];
    std::vector<double> y(static_cast<size_t>(M));
    double dg = 0, db = 0;
    for (int64_t m = 0; m < M; ++m) {
      const double xh = (z[static_cast<size_t>(m)] - mean) * rstd, u = g * xh + bt;
      const double cdf = 0.5 * (1 + std::erf(u / std::sqrt(2.0)));
      y[static_cast<size_t>(m)] = gelu ? u * cdf : u;
      double du = dy[static_cast<size_t>(m * N + n)];
      if (gelu) du *= cdf + u * std::exp(-0.5 * u * u) * 0.3989422804014327;  // phi(u) = exp(-u^2/2)/sqrt(2 pi)
      db += du;
      dg += du * xh;
    }
    r.y.push_back(std::move(y));
    r.dgamma.push_back(dg);
    r.dbeta.push_back(db);
  }
  return r;
}

double rel(double diff2, double norm2) {
  return std::isnan(diff2) ? INFINITY : std::sqrt(diff2 / std::max(norm2, 1e-300));
}

// Largest relative error of y (and, when grads are given, dgamma and dbeta) on the checked channels.
double check_reference(const Reference& r, const Tensor& y, const Tensor& dgamma, const Tensor& dbeta) {
  const std::vector<float> yv = y.to_vector<float>();
  const int64_t N = y.size(-1), M = y.numel() / N;
  const std::vector<int64_t> checked = checked_channels(N);
  double worst = 0, d2 = 0, n2 = 0;
  for (size_t j = 0; j < checked.size(); ++j)
    for (int64_t m = 0; m < M; ++m) {
      const double want = r.y[j][static_cast<size_t>(m)], got = yv[static_cast<size_t>(m * N + checked[j])];
      d2 += (got - want) * (got - want);
      n2 += want * want;
    }
  worst = rel(d2, n2);
  if (dgamma.defined()) {
    const std::vector<float> g = dgamma.to_vector<float>(), b = dbeta.to_vector<float>();
    double g2 = 0, gn = 0, b2 = 0, bn = 0;
    for (size_t j = 0; j < checked.size(); ++j) {
      const size_t n = static_cast<size_t>(checked[j]);
      g2 += (g[n] - r.dgamma[j]) * (g[n] - r.dgamma[j]);
      gn += r.dgamma[j] * r.dgamma[j];
      b2 += (b[n] - r.dbeta[j]) * (b[n] - r.dbeta[j]);
      bn += r.dbeta[j] * r.dbeta[j];
    }
    worst = std::max({worst, rel(g2, gn), rel(b2, bn)});
  }
  return worst;
}

#if VLMC_WITH_CUDA
// Relative error (in norm) of a device result against the CPU's, everywhere.
double rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = got.to_vector<float>(), b = want.to_vector<float>();
  double d2 = 0, n2 = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    d2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n2 += double(b[i]) * b[i];
  }
  return rel(d2, n2);
}
#endif

// ---- vlmc forward at the kernel level (buffers allocated once) -------------------------------

struct ForwardBuffers {
  Device device;
  kernels::ConvShape s;
  Tensor x, w, gamma, beta, running_mean, running_var, count, y, z, mean, rstd, workspace;

  ForwardBuffers(const Problem& p, Device d) : device(d), s(p.s) {
    x = p.x.to(d);
    w = p.w.to(d);
    gamma = p.gamma.to(d);
    beta = p.beta.to(d);
    running_mean = p.running_mean.to(d).clone();
    running_var = p.running_var.to(d).clone();
    count = Tensor::zeros({}, DType::i64, d);
    const Shape out{s.batch, s.out_h, s.out_w, s.out_c};
    y = Tensor::empty(out, DType::f32, d);
    z = Tensor::empty(out, DType::f32, d);
    mean = Tensor::empty({s.out_c}, DType::f32, d);
    rstd = Tensor::empty({s.out_c}, DType::f32, d);
    size_t bytes = kernels::cpu::workspace_bytes(s, sizeof(float), kernels::ConvPass::forward);
#if VLMC_WITH_CUDA
    if (d.is_cuda()) bytes = kernels::cuda::workspace_bytes(s, sizeof(float), kernels::ConvPass::forward);
#endif
    workspace = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, d);
  }

  void run(const kernels::BatchNormParams& p) {
    float *py = y.data<float>(), *pz = z.data<float>(), *pm = mean.data<float>(), *pr = rstd.data<float>();
    float *prm = running_mean.data<float>(), *prv = running_var.data<float>();
    const float *px = x.data<float>(), *pw = w.data<float>(), *pg = gamma.data<float>(), *pb = beta.data<float>();
    if (!device.is_cuda()) {
      kernels::cpu::conv_bn_forward<float>(py, pz, pm, pr, prm, prv, count.data<int64_t>(), px, pw, nullptr, pg, pb,
                                           s, p, workspace.data_ptr());
      return;
    }
#if VLMC_WITH_CUDA
    kernels::cuda::conv_bn_forward<float>(py, pz, pm, pr, prm, prv, count.data<int64_t>(), px, pw, nullptr, pg, pb, s,
                                          p, workspace.data_ptr(), cuda::stream(device.index));
#endif
  }
};

// ---- vlmc forward + backward through the op (the autograd path a model takes) ----------------

struct TrainStep {
  Tensor x, w, gamma, beta, running_mean, running_var, count, dy, y;

  TrainStep(const Problem& p, Device d) {
    auto leaf = [&](const Tensor& t) {
      Tensor l = t.to(d).clone();
      l.set_requires_grad(true);
      return l;
    };
    x = leaf(p.x);
    w = leaf(p.w);
    gamma = leaf(p.gamma);
    beta = leaf(p.beta);
    running_mean = p.running_mean.to(d).clone();
    running_var = p.running_var.to(d).clone();
    count = Tensor::zeros({}, DType::i64, d);
    dy = p.dy.to(d);
  }
};

// One training step's conv + batch norm: forward, then backward from dy.
Tensor train_forward(TrainStep& t, const kernels::ConvShape& s, bool gelu) {
  for (const Tensor* v : {&t.x, &t.w, &t.gamma, &t.beta}) v->set_grad(Tensor());
  t.y = conv2d_batchnorm(t.x, t.w, Tensor(), t.gamma, t.beta, t.running_mean, t.running_var, t.count, true,
                         kMomentum, kEps, gelu, s.stride_h, s.pad_h);
  t.y.backward(t.dy);
  return t.y;
}

#if VLMC_WITH_CUDA
// cuBLAS f32 (TF32 off) at the conv's GEMM shape: the GPU ceiling for these rows.
double device_sgemm_gflops(int64_t m, int64_t n, int64_t k, bool quick) {
  const Device d = Device::cuda(0);
  const Tensor a = Tensor::full({m, k}, 0.5, DType::f32, d), b = Tensor::full({n, k}, 0.25, DType::f32, d);
  Tensor c = Tensor::empty({m, n}, DType::f32, d);
  const bench::Timing t = bench::time_device(
      [&] {
        kernels::cuda::gemm<float>(false, true, m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), k, 0.0f,
                                   c.data<float>(), n, cuda::stream(0));
      },
      cuda::stream(0), quick ? 0 : 2, quick ? 1 : 10);
  return 2.0 * m * n * k / (t.median_ms * 1e-3) / 1e9;
}
#endif

#if VLMC_WITH_CUDNN
#define VLMC_CUDNN_CHECK(expr)                                                                       \
  do {                                                                                               \
    const cudnnStatus_t vlmc_st_ = (expr);                                                           \
    if (vlmc_st_ != CUDNN_STATUS_SUCCESS)                                                            \
      throw std::runtime_error(std::string("cuDNN error ") + cudnnGetErrorString(vlmc_st_) + " in " #expr); \
  } while (0)

// cuDNN's convolution + batch norm on the same NHWC buffers: the baseline.
// The filter is handed over as [Cout, kh, kw, Cin] (cuDNN's NHWC filter
// layout); cuDNN has no GELU in this API, so its rows are without GELU.
class CudnnConvBn {
 public:
  CudnnConvBn(const kernels::ConvShape& s, bool tf32) {
    VLMC_CUDNN_CHECK(cudnnCreate(&handle_));
    VLMC_CUDNN_CHECK(cudnnSetStream(handle_, cuda::stream(0)));
    VLMC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc_));
    VLMC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&z_desc_));
    VLMC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bn_desc_));
    VLMC_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_desc_));
    VLMC_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc_));
    VLMC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc_, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, int(s.batch),
                                                int(s.in_c), int(s.in_h), int(s.in_w)));
    VLMC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(z_desc_, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, int(s.batch),
                                                int(s.out_c), int(s.out_h), int(s.out_w)));
    VLMC_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(bn_desc_, z_desc_, CUDNN_BATCHNORM_SPATIAL));
    VLMC_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, int(s.out_c),
                                                int(s.in_c), int(s.k_h), int(s.k_w)));
    VLMC_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc_, int(s.pad_h), int(s.pad_w), int(s.stride_h),
                                                     int(s.stride_w), 1, 1, CUDNN_CROSS_CORRELATION,
                                                     CUDNN_DATA_FLOAT));
    const cudnnMathType_t math = tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    VLMC_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_, math));
    int n = 0, c = 0, h = 0, w = 0;
    VLMC_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv_desc_, x_desc_, w_desc_, &n, &c, &h, &w));
    if (n != s.batch || c != s.out_c || h != s.out_h || w != s.out_w)
      throw std::runtime_error("cuDNN disagrees about the output shape");

    // The fastest algorithm of each kind that cuDNN's own search finds, with
    // the math this row asks for when it offers one.
    constexpr int kMax = 16;
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[kMax];
    VLMC_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(handle_, x_desc_, w_desc_, conv_desc_, z_desc_, kMax, &found, fwd));
    fwd_algo_ = pick(fwd, found, math).algo;
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[kMax];
    VLMC_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(handle_, w_desc_, z_desc_, conv_desc_, x_desc_, kMax,
                                                               &found, bwd_data));
    bwd_data_algo_ = pick(bwd_data, found, math).algo;
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[kMax];
    VLMC_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(handle_, x_desc_, z_desc_, conv_desc_, w_desc_, kMax,
                                                                 &found, bwd_filter));
    bwd_filter_algo_ = pick(bwd_filter, found, math).algo;

    size_t a = 0, b = 0, f = 0;
    VLMC_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(handle_, x_desc_, w_desc_, conv_desc_, z_desc_, fwd_algo_, &a));
    VLMC_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(handle_, w_desc_, z_desc_, conv_desc_, x_desc_,
                                                                  bwd_data_algo_, &b));
    VLMC_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle_, x_desc_, z_desc_, conv_desc_, w_desc_,
                                                                    bwd_filter_algo_, &f));
    workspace_bytes_ = std::max({a, b, f, size_t(1)});
    workspace_ = Tensor::empty({static_cast<int64_t>(workspace_bytes_)}, DType::u8, Device::cuda(0));
  }
  ~CudnnConvBn() {
    cudnnDestroyConvolutionDescriptor(conv_desc_);
    cudnnDestroyFilterDescriptor(w_desc_);
    cudnnDestroyTensorDescriptor(bn_desc_);
    cudnnDestroyTensorDescriptor(z_desc_);
    cudnnDestroyTensorDescriptor(x_desc_);
    cudnnDestroy(handle_);
  }
  CudnnConvBn(const CudnnConvBn&) = delete;
  CudnnConvBn& operator=(const CudnnConvBn&) = delete;

  // z = conv(x, w); y = batch norm of z (training: batch statistics, running
  // stats updated, save_mean/save_inv kept for the backward; eval: running stats).
  void forward(bool training, const float* x, const float* w, const float* gamma, const float* beta, float* z,
               float* y, float* running_mean, float* running_var, float* save_mean, float* save_inv) {
    const float one = 1, zero = 0;
    VLMC_CUDNN_CHECK(cudnnConvolutionForward(handle_, &one, x_desc_, x, w_desc_, w, conv_desc_, fwd_algo_, ws(),
                                             workspace_bytes_, &zero, z_desc_, z));
    if (training) {
      VLMC_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(handle_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, z_desc_, z,
                                                              z_desc_, y, bn_desc_, gamma, beta, kMomentum,
                                                              running_mean, running_var, kEps, save_mean, save_inv));
    } else {
      VLMC_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(handle_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, z_desc_,
                                                               z, z_desc_, y, bn_desc_, gamma, beta, running_mean,
                                                               running_var, kEps));
    }
  }
  // From dy: dz (scratch), dgamma, dbeta, dx, dw (in cuDNN's [Cout, kh, kw, Cin]).
  void backward(const float* x, const float* w, const float* z, const float* dy, const float* gamma,
                const float* save_mean, const float* save_inv, float* dz, float* dgamma, float* dbeta, float* dx,
                float* dw) {
    const float one = 1, zero = 0;
    VLMC_CUDNN_CHECK(cudnnBatchNormalizationBackward(handle_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, z_desc_,
                                                     z, z_desc_, dy, z_desc_, dz, bn_desc_, gamma, dgamma, dbeta, kEps,
                                                     save_mean, save_inv));
    VLMC_CUDNN_CHECK(cudnnConvolutionBackwardData(handle_, &one, w_desc_, w, z_desc_, dz, conv_desc_, bwd_data_algo_,
                                                  ws(), workspace_bytes_, &zero, x_desc_, dx));
    VLMC_CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle_, &one, x_desc_, x, z_desc_, dz, conv_desc_,
                                                    bwd_filter_algo_, ws(), workspace_bytes_, &zero, w_desc_, dw));
  }

 private:
  template <typename Perf>
  static Perf pick(const Perf* perf, int count, cudnnMathType_t math) {
    for (int i = 0; i < count; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == math) return perf[i];
    for (int i = 0; i < count; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS) return perf[i];
    throw std::runtime_error("cuDNN found no working algorithm");
  }
  void* ws() const { return workspace_.data_ptr(); }

  cudnnHandle_t handle_ = nullptr;
  cudnnTensorDescriptor_t x_desc_ = nullptr, z_desc_ = nullptr, bn_desc_ = nullptr;
  cudnnFilterDescriptor_t w_desc_ = nullptr;
  cudnnConvolutionDescriptor_t conv_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo_{};
  Tensor workspace_;
  size_t workspace_bytes_ = 0;
};
#endif

struct Ceiling {
  double value = 0;
  std::string name;
};

bench::Row make_row(const std::string& version, Device d, const Problem& p, double err, double tol) {
  bench::Row row;
  row.kernel = "conv2d_batchnorm";
  row.version = version;
  row.device = d.str();
  row.shape = p.label;
  row.max_rel_error = err;
  row.valid = err <= tol;
  return row;
}

void finish_row(bench::Row& row, const bench::Timing& t, double flops, const Ceiling& c) {
  row.timing = t;
  row.gflops = flops / (t.median_ms * 1e-3) / 1e9;
  row.ceiling = c.value;
  row.ceiling_name = c.name;
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  bool cpu_batch4_only = false;
  try {
    if (!bench::parse_common_flags(
            argc, argv,
            "usage: bench_conv_bn [--threads N] [--repeats N] [--json PATH] [--quick] [--cpu-batch4-only]\n"
            "  (--quick: 128 -> 128 channels at B=2, both convs, every row kind)\n"
            "  --cpu-batch4-only  time the CPU at B=4 only (B=16 is 4x the work); the B=16 CPU\n"
            "                     results are still computed once as the GPU rows' reference",
            flags))
      return 0;
    for (const std::string& arg : flags.rest) {
      if (arg != "--cpu-batch4-only") throw std::runtime_error("unknown flag '" + arg + "' (see --help)");
      cpu_batch4_only = true;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv_bn: %s\n", e.what());
    return 2;
  }

  int status = 0;
  try {
    bench::Report report("conv2d + batchnorm2d (+ GELU), channels last, f32");
    const bool gpu = flags.cuda_rows && cuda::is_available();
    std::map<int64_t, double> host_ceilings;  // by GEMM rows M
    // Timings of the rows that passed validation (whose validation run is
    // warm-up enough under --quick).
    const auto host_time = [&](const std::function<void()>& fn) {
      return bench::time_host(fn, flags.warmup(1), flags.repeats);
    };
    const int64_t channels = flags.quick ? kQuickChannels : kFullChannels;
    const std::vector<std::array<int64_t, 3>> shapes =
        flags.quick ? std::vector<std::array<int64_t, 3>>{{2, 24, 2}, {2, 12, 1}}
                    : std::vector<std::array<int64_t, 3>>{{4, 24, 2}, {4, 12, 1}, {16, 24, 2}, {16, 12, 1}};
    for (const auto& [batch, grid, stride] : shapes) {
      const bool time_cpu = flags.cpu_rows && !(cpu_batch4_only && batch > 4);
      if (!time_cpu && !gpu) continue;
      const Problem p = make_problem(batch, grid, stride, channels);
      const kernels::ConvShape& s = p.s;
      const double fwd_flops = p.flops(), train_flops = 3 * p.flops();
      kernels::BatchNormParams train, eval;
      eval.training = false;

      // ---- CPU: the oracle's results (also the GPU rows' reference), then timing -----------
      ForwardBuffers cpu_buf(p, Device::cpu());
      cpu_buf.run(eval);  // first, while the running statistics are the initial ones
      const Tensor cpu_y_eval = cpu_buf.y.clone();
      cpu_buf.run(train);
      const Tensor cpu_y_train = cpu_buf.y.clone();
      TrainStep cpu_step(p, Device::cpu());
      train_forward(cpu_step, s, false);
      const Tensor cpu_dx = cpu_step.x.grad(), cpu_dw = cpu_step.w.grad();
      const Tensor cpu_dgamma = cpu_step.gamma.grad(), cpu_dbeta = cpu_step.beta.grad();
      if (time_cpu) {
        const int64_t M = s.rows();
        if (!host_ceilings.count(M)) host_ceilings[M] = bench::host_sgemm_gflops(M, s.out_c, s.patch());
        const Ceiling ceiling{host_ceilings[M], "OpenBLAS sgemm GFLOP/s at the same M, N, K"};
        const Reference ref_train = reference(p, true, false), ref_eval = reference(p, false, false);
        const Device cpu = Device::cpu();
        bench::Row r1 = make_row("vlmc fwd train", cpu, p, check_reference(ref_train, cpu_y_train, {}, {}), 1e-5);
        if (r1.valid) finish_row(r1, host_time([&] { cpu_buf.run(train); }), fwd_flops, ceiling);
        report.add(r1);
        bench::Row r2 = make_row("vlmc fwd eval", cpu, p, check_reference(ref_eval, cpu_y_eval, {}, {}), 1e-5);
        if (r2.valid) finish_row(r2, host_time([&] { cpu_buf.run(eval); }), fwd_flops, ceiling);
        report.add(r2);
        bench::Row r3 = make_row("vlmc fwd+bwd train", cpu, p,
                                 check_reference(ref_train, cpu_step.y.detach(), cpu_dgamma, cpu_dbeta), 1e-5);
        if (r3.valid)
          finish_row(r3, host_time([&] { train_forward(cpu_step, s, false); }), train_flops,
                     ceiling);
        report.add(r3);
      }

#if VLMC_WITH_CUDA
      if (!gpu) continue;
      // ---- CUDA: each forward version, eval, the training step, then cuDNN ---------------
      const Device dev = Device::cuda(0);
      const cudaStream_t stream = cuda::stream(0);
      const auto device_time = [&](const std::function<void()>& fn) {
        return bench::time_device(fn, stream, flags.warmup(2), flags.repeats);
      };
      auto on_host = [](const Tensor& t) { return t.to(Device::cpu()); };
      const Ceiling ceiling{device_sgemm_gflops(s.rows(), s.out_c, s.patch(), flags.quick),
                            "cuBLAS sgemm (no TF32) GFLOP/s at the same M, N, K"};
      {
        ForwardBuffers buf(p, dev);
        buf.run(eval);  // before any training run moves the running statistics
        bench::Row r = make_row("vlmc fwd eval", dev, p, rel_error(on_host(buf.y), cpu_y_eval), 1e-5);
        if (r.valid) finish_row(r, device_time([&] { buf.run(eval); }), fwd_flops, ceiling);
        report.add(r);
        for (const int version : {1, 2}) {
          kernels::BatchNormParams v = train;
          v.cuda_version = version;
          buf.run(v);
          bench::Row rv = make_row("vlmc_v" + std::to_string(version) + " fwd train", dev, p,
                                   rel_error(on_host(buf.y), cpu_y_train), 1e-5);
          if (rv.valid)
            finish_row(rv, device_time([&] { buf.run(v); }), fwd_flops, ceiling);
          report.add(rv);
        }
        kernels::BatchNormParams gelu = train;
        gelu.gelu = true;
        cpu_buf.run(gelu);  // the oracle on the same inputs
        buf.run(gelu);
        bench::Row rg = make_row("vlmc_v2 fwd train +gelu", dev, p, rel_error(on_host(buf.y), cpu_buf.y), 1e-5);
        if (rg.valid)
          finish_row(rg, device_time([&] { buf.run(gelu); }), fwd_flops, ceiling);
        report.add(rg);
      }
      {
        TrainStep step(p, dev);
        train_forward(step, s, false);
        const double err = std::max({rel_error(on_host(step.y), cpu_y_train), rel_error(on_host(step.x.grad()), cpu_dx),
                                     rel_error(on_host(step.w.grad()), cpu_dw),
                                     rel_error(on_host(step.gamma.grad()), cpu_dgamma),
                                     rel_error(on_host(step.beta.grad()), cpu_dbeta)});
        bench::Row r = make_row("vlmc fwd+bwd train", dev, p, err, 1e-5);
        if (r.valid)
          finish_row(r, device_time([&] { train_forward(step, s, false); }),
                     train_flops, ceiling);
        report.add(r);
      }
#if VLMC_WITH_CUDNN
      // cuDNN with exact f32 (FMA math) and with TF32; validated as ours, TF32 more loosely.
      // A cuDNN failure (an unsupported configuration on some GPU) costs its rows, not the run.
      for (const bool tf32 : {false, true}) try {
        const std::string math = tf32 ? " (tf32)" : " (fma)";
        const double tol = tf32 ? 1e-2 : 1e-4;
        CudnnConvBn dnn(s, tf32);
        const Tensor w_krsc = p.w.permute({0, 2, 3, 1}).contiguous().to(dev);
        const Tensor x = p.x.to(dev), gamma = p.gamma.to(dev), beta = p.beta.to(dev), dy = p.dy.to(dev);
        const Shape out{s.batch, s.out_h, s.out_w, s.out_c};
        Tensor z = Tensor::empty(out, DType::f32, dev), y = Tensor::empty(out, DType::f32, dev);
        Tensor dz = Tensor::empty(out, DType::f32, dev);
        Tensor rm = p.running_mean.to(dev).clone(), rv = p.running_var.to(dev).clone();
        Tensor save_mean = Tensor::empty({s.out_c}, DType::f32, dev), save_inv = Tensor::empty({s.out_c}, DType::f32, dev);
        Tensor dgamma = Tensor::empty({s.out_c}, DType::f32, dev), dbeta = Tensor::empty({s.out_c}, DType::f32, dev);
        Tensor dx = Tensor::empty(p.x.shape(), DType::f32, dev), dw = Tensor::empty(w_krsc.shape(), DType::f32, dev);
        auto fwd = [&](bool training) {
          dnn.forward(training, x.data<float>(), w_krsc.data<float>(), gamma.data<float>(), beta.data<float>(),
                      z.data<float>(), y.data<float>(), rm.data<float>(), rv.data<float>(), save_mean.data<float>(),
                      save_inv.data<float>());
        };
        auto bwd = [&] {
          dnn.backward(x.data<float>(), w_krsc.data<float>(), z.data<float>(), dy.data<float>(), gamma.data<float>(),
                       save_mean.data<float>(), save_inv.data<float>(), dz.data<float>(), dgamma.data<float>(),
                       dbeta.data<float>(), dx.data<float>(), dw.data<float>());
        };
        fwd(false);  // eval first, while the running statistics are the initial ones
        bench::Row re = make_row("cudnn fwd eval" + math, dev, p, rel_error(on_host(y), cpu_y_eval), tol);
        if (re.valid) finish_row(re, device_time([&] { fwd(false); }), fwd_flops, ceiling);
        report.add(re);
        fwd(true);
        bench::Row rt = make_row("cudnn fwd train" + math, dev, p, rel_error(on_host(y), cpu_y_train), tol);
        if (rt.valid) finish_row(rt, device_time([&] { fwd(true); }), fwd_flops, ceiling);
        report.add(rt);
        fwd(true);
        bwd();
        const Tensor dw_torch = on_host(dw).permute({0, 3, 1, 2}).contiguous();  // back to [Cout, Cin, kh, kw]
        const double err = std::max({rel_error(on_host(y), cpu_y_train), rel_error(on_host(dx), cpu_dx),
                                     rel_error(dw_torch, cpu_dw), rel_error(on_host(dgamma), cpu_dgamma),
                                     rel_error(on_host(dbeta), cpu_dbeta)});
        bench::Row rb = make_row("cudnn fwd+bwd train" + math, dev, p, err, tol);
        if (rb.valid)
          finish_row(rb, device_time([&] { fwd(true); bwd(); }), train_flops, ceiling);
        report.add(rb);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_conv_bn: cuDNN baseline%s at %s skipped: %s\n", tf32 ? " (tf32)" : " (fma)",
                     p.label.c_str(), e.what());
      }
#endif
#endif
    }
    report.print();
    if (cpu_batch4_only) std::printf("CPU rows timed at B=4 only (--cpu-batch4-only).\n");
    std::printf("CPU rows are validated on %zu of the %ld channels (y, and dgamma, dbeta for fwd+bwd) against a\n"
                "direct double-precision convolution + batch norm; CUDA and cuDNN rows against the CPU everywhere.\n",
                checked_channels(channels).size(), static_cast<long>(channels));
#if VLMC_WITH_CUDA && !VLMC_WITH_CUDNN
    if (gpu) std::printf("cuDNN baseline: not built (cudnn.h / libcudnn not found at configure time).\n");
#endif
    if (!flags.json.empty()) report.write_json(flags.json);
    status = bench::exit_status(report, flags, "bench_conv_bn");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv_bn: %s\n", e.what());
    return 1;
  }
  return status;
}
