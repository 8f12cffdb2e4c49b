#include "bench/harness.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/cuda/deferred_check.h"
#include "core/cuda/runtime.h"
#include "core/threads.h"
#include "kernels/gemm.h"

#if VLMC_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/check.h"
#endif

namespace vlmc::bench {
namespace {

Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.repeats = static_cast<int>(ms.size());
  t.min_ms = ms.front();
  t.median_ms = ms[ms.size() / 2];
  return t;
}

}  // namespace

double rel_error(const Tensor& actual, const Tensor& expected) {
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  if (a.size() != e.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - e[i]) * (a[i] - e[i]);
    norm += e[i] * e[i];
  }
  if (std::isnan(diff)) return INFINITY;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

Timing time_host(const std::function<void()>& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return summarize(std::move(ms));
}

#if VLMC_WITH_CUDA
Timing time_device(const std::function<void()>& fn, cudaStream_t stream, int warmup, int repeats) {
  int device = 0;  // whose deferred index checks each wait reads (core/cuda/deferred_check.h)
  VLMC_CUDA_CHECK(cudaStreamGetDevice(stream, &device));
  constexpr size_t kFlushBytes = size_t(256) << 20;  // larger than any GPU's L2
  void* flush = nullptr;
  VLMC_CUDA_CHECK(cudaMalloc(&flush, kFlushBytes));
  cudaEvent_t start, stop;
  VLMC_CUDA_CHECK(cudaEventCreate(&start));
  VLMC_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    VLMC_CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, kFlushBytes, stream));
    VLMC_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    VLMC_CUDA_CHECK(cudaEventRecord(stop, stream));
    VLMC_CUDA_CHECK(cudaEventSynchronize(stop));
    cuda::check_deferred_errors(device);  // after the timed span: costs no time measured
    float elapsed = 0;
    VLMC_CUDA_CHECK(cudaEventElapsedTime(&elapsed, start, stop));
    ms.push_back(elapsed);
  }
  VLMC_CUDA_CHECK(cudaEventDestroy(start));
  VLMC_CUDA_CHECK(cudaEventDestroy(stop));
  VLMC_CUDA_CHECK(cudaFree(flush));
  return summarize(std::move(ms));
}

double device_copy_gbps(size_t bytes, cudaStream_t stream) {
  void *a = nullptr, *b = nullptr;
  VLMC_CUDA_CHECK(cudaMalloc(&a, bytes));
  VLMC_CUDA_CHECK(cudaMalloc(&b, bytes));
  VLMC_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, stream));
  const Timing t = time_device(
      [&] { VLMC_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); }, stream, 2, 10);
  VLMC_CUDA_CHECK(cudaFree(a));
  VLMC_CUDA_CHECK(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / (t.median_ms * 1e-3) / 1e9;  // read + write
}
#else
Timing time_device(const std::function<void()>&, cudaStream_t, int, int) {
  throw std::runtime_error("time_device: this build has no CUDA");
}
double device_copy_gbps(size_t, cudaStream_t) { throw std::runtime_error("device_copy_gbps: this build has no CUDA"); }
#endif

double host_sgemm_gflops(int64_t m, int64_t n, int64_t k) {
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(k * n), 0.25f),
      c(static_cast<size_t>(m * n));
  const Timing t = time_host(
      [&] { kernels::cpu::gemm<float>(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n); },
      1, 3);
  return 2.0 * m * n * k / (t.median_ms * 1e-3) / 1e9;
}

double host_copy_gbps(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  const Timing t = time_host([&] { std::memcpy(b.data(), a.data(), bytes); }, 1, 5);
  return 2.0 * static_cast<double>(bytes) / (t.median_ms * 1e-3) / 1e9;
}

void time_bandwidth_row(Row& row, const std::function<void()>& run, bool on_gpu, int repeats,
                        double bytes, double ceiling, const std::string& ceiling_name, bool quick) {
  row.timing = on_gpu ? time_device(run, cuda::stream(0), quick ? 0 : 2, repeats)
                      : time_host(run, quick ? 0 : 1, repeats);
  if (bytes <= 0) return;
  row.gbps = bytes / (row.timing.median_ms * 1e-3) / 1e9;
  row.ceiling = ceiling;
  row.ceiling_name = ceiling_name;
}

int Report::failures() const {
  return static_cast<int>(
      std::count_if(rows_.begin(), rows_.end(), [](const Row& r) { return r.available && !r.valid; }));
}

void Report::print() const {
  std::printf("\n%s (%d threads)\n", title_.c_str(), num_threads());
  std::printf("%-22s %-28s %-7s %-26s %6s %10s %9s %9s %7s\n", "kernel", "version", "device", "shape", "valid",
              "median ms", "GFLOP/s", "GB/s", "of ceil");
  for (const Row& r : rows_) {
    if (!r.valid) {
      std::printf("%-22s %-28s %-7s %-26s %6s   (rel. error %.2e: not timed)\n", r.kernel.c_str(), r.version.c_str(),
                  r.device.c_str(), r.shape.c_str(), "NO", r.max_rel_error);
      continue;
    }
    const double measure = r.gflops > 0 ? r.gflops : r.gbps;
    std::printf("%-22s %-28s %-7s %-26s %6s %10.3f %9.1f %9.1f %6.0f%%\n", r.kernel.c_str(), r.version.c_str(),
                r.device.c_str(), r.shape.c_str(), "yes", r.timing.median_ms, r.gflops, r.gbps,
                r.ceiling > 0 ? 100.0 * measure / r.ceiling : 0.0);
  }
  // Each ceiling once, as measured in this run.
  std::vector<std::string> shown;
  for (const Row& r : rows_) {
    const std::string key = r.device + " " + r.ceiling_name + " " + std::to_string(r.ceiling);
    if (r.ceiling <= 0 || std::find(shown.begin(), shown.end(), key) != shown.end()) continue;
    shown.push_back(key);
    std::printf("ceiling on %s, %s: %.1f (measured in this run)\n", r.device.c_str(), r.ceiling_name.c_str(),
                r.ceiling);
  }
}

void Report::write_json(const std::string& path) const {
  nlohmann::json doc;
  doc["title"] = title_;
  doc["threads"] = num_threads();
  doc["rows"] = nlohmann::json::array();
  for (const Row& r : rows_) {
    doc["rows"].push_back({{"kernel", r.kernel},
                           {"version", r.version},
                           {"device", r.device},
                           {"shape", r.shape},
                           {"valid", r.valid},
                           {"max_rel_error", r.max_rel_error},
                           {"median_ms", r.timing.median_ms},
                           {"min_ms", r.timing.min_ms},
                           {"repeats", r.timing.repeats},
                           {"gflops", r.gflops},
                           {"gbps", r.gbps},
                           {"ceiling", r.ceiling},
                           {"ceiling_name", r.ceiling_name}});
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << doc.dump(2) << "\n";
    if (!out) throw std::runtime_error("bench: cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

bool parse_common_flags(int argc, char** argv, const char* usage, CommonFlags& flags) {
  bool repeats_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(std::string(name) + " needs a value");
      return argv[++i];
    };
    auto positive = [&](const char* name) {
      const std::string v = value(name);
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (*end != '\0' || n < 1) throw std::runtime_error(std::string(name) + " expects a positive integer, got '" + v + "'");
      return static_cast<int>(n);
    };
    if (arg == "--help" || arg == "-h") {
      std::printf("%s\n  --threads N   CPU threads (default: VLMC_NUM_THREADS or all cores)\n"
                  "  --repeats N   timed repeats after warm-up (default %d; 1 with --quick)\n"
                  "  --json PATH   also write the results as JSON\n"
                  "  --quick       smoke test: small shapes only (each bench says which), every row validated,\n"
                  "                one repeat, no warm-up; exits 1 when a row fails validation (ctest -L bench)\n"
                  "  --cpu-only    only the CPU rows\n"
                  "  --cuda-only   only the CUDA rows (CPU references for the validation are still computed)\n",
                  usage, flags.repeats);
      return false;
    } else if (arg == "--threads") {
      flags.threads = positive("--threads");
      set_num_threads(flags.threads);
    } else if (arg == "--repeats") {
      flags.repeats = positive("--repeats");
      repeats_given = true;
    } else if (arg == "--quick") {
      flags.quick = true;
    } else if (arg == "--cpu-only") {
      flags.cuda_rows = false;
    } else if (arg == "--cuda-only") {
      flags.cpu_rows = false;
    } else if (arg == "--json") {
      flags.json = value("--json");
    } else {
      flags.rest.push_back(arg);
    }
  }
  if (flags.quick && !repeats_given) flags.repeats = 1;
  if (!flags.cpu_rows && !flags.cuda_rows) throw std::runtime_error("--cpu-only and --cuda-only exclude each other");
  return true;
}

std::vector<Device> CommonFlags::devices(bool gpu_visible) const {
  std::vector<Device> out;
  if (cpu_rows) out.push_back(Device::cpu());
  if (cuda_rows && gpu_visible) out.push_back(Device::cuda(0));
  return out;
}

int exit_status(const Report& report, const CommonFlags& /*flags*/, const char* program) {
  // A row that failed validation has no meaningful timing: fail the run, in
  // the full mode as in --quick, so that scripts and ctest notice.
  const int failed = report.failures();
  if (failed == 0) return 0;
  std::fprintf(stderr, "%s: %d row(s) failed validation\n", program, failed);
  return 1;
}

}  // namespace vlmc::bench
