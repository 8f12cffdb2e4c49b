// What every kernel benchmark shares: timing (median after warm-up; CUDA
// events with L2 flushed between repeats), the machine's ceilings measured in
// the same run (sgemm GFLOP/s, memory copy GB/s), and one report printed as a
// table and written as JSON.
//
// Benchmarks validate each version against its reference before timing it;
// a version that fails validation is reported as invalid and gets no figures.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"
#include "kernels/cuda_stream.h"

namespace vlmc::bench {

struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  int repeats = 0;
};

// Wall-clock timing of fn on the host: warmup calls, then the median of repeats.
Timing time_host(const std::function<void()>& fn, int warmup = 1, int repeats = 5);

// Device timing with CUDA events on stream; before every repeat a 256 MiB
// buffer is overwritten so that no operand is served from L2.
Timing time_device(const std::function<void()>& fn, cudaStream_t stream, int warmup = 2,
                   int repeats = 10);

// ‖actual - expected‖ / ‖expected‖ over all elements (in double; the plain norm of
// the difference where expected is zero; infinite when any difference is NaN
// or the element counts differ).
double rel_error(const Tensor& actual, const Tensor& expected);

// Ceilings measured now, on this machine, for ratios in the same run.
double host_sgemm_gflops(int64_t m, int64_t n, int64_t k);  // kernels::cpu::gemm (OpenBLAS)
double host_copy_gbps(size_t bytes);                        // memcpy: read + write bytes / s
double device_copy_gbps(size_t bytes, cudaStream_t stream);  // cudaMemcpyAsync device-to-device

struct Row {
  std::string kernel;   // "fused_linear_gelu"
  std::string version;  // "vlmc_v1", "openblas+gelu", "cublaslt_gelu_aux_bias"
  std::string device;   // "cpu" or "cuda:0"
  std::string shape;    // "M=2304 K=1024 N=4096"
  bool valid = false;   // passed validation against the reference
  double max_rel_error = 0;
  Timing timing;
  double gflops = 0;    // 0 when the kernel is memory-bound and FLOPs are not the measure
  double gbps = 0;      // minimal bytes moved / time
  double ceiling = 0;   // the matching ceiling (GFLOP/s or GB/s) from this run
  std::string ceiling_name;
  // False for a version that cannot run on this machine (e.g. cuBLASLt offers
  // no algorithm): shown as not valid, but not counted as a validation failure.
  bool available = true;
};

class Report {
 public:
  explicit Report(std::string title) : title_(std::move(title)) {}
  void add(Row row) { rows_.push_back(std::move(row)); }
  // Aligned table on stdout; fraction of ceiling as a percentage.
  void print() const;
  // The same rows as a JSON document (atomically written).
  void write_json(const std::string& path) const;
  const std::vector<Row>& rows() const { return rows_; }
  // Rows that ran and failed validation.
  int failures() const;

 private:
  std::string title_;
  std::vector<Row> rows_;
};

// For a memory-bound row that passed validation: times run on the host or on
// cuda:0's stream (after one/two warm-ups; none when quick, the validation
// run having warmed it), and fills timing, GB/s of `bytes` (the fewest the
// kernel must move; 0 leaves GB/s empty) and the ceiling.
void time_bandwidth_row(Row& row, const std::function<void()>& run, bool on_gpu, int repeats,
                        double bytes, double ceiling, const std::string& ceiling_name, bool quick = false);

// Parses the flags every benchmark takes: --threads N, --json PATH, --repeats N,
// --quick, --help. Unknown flags are an error that names them. Returns false on --help.
//
// --quick is the smoke test ctest runs: each benchmark takes only its smallest
// (or a scaled-down) shape that still reaches every code path and row kind,
// validates every row as in the full run, times once without a warm-up (the
// validation run already warmed the kernel), and fails when a row fails.
struct CommonFlags {
  int threads = 0;  // 0: vlmc's default
  int repeats = 5;  // 1 under --quick unless --repeats is given
  bool quick = false;
  bool cpu_rows = true;   // false under --cuda-only
  bool cuda_rows = true;  // false under --cpu-only
  std::string json;  // empty: no JSON file
  std::vector<std::string> rest;  // flags the benchmark handles itself

  // Warm-up calls before timing: `full` normally, none under --quick.
  int warmup(int full) const { return quick ? 0 : full; }
  // The devices whose rows run: the CPU unless --cuda-only, cuda:0 when a GPU
  // is visible unless --cpu-only. References computed on the CPU for the
  // validation are computed either way.
  std::vector<Device> devices(bool gpu_visible) const;
};
bool parse_common_flags(int argc, char** argv, const char* usage, CommonFlags& flags);

// The benchmark's exit status once its report is printed: 1 (after naming the
// count on stderr) when a row failed validation, in the full mode as under
// --quick, so that scripts and ctest notice; the table marks such rows "NO".
int exit_status(const Report& report, const CommonFlags& flags, const char* program);

}  // namespace vlmc::bench
