// Fused linear + bias + GELU, y = GELU(x·Wᵀ + b), at the MLP connector's first
// layer: x [B·576, 1024], W [4096, 1024], B = 4 (M = 2304) and 16 (M = 9216).
//
// Every version is validated against an f64 reference (kernels::cpu in
// double) before it is timed; the fraction is of the ceiling measured in the
// same run: plain OpenBLAS sgemm at the same shape on the CPU, a large square
// cuBLAS bf16 GEMM on the GPU.
//
// CPU rows: OpenBLAS sgemm alone (the ceiling), sgemm followed by a separate
// bias + GELU pass over y, vlmc's fused kernel (exact and tanh GELU, without
// and with the pre-activation z kept for the backward), the linear_gelu op
// (which also allocates y), the unfused linear + gelu ops, and the fused
// backward (dz/db pass + two sgemm; 4·M·N·K flops).
// CUDA rows (when a GPU is visible): vlmc v1 (SIMT f32), v2 (TF32), v3 (bf16),
// each writing y and z; cuBLAS sgemm + a separate GELU kernel; cuBLASLt with
// the GELU_AUX_BIAS epilogue (tanh GELU, validated against the tanh reference)
// in f32, TF32 and bf16; cuBLAS bf16 GEMM alone; the backward.
//
// --quick (the smoke test ctest runs): one scaled-down problem, M = 1152,
// K = 128, N = 4096, with every row above, one repeat and no warm-up.
//
//   bench_fused_linear [--threads N] [--repeats N] [--json PATH] [--quick] [--cpu-only] [--cuda-only]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/threads.h"
#include "kernels/elementwise.h"
#include "kernels/fused_linear.h"
#include "kernels/gemm.h"

#if VLMC_WITH_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

using namespace vlmc;
using kernels::GeluKind;

namespace {

bench::Row make_row(const std::string& version, const std::string& device, const std::string& shape) {
  bench::Row r;
  r.kernel = "fused_linear_gelu";
  r.version = version;
  r.device = device;
  r.shape = shape;
  return r;
}

// ||got - want|| / ||want||, infinite when got holds a NaN.
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::isnan(diff) ? INFINITY : std::sqrt(diff / std::max(norm, 1e-300));
}

// The problem at one M (K inputs, N outputs), with its f64 references.
struct Problem {
  int64_t m, k, n;
  std::string shape;
  Tensor x, w, b;                              // f32, CPU
  std::vector<double> z, y_erf, y_tanh;        // forward references
  Tensor dy;                                   // f32 upstream gradient
  std::vector<double> dx, dw, db;              // erf backward references
};

Problem make_problem(int64_t m, int64_t k, int64_t n) {
  Problem p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.shape = "M=" + std::to_string(m) + " K=" + std::to_string(k) + " N=" + std::to_string(n);
  Generator gen(11);
  p.x = Tensor::randn({m, k}, gen);
  p.w = Tensor::randn({n, k}, gen) * (1.0 / std::sqrt(double(k)));  // z of unit variance
  p.b = Tensor::randn({n}, gen);
  p.dy = Tensor::randn({m, n}, gen);
  const Tensor x = p.x.to(DType::f64), w = p.w.to(DType::f64), b = p.b.to(DType::f64);
  Tensor y = Tensor::empty({m, n}, DType::f64), z = Tensor::empty({m, n}, DType::f64);
  kernels::cpu::linear_gelu<double>(y.data<double>(), z.data<double>(), x.data<double>(),
                                    w.data<double>(), b.data<double>(), m, n, k, GeluKind::erf);
  p.y_erf = y.to_vector<double>();
  p.z = z.to_vector<double>();
  kernels::cpu::linear_gelu<double>(y.data<double>(), nullptr, x.data<double>(), w.data<double>(),
                                    b.data<double>(), m, n, k, GeluKind::tanh);
  p.y_tanh = y.to_vector<double>();
  // Backward in f64: dz (in y's buffer), db, then dx = dz·W, dW = dzᵀ·x.
  const Tensor dy = p.dy.to(DType::f64);
  Tensor db = Tensor::empty({n}, DType::f64), dx = Tensor::empty({m, k}, DType::f64),
         dw = Tensor::empty({n, k}, DType::f64);
  kernels::cpu::linear_gelu_backward<double>(y.data<double>(), db.data<double>(), dy.data<double>(),
                                             z.data<double>(), m, n, GeluKind::erf);
  kernels::cpu::gemm<double>(false, false, m, k, n, 1.0, y.data<double>(), n, w.data<double>(),
                             k, 0.0, dx.data<double>(), k);
  kernels::cpu::gemm<double>(true, false, n, k, m, 1.0, y.data<double>(), n, x.data<double>(),
                             k, 0.0, dw.data<double>(), k);
  p.dx = dx.to_vector<double>();
  p.dw = dw.to_vector<double>();
  p.db = db.to_vector<double>();
  return p;
}

// The largest of the three backward errors.
double backward_error(const Tensor& dx, const Tensor& dw, const Tensor& db, const Problem& p) {
  return std::max({rel_error(dx.to_vector<float>(), p.dx), rel_error(dw.to_vector<float>(), p.dw),
                   rel_error(db.to_vector<float>(), p.db)});
}

// y [m, n] = GELU(y + b), a separate pass after the GEMM, one row at a time
// with the same vectorized erf as the fused kernel: what fusing saves is this
// pass's trip through memory.
void bias_gelu_pass(float* y, const float* b, int64_t m, int64_t n) {
#pragma omp parallel
  {
    std::vector<float> t(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      float* row = y + i * n;
      for (int64_t j = 0; j < n; ++j) {
        row[j] += b[j];
        t[j] = row[j] * 0.70710678f;
      }
      kernels::cpu::erf_fast(t.data(), t.data(), n);
      for (int64_t j = 0; j < n; ++j) row[j] = 0.5f * row[j] * (1.0f + t[j]);
    }
  }
}

// Host timings of several functions taken round-robin (one call of each per
// round, after `warmup` untimed rounds), so that other load on the machine
// falls on all of them alike and their ratios stay meaningful.
std::vector<bench::Timing> time_interleaved(const std::vector<std::function<void()>>& fns, int repeats,
                                            int warmup) {
  std::vector<std::vector<double>> ms(fns.size());
  for (int round = -warmup; round < std::max(repeats, 1); ++round) {
    for (size_t i = 0; i < fns.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      fns[i]();
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (round >= 0) ms[i].push_back(t);
    }
  }
  std::vector<bench::Timing> out;
  for (std::vector<double>& v : ms) {
    std::sort(v.begin(), v.end());
    bench::Timing t;
    t.repeats = static_cast<int>(v.size());
    t.min_ms = v.front();
    t.median_ms = v[v.size() / 2];
    out.push_back(t);
  }
  return out;
}

void cpu_rows(bench::Report& report, const Problem& p, int repeats, int warmup) {
  const int64_t m = p.m, k = p.k, n = p.n;
  const double flops = 2.0 * m * n * k;
  const float *x = p.x.data<float>(), *w = p.w.data<float>(), *b = p.b.data<float>();
  Tensor y_t = Tensor::empty({m, n}), z_t = Tensor::empty({m, n});
  float *y = y_t.data<float>(), *z = z_t.data<float>();
  const std::vector<float> bias = p.b.to_vector<float>();

  // Each candidate is run once and validated here; the valid ones are timed
  // together at the end.
  struct Candidate {
    bench::Row row;
    std::function<void()> fn;
    double work;
  };
  std::vector<Candidate> candidates;
  const auto add = [&](const std::string& version, double error, double tolerance, std::function<void()> fn,
                       double work) {
    bench::Row r = make_row(version, "cpu", p.shape);
    r.max_rel_error = error;
    r.valid = error <= tolerance;
    candidates.push_back({r, std::move(fn), work});
  };
  const auto y_vec = [&] { return y_t.to_vector<float>(); };

  // 1. The ceiling: sgemm alone, validated with the bias added afterwards.
  const auto sgemm = [=] { kernels::cpu::gemm<float>(false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n); };
  sgemm();
  std::vector<float> zb = y_vec();
  for (size_t i = 0; i < zb.size(); ++i) zb[i] += bias[i % n];
  add("openblas_sgemm (no epilogue)", rel_error(zb, p.z), 1e-5, sgemm, flops);

  // 2. sgemm, then the bias + GELU pass over all of y.
  const auto unfused_pass = [=] { sgemm(); bias_gelu_pass(y, b, m, n); };
  unfused_pass();
  add("openblas_sgemm + gelu pass", rel_error(y_vec(), p.y_erf), 1e-5, unfused_pass, flops);

  // 3-5. The fused kernel.
  for (const GeluKind kind : {GeluKind::erf, GeluKind::tanh}) {
    const auto fused = [=] { kernels::cpu::linear_gelu<float>(y, nullptr, x, w, b, m, n, k, kind); };
    fused();
    add(kind == GeluKind::erf ? "vlmc_fused (erf)" : "vlmc_fused (tanh)",
        rel_error(y_vec(), kind == GeluKind::erf ? p.y_erf : p.y_tanh), 1e-5, fused, flops);
  }
  const auto fused_z = [=] { kernels::cpu::linear_gelu<float>(y, z, x, w, b, m, n, k, GeluKind::erf); };
  fused_z();
  add("vlmc_fused keeps z (erf)", std::max(rel_error(y_vec(), p.y_erf), rel_error(z_t.to_vector<float>(), p.z)),
      1e-5, fused_z, flops);

  // 6-7. Through the op API (which also allocates y), and the unfused pair of ops.
  {
    NoGradGuard no_grad;
    const auto op = [&p] { linear_gelu(p.x, p.w, p.b); };
    add("vlmc linear_gelu op", rel_error(linear_gelu(p.x, p.w, p.b).to_vector<float>(), p.y_erf), 1e-5, op, flops);
    const auto two_ops = [&p] { gelu(linear(p.x, p.w, p.b)); };
    add("vlmc linear + gelu ops", rel_error(gelu(linear(p.x, p.w, p.b)).to_vector<float>(), p.y_erf), 1e-5,
        two_ops, flops);
  }

  // 8. Backward: dz (into y's buffer) and db in one pass, then dx = dz·W and
  // dW = dzᵀ·x. z is the one fused_z wrote (every later run rewrites the same values).
  Tensor dx = Tensor::empty({m, k}), dw = Tensor::empty({n, k}), db = Tensor::empty({n});
  const float* dy = p.dy.data<float>();
  float *pdx = dx.data<float>(), *pdw = dw.data<float>(), *pdb = db.data<float>();
  const auto backward = [=] {
    kernels::cpu::linear_gelu_backward<float>(y, pdb, dy, z, m, n, GeluKind::erf);
    kernels::cpu::gemm<float>(false, false, m, k, n, 1.0f, y, n, w, k, 0.0f, pdx, k);
    kernels::cpu::gemm<float>(true, false, n, k, m, 1.0f, y, n, x, k, 0.0f, pdw, k);
  };
  backward();
  add("vlmc_fused backward (erf)", backward_error(dx, dw, db, p), 1e-5, backward, 2 * flops);

  // Time the valid ones together (NoGradGuard: the op rows must not record).
  NoGradGuard no_grad;
  std::vector<std::function<void()>> fns;
  for (const Candidate& c : candidates)
    if (c.row.valid) fns.push_back(c.fn);
  const std::vector<bench::Timing> timings = time_interleaved(fns, repeats, warmup);
  size_t next = 0;
  for (Candidate& c : candidates) {
    if (!c.row.valid) continue;
    c.row.timing = timings[next++];
    c.row.gflops = c.work / (c.row.timing.median_ms * 1e-3) / 1e9;
  }
  // The ceiling is the first row's, plain sgemm (none when it failed validation).
  const double ceiling = candidates.front().row.valid ? candidates.front().row.gflops : 0;
  for (Candidate& c : candidates) {
    if (c.row.valid && ceiling > 0) {
      c.row.ceiling = ceiling;
      c.row.ceiling_name = "OpenBLAS sgemm GFLOP/s at " + p.shape;
    }
    report.add(c.row);
  }
}

#if VLMC_WITH_CUDA

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": " + cublasGetStatusName(status));
}

const uint16_t* bits(const Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); }

// cuBLASLt, y = GELU_tanh(x·Wᵀ + b) with the pre-activation written to aux, in
// the row-major <-> column-major mapping of kernels/cuda/gemm.cu: D [N, M]
// column-major = W (stored [K, N] column-major, transposed) · x (stored [K, M]).
struct LtGelu {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, bl = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;

  LtGelu(cublasLtHandle_t lt, cublasComputeType_t compute, cudaDataType_t type, int64_t m, int64_t k, int64_t n,
         const void* bias, void* aux, size_t workspace) {
    check_cublas(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const uint32_t epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    const int64_t aux_ld = n;
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "TRANSA");
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "TRANSB");
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
                 "EPILOGUE");
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
                 "BIAS_POINTER");
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)),
                 "EPILOGUE_AUX_POINTER");
    check_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)),
                 "EPILOGUE_AUX_LD");
    check_cublas(cublasLtMatrixLayoutCreate(&a, type, k, n, k), "layout A");
    check_cublas(cublasLtMatrixLayoutCreate(&bl, type, k, m, k), "layout B");
    check_cublas(cublasLtMatrixLayoutCreate(&d, type, n, m, n), "layout D");
    cublasLtMatmulPreference_t pref = nullptr;
    check_cublas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                      sizeof(workspace)),
                 "MAX_WORKSPACE_BYTES");
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, desc, a, bl, d, d, pref, 1, &result, &count);
    found = s == CUBLAS_STATUS_SUCCESS && count > 0;
    if (found) algo = result.algo;
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~LtGelu() {
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(bl);
    cublasLtMatrixLayoutDestroy(d);
    cublasLtMatmulDescDestroy(desc);
  }
  LtGelu(const LtGelu&) = delete;
  LtGelu& operator=(const LtGelu&) = delete;

  void run(cublasLtHandle_t lt, const void* x, const void* w, void* y, void* workspace, size_t bytes,
           cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    check_cublas(cublasLtMatmul(lt, desc, &alpha, w, a, x, bl, &beta, y, d, y, d, &algo, workspace, bytes, stream),
                 "cublasLtMatmul");
  }
};

// TFLOP/s of a square n³ bf16 GEMM through cuBLAS (f32 accumulation): the GPU ceiling.
double cublas_bf16_tflops(cublasHandle_t h, int64_t n, cudaStream_t stream, int repeats, int warmup) {
  // Random operands: a GEMM on constant data can run faster than on real data.
  Generator gen(11);
  const Tensor a = Tensor::randn({n, n}, gen).to(Device::cuda(0), DType::bf16);
  const Tensor bm = Tensor::randn({n, n}, gen).to(Device::cuda(0), DType::bf16);
  Tensor c = Tensor::empty({n, n}, DType::bf16, Device::cuda(0));
  const float alpha = 1.0f, beta = 0.0f;
  const auto gemm = [&] {
    check_cublas(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(n),
                              static_cast<int>(n), &alpha, a.data_ptr(), CUDA_R_16BF, static_cast<int>(n),
                              bm.data_ptr(), CUDA_R_16BF, static_cast<int>(n), &beta, c.data_ptr(), CUDA_R_16BF,
                              static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  };
  const bench::Timing t = bench::time_device(gemm, stream, warmup, repeats);
  return 2.0 * n * n * n / (t.median_ms * 1e-3) / 1e12;
}

void cuda_rows(bench::Report& report, const Problem& p, int repeats, int warmup, double ceiling_gflops,
               const std::string& ceiling_name) {
  const Device gpu = Device::cuda(0);
  const cudaStream_t stream = cuda::stream(0);
  const int64_t m = p.m, k = p.k, n = p.n;
  const double flops = 2.0 * m * n * k;
  const Tensor x = p.x.to(gpu), w = p.w.to(gpu), b = p.b.to(gpu), dy = p.dy.to(gpu);
  const Tensor x16 = p.x.to(gpu, DType::bf16), w16 = p.w.to(gpu, DType::bf16), b16 = p.b.to(gpu, DType::bf16);
  Tensor y = Tensor::empty({m, n}, DType::f32, gpu), z = Tensor::empty({m, n}, DType::f32, gpu);
  Tensor y16 = Tensor::empty({m, n}, DType::bf16, gpu), z16 = Tensor::empty({m, n}, DType::bf16, gpu);

  auto row = [&](const std::string& version, double error, double tolerance, const std::function<void()>& fn,
                 double work) {
    bench::Row r = make_row(version, gpu.str(), p.shape);
    r.max_rel_error = error;
    r.valid = error <= tolerance;
    if (r.valid) {
      r.timing = bench::time_device(fn, stream, warmup, repeats);
      r.gflops = work / (r.timing.median_ms * 1e-3) / 1e9;
      r.ceiling = ceiling_gflops;
      r.ceiling_name = ceiling_name;
    }
    report.add(r);
  };
  // Outputs are poisoned before each validation run.
  const auto poison = [&] {
    y.fill_(NAN);
    z.fill_(NAN);
    y16.fill_(NAN);
    z16.fill_(NAN);
  };
  const auto f32_of = [](const Tensor& t) { return t.to(Device::cpu(), DType::f32).to_vector<float>(); };

  // Ours. Tolerances: v1 exact; TF32 and bf16 from their input rounding
  // (tests/cuda/test_cuda_fused_linear.cpp explains the bounds).
  struct Version {
    const char* name;
    kernels::cuda::LinearGeluVersion v;
    double tolerance;
  };
  for (const Version& v : {Version{"vlmc_v1 simt f32 (y+z)", kernels::cuda::LinearGeluVersion::v1_simt, 1e-5},
                           Version{"vlmc_v2 tf32 (y+z)", kernels::cuda::LinearGeluVersion::v2_tf32, 3e-3}}) {
    const auto run = [&, v] {
      kernels::cuda::linear_gelu_f32(v.v, y.data<float>(), z.data<float>(), x.data<float>(), w.data<float>(),
                                     b.data<float>(), m, n, k, GeluKind::erf, stream);
    };
    poison();
    run();
    row(v.name, std::max(rel_error(f32_of(y), p.y_erf), rel_error(f32_of(z), p.z)), v.tolerance, run, flops);
  }
  {
    const auto run = [&] {
      kernels::cuda::linear_gelu_bf16(y16.data_ptr(), DType::bf16, z.data<float>(), bits(x16), bits(w16), bits(b16),
                                      m, n, k, GeluKind::erf, stream);
    };
    poison();
    run();
    row("vlmc_v3 bf16 (y bf16 + z f32)", std::max(rel_error(f32_of(y16), p.y_erf), rel_error(f32_of(z), p.z)),
        1.5e-2, run, flops);
  }

  // cuBLAS sgemm (bias laid into y first, beta = 1) + vlmc's GELU kernel: z, then y.
  {
    const auto run = [&] {
      kernels::cuda::broadcast_rows<float>(z.data<float>(), b.data<float>(), m, n, n, stream);
      kernels::cuda::gemm<float>(false, true, m, n, k, 1.0f, x.data<float>(), k, w.data<float>(), k, 1.0f,
                                 z.data<float>(), n, stream);
      kernels::cuda::unary<float>(kernels::UnaryOp::gelu, y.data<float>(), z.data<float>(), m * n, 0.0, stream);
    };
    poison();
    run();
    row("cublas_sgemm + gelu kernel", std::max(rel_error(f32_of(y), p.y_erf), rel_error(f32_of(z), p.z)), 1e-5, run,
        flops);
  }

  cublasHandle_t handle = nullptr;
  cublasLtHandle_t lt = nullptr;
  check_cublas(cublasCreate(&handle), "cublasCreate");
  check_cublas(cublasSetStream(handle, stream), "cublasSetStream");
  check_cublas(cublasLtCreate(&lt), "cublasLtCreate");
  constexpr size_t kWorkspace = size_t(32) << 20;
  Tensor workspace = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::u8, gpu);

  // cuBLASLt GELU_AUX_BIAS: the tanh GELU, so validated against the tanh reference.
  struct LtVersion {
    const char* name;
    cublasComputeType_t compute;
    bool bf16;
    double tolerance;
  };
  for (const LtVersion& v : {LtVersion{"cublasLt f32 gelu_aux_bias (tanh)", CUBLAS_COMPUTE_32F, false, 1e-4},
                             LtVersion{"cublasLt tf32 gelu_aux_bias (tanh)", CUBLAS_COMPUTE_32F_FAST_TF32, false, 3e-3},
                             LtVersion{"cublasLt bf16 gelu_aux_bias (tanh)", CUBLAS_COMPUTE_32F, true, 1.5e-2}}) {
    const LtGelu plan(lt, v.compute, v.bf16 ? CUDA_R_16BF : CUDA_R_32F, m, k, n, v.bf16 ? b16.data_ptr() : b.data_ptr(),
                      v.bf16 ? z16.data_ptr() : z.data_ptr(), kWorkspace);
    if (!plan.found) {
      bench::Row r = make_row(std::string(v.name) + " [no algorithm]", gpu.str(), p.shape);
      r.max_rel_error = INFINITY;
      r.available = false;  // nothing to validate: not a failure of this benchmark
      report.add(r);
      continue;
    }
    const auto run = [&] {
      plan.run(lt, v.bf16 ? x16.data_ptr() : x.data_ptr(), v.bf16 ? w16.data_ptr() : w.data_ptr(),
               v.bf16 ? y16.data_ptr() : y.data_ptr(), workspace.data_ptr(), kWorkspace, stream);
    };
    poison();
    run();
    const double error = std::max(rel_error(f32_of(v.bf16 ? y16 : y), p.y_tanh), rel_error(f32_of(v.bf16 ? z16 : z), p.z));
    row(v.name, error, v.tolerance, run, flops);
  }

  // cuBLAS bf16 GEMM alone at this shape (validated with the bias added on the host).
  {
    const float alpha = 1.0f, beta = 0.0f;
    const auto run = [&] {
      check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                static_cast<int>(k), &alpha, w16.data_ptr(), CUDA_R_16BF, static_cast<int>(k),
                                x16.data_ptr(), CUDA_R_16BF, static_cast<int>(k), &beta, y16.data_ptr(), CUDA_R_16BF,
                                static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx");
    };
    poison();
    run();
    std::vector<float> zb = f32_of(y16);
    const std::vector<float> bias = p.b.to_vector<float>();
    for (size_t i = 0; i < zb.size(); ++i) zb[i] += bias[i % n];
    row("cublas bf16 gemm (no epilogue)", rel_error(zb, p.z), 1.5e-2, run, flops);
  }

  // Backward: our dz/db kernel, then cuBLAS for dx and dW (as the op runs it).
  {
    Tensor dz = Tensor::empty({m, n}, DType::f32, gpu), db = Tensor::empty({n}, DType::f32, gpu);
    Tensor dx = Tensor::empty({m, k}, DType::f32, gpu), dw = Tensor::empty({n, k}, DType::f32, gpu);
    kernels::cuda::linear_gelu_f32(kernels::cuda::LinearGeluVersion::v1_simt, y.data<float>(), z.data<float>(),
                                   x.data<float>(), w.data<float>(), b.data<float>(), m, n, k, GeluKind::erf,
                                   stream);
    const auto run = [&] {
      kernels::cuda::linear_gelu_backward<float>(dz.data<float>(), db.data<float>(), dy.data<float>(), z.data<float>(),
                                                 m, n, GeluKind::erf, stream);
      kernels::cuda::gemm<float>(false, false, m, k, n, 1.0f, dz.data<float>(), n, w.data<float>(), k, 0.0f,
                                 dx.data<float>(), k, stream);
      kernels::cuda::gemm<float>(true, false, n, k, m, 1.0f, dz.data<float>(), n, x.data<float>(), k, 0.0f,
                                 dw.data<float>(), k, stream);
    };
    dz.fill_(NAN);
    db.fill_(NAN);
    run();
    row("vlmc backward (dz+db ours, cublas)", backward_error(dx.to(Device::cpu()), dw.to(Device::cpu()),
                                                             db.to(Device::cpu()), p),
        1e-5, run, 2 * flops);
  }
  cublasLtDestroy(lt);
  cublasDestroy(handle);
}

#endif  // VLMC_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(
            argc, argv,
            "usage: bench_fused_linear [--threads N] [--repeats N] [--json PATH] [--quick] [--cpu-only] [--cuda-only]\n"
            "  (--quick: one scaled-down problem, M=1152 K=128 N=4096, every row kind)",
            flags))
      return 0;
    for (const std::string& arg : flags.rest) throw std::runtime_error("unknown flag '" + arg + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fused_linear: %s\n", e.what());
    return 2;
  }
  const bool cpu = flags.cpu_rows;
  bool gpu = flags.cuda_rows;
  gpu = gpu && cuda::is_available();
  // --quick: B = 2 with K cut to 128 (the f64 references dominate a run); N
  // stays 4096 so that the CPU kernel still splits M into two row blocks and
  // the backward's db into many column chunks, as at full size.
  const int64_t in = flags.quick ? 128 : 1024, out = 4096;
  const std::vector<int64_t> batches = flags.quick ? std::vector<int64_t>{2} : std::vector<int64_t>{4, 16};
  bench::Report report("fused linear + bias + GELU, x [M, " + std::to_string(in) + "] -> [M, " +
                       std::to_string(out) + "]");
#if VLMC_WITH_CUDA
  double gpu_ceiling = 0;
  const int64_t ceiling_n = flags.quick ? 2048 : 8192;
  const std::string gpu_ceiling_name = "cuBLAS bf16 GEMM " + std::to_string(ceiling_n) + "^3 GFLOP/s";
  cublasHandle_t ceiling_handle = nullptr;
  if (gpu) {
    check_cublas(cublasCreate(&ceiling_handle), "cublasCreate");
    check_cublas(cublasSetStream(ceiling_handle, cuda::stream(0)), "cublasSetStream");
    gpu_ceiling = 1e3 * cublas_bf16_tflops(ceiling_handle, ceiling_n, cuda::stream(0), flags.repeats, flags.warmup(2));
    cublasDestroy(ceiling_handle);
  }
#endif
  for (const int64_t batch : batches) {
    const Problem p = make_problem(batch * 576, in, out);
    if (cpu) cpu_rows(report, p, flags.repeats, flags.warmup(1));
#if VLMC_WITH_CUDA
    if (gpu) cuda_rows(report, p, flags.repeats, flags.warmup(2), gpu_ceiling, gpu_ceiling_name);
#endif
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_fused_linear");
}
