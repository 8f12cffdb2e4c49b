// Top-k token selection at the seed's shapes (B = 4 and 16 images, N = 576
// tokens of width D = 1024, k = 144; --quick: B = 4 only): topk_indices,
// gather_rows forward and backward, and the two forward steps together.
//
// Each kernel writes into a NaN/-1-poisoned buffer first and is validated
// against a plain host reference (a stable sort for the ranking, row loops for
// the copies); only then is it timed, on preallocated buffers. The measure is
// GB/s of the fewest bytes each step must move, against memcpy of the same
// bytes (CPU) or a device-to-device copy (CUDA) measured in the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <vector>

#include "bench/harness.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/topk.h"

using namespace vlmc;

namespace {

// Positions of each row's k best scores, by definition.
std::vector<int64_t> reference_topk(const std::vector<float>& s, int64_t rows, int64_t n, int64_t k) {
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    const float* row = s.data() + r * n;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
    order.resize(static_cast<size_t>(k));
    std::sort(order.begin(), order.end());
    out.insert(out.end(), order.begin(), order.end());
  }
  return out;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::isnan(diff) ? INFINITY : std::sqrt(diff / std::max(norm, 1e-300));
}

struct Step {
  const char* version;
  std::function<void()> run;
  std::function<double()> error;  // after one run: relative error against the reference
  double bytes;
  bool reads_indices = false;  // the gather reads the indices the topk step writes
};

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_topk [--threads N] [--repeats N] [--json PATH] [--quick]", flags))
      return 0;
    if (!flags.rest.empty()) throw std::runtime_error("unknown flag '" + flags.rest[0] + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_topk: %s\n", e.what());
    return 2;
  }
  bench::Report report("top-k token selection: topk_indices + gather_rows");
  const bool gpu = cuda::is_available();
  const double device_ceiling = gpu ? bench::device_copy_gbps(size_t(1) << 30, cuda::stream(0)) : 0;
  const int64_t n = 576, d = 1024, k = 144;

  // --quick: B = 4 reaches the same kernels as B = 16.
  for (const int64_t rows : flags.quick ? std::vector<int64_t>{4} : std::vector<int64_t>{4, 16}) {
    const std::string shape = "B=" + std::to_string(rows) + " N=576 D=1024 k=144";
    Generator gen(11);
    const Tensor scores = sigmoid(Tensor::randn({rows, n}, gen));  // the seed's token_selector output
    const Tensor x = Tensor::randn({rows, n, d}, gen);
    const Tensor g = Tensor::randn({rows, k, d}, gen);
    const std::vector<float> sv = scores.to_vector<float>(), xv = x.to_vector<float>(), gv = g.to_vector<float>();
    const std::vector<int64_t> want_idx = reference_topk(sv, rows, n, k);
    std::vector<double> want_y, want_dx(static_cast<size_t>(rows * n * d), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t src = want_idx[static_cast<size_t>(r * k + j)];
        for (int64_t c = 0; c < d; ++c) {
          want_y.push_back(xv[static_cast<size_t>((r * n + src) * d + c)]);
          want_dx[static_cast<size_t>((r * n + src) * d + c)] = gv[static_cast<size_t>((r * k + j) * d + c)];
        }
      }
    const Tensor want_idx_t = Tensor::from_vector(want_idx, {rows, k});
    const double score_bytes = 4.0 * rows * n + 8.0 * rows * k;
    const double gather_bytes = 2.0 * 4 * rows * k * d + 8.0 * rows * k;
    const double backward_bytes = 4.0 * rows * n * d + 4.0 * rows * k * d + 8.0 * rows * n;
    const double host_ceiling = bench::host_copy_gbps(static_cast<size_t>(gather_bytes / 2));

    for (const Device device : flags.devices(gpu)) {
      const bool on_gpu = device.is_cuda();
      const Tensor sd = scores.to(device), xd = x.to(device), gd = g.to(device), idx_in = want_idx_t.to(device);
      Tensor idx = Tensor::full({rows, k}, -1, DType::i64, device);
      Tensor y = Tensor::full({rows, k, d}, NAN, DType::f32, device);
      Tensor dx = Tensor::full({rows, n, d}, NAN, DType::f32, device);
      Tensor inverse = Tensor::full({rows, n}, -1, DType::i64, device);
      Tensor error = Tensor::zeros({3}, DType::i64, device);
      const int64_t row_bytes = d * 4;
      int64_t host_error[3] = {0, 0, 0};
      // The inverse map the backward reads, built once from the reference indices.
      if (on_gpu) {
#if VLMC_WITH_CUDA
        kernels::cuda::invert_row_indices(inverse.data<int64_t>(), error.data<int64_t>(), idx_in.data<int64_t>(), rows,
                                          n, k, cuda::stream(0));
#endif
      } else {
        kernels::cpu::invert_row_indices(inverse.data<int64_t>(), host_error, idx_in.data<int64_t>(), rows, n, k);
      }
      const auto topk = [&] {
        if (on_gpu) {
#if VLMC_WITH_CUDA
          kernels::cuda::topk_indices<float>(idx.data<int64_t>(), sd.data<float>(), rows, n, k, cuda::stream(0));
#endif
        } else {
          kernels::cpu::topk_indices<float>(idx.data<int64_t>(), sd.data<float>(), rows, n, k);
        }
      };
      const auto gather = [&] {
        if (on_gpu) {
#if VLMC_WITH_CUDA
          kernels::cuda::gather_rows(y.data_ptr(), xd.data_ptr(), idx.data<int64_t>(), rows, n, k, row_bytes,
                                     cuda::stream(0));
#endif
        } else {
          kernels::cpu::gather_rows(y.data_ptr(), xd.data_ptr(), idx.data<int64_t>(), rows, n, k, row_bytes);
        }
      };
      const auto backward = [&] {
        if (on_gpu) {
#if VLMC_WITH_CUDA
          kernels::cuda::gather_rows_backward(dx.data_ptr(), gd.data_ptr(), inverse.data<int64_t>(), rows, n, k,
                                              row_bytes, cuda::stream(0));
#endif
        } else {
          kernels::cpu::gather_rows_backward(dx.data_ptr(), gd.data_ptr(), inverse.data<int64_t>(), rows, n, k,
                                             row_bytes);
        }
      };
      const auto index_error = [&] { return idx.to_vector<int64_t>() == want_idx ? 0.0 : INFINITY; };
      const std::vector<Step> steps = {
          {"vlmc topk_indices", topk, index_error, score_bytes},
          {"vlmc gather forward", gather, [&] { return rel_error(y.to_vector<double>(), want_y); }, gather_bytes,
           true},
          {"vlmc gather backward", backward, [&] { return rel_error(dx.to_vector<double>(), want_dx); }, backward_bytes},
          {"vlmc topk+gather forward",
           [&] {
             topk();
             gather();
           },
           [&] { return std::max(index_error(), rel_error(y.to_vector<double>(), want_y)); },
           score_bytes + gather_bytes},
      };
      for (const Step& step : steps) {
        bench::Row row;
        row.kernel = "topk_gather";
        row.version = step.version;
        row.device = device.str();
        row.shape = shape;
        // Poison the outputs, run once, validate.
        idx.fill_(-1);
        y.fill_(NAN);
        dx.fill_(NAN);
        if (step.reads_indices) topk();
        step.run();
        if (on_gpu) cuda::synchronize(0);
        row.max_rel_error = step.error();
        row.valid = row.max_rel_error < 1e-6;
        if (row.valid)
          bench::time_bandwidth_row(row, step.run, on_gpu, flags.repeats, step.bytes,
                                    on_gpu ? device_ceiling : host_ceiling,
                                    on_gpu ? "device-to-device copy GB/s" : "memcpy GB/s of the gathered bytes",
                                    flags.quick);
        report.add(row);
      }
    }
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_topk");
}
