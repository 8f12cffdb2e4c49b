// Adaptive average pooling of channels-last token grids at the seed's shapes
// (24x24 -> 12x12, width 1024, B = 4 and 16; --quick: B = 4 only), forward
// and backward.
//
// Validates each version against a naive loop in double (outputs poisoned
// with NaN first, so an unwritten element fails), then times the kernel on
// preallocated buffers; the
// measure is GB/s of the fewest bytes the op must move (read the input, write
// the output), against memcpy (CPU) or a device-to-device copy (CUDA).
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/harness.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/threads.h"
#include "kernels/pool.h"

using namespace vlmc;

namespace {

// y[b, oi, oj, c] by the definition of the windows, in double.
std::vector<double> reference(const std::vector<float>& x, const kernels::PoolShape& s) {
  std::vector<double> y(static_cast<size_t>(s.batch * s.out_h * s.out_w * s.channels));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t oi = 0; oi < s.out_h; ++oi)
      for (int64_t oj = 0; oj < s.out_w; ++oj) {
        const int64_t i0 = oi * s.in_h / s.out_h, i1 = ((oi + 1) * s.in_h + s.out_h - 1) / s.out_h;
        const int64_t j0 = oj * s.in_w / s.out_w, j1 = ((oj + 1) * s.in_w + s.out_w - 1) / s.out_w;
        for (int64_t c = 0; c < s.channels; ++c) {
          double acc = 0;
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t j = j0; j < j1; ++j) acc += x[static_cast<size_t>(((b * s.in_h + i) * s.in_w + j) * s.channels + c)];
          y[static_cast<size_t>(((b * s.out_h + oi) * s.out_w + oj) * s.channels + c)] = acc / ((i1 - i0) * (j1 - j0));
        }
      }
  return y;
}

// Backward reference: each input cell receives g/area from every window holding it.
Tensor adaptive_avg_pool2d_reference_backward(const Tensor& gy, const kernels::PoolShape& s) {
  const std::vector<float> g = gy.to_vector<float>();
  std::vector<double> gx(static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels), 0.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t oi = 0; oi < s.out_h; ++oi)
      for (int64_t oj = 0; oj < s.out_w; ++oj) {
        const int64_t i0 = oi * s.in_h / s.out_h, i1 = ((oi + 1) * s.in_h + s.out_h - 1) / s.out_h;
        const int64_t j0 = oj * s.in_w / s.out_w, j1 = ((oj + 1) * s.in_w + s.out_w - 1) / s.out_w;
        const double area = static_cast<double>((i1 - i0) * (j1 - j0));
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j)
            for (int64_t c = 0; c < s.channels; ++c)
              gx[static_cast<size_t>(((b * s.in_h + i) * s.in_w + j) * s.channels + c)] +=
                  g[static_cast<size_t>(((b * s.out_h + oi) * s.out_w + oj) * s.channels + c)] / area;
      }
  return Tensor::from_vector(gx, {s.batch, s.in_h, s.in_w, s.channels});
}

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::isnan(diff) ? INFINITY : std::sqrt(diff / std::max(norm, 1e-300));
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_pool [--threads N] [--repeats N] [--json PATH] [--quick]", flags))
      return 0;
    if (!flags.rest.empty()) throw std::runtime_error("unknown flag '" + flags.rest[0] + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_pool: %s\n", e.what());
    return 2;
  }
  bench::Report report("adaptive_avg_pool2d, channels last");
  const bool gpu = cuda::is_available();
  const double device_ceiling = gpu ? bench::device_copy_gbps(size_t(1) << 30, cuda::stream(0)) : 0;

  // --quick: B = 4 reaches the same kernels as B = 16.
  for (int64_t batch : flags.quick ? std::vector<int64_t>{4} : std::vector<int64_t>{4, 16}) {
    const kernels::PoolShape s{batch, 24, 24, 12, 12, 1024};
    const std::string shape = "B=" + std::to_string(batch) + " 24x24->12x12 C=1024";
    Generator gen(7);
    const Tensor x = Tensor::randn({s.batch, s.in_h, s.in_w, s.channels}, gen);
    const std::vector<double> want = reference(x.to_vector<float>(), s);
    const double bytes = 4.0 * (x.numel() + s.batch * s.out_h * s.out_w * s.channels);
    // A memcpy moving the same number of bytes, so caches help both alike.
    const double host_ceiling = bench::host_copy_gbps(static_cast<size_t>(bytes / 2));

    for (const Device device : flags.devices(gpu)) {
      // Kernels are timed directly on preallocated buffers: no allocation, no graph.
      const Tensor xd = x.to(device);
      Tensor y = Tensor::full({s.batch, s.out_h, s.out_w, s.channels}, NAN, DType::f32, device);
      Tensor gx = Tensor::full(x.shape(), NAN, DType::f32, device);
      const Tensor gy = Tensor::randn(y.shape(), gen).to(device);
      auto forward = [&] {
        if (device.is_cuda()) {
#if VLMC_WITH_CUDA
          kernels::cuda::adaptive_avg_pool2d<float>(y.data<float>(), xd.data<float>(), s, cuda::stream(0));
#endif
        } else {
          kernels::cpu::adaptive_avg_pool2d<float>(y.data<float>(), xd.data<float>(), s);
        }
      };
      auto backward = [&] {
        if (device.is_cuda()) {
#if VLMC_WITH_CUDA
          kernels::cuda::adaptive_avg_pool2d_backward<float>(gx.data<float>(), gy.data<float>(), s, cuda::stream(0));
#endif
        } else {
          kernels::cpu::adaptive_avg_pool2d_backward<float>(gx.data<float>(), gy.data<float>(), s);
        }
      };
      forward();
      if (device.is_cuda()) cuda::synchronize(0);
      for (const bool is_backward : {false, true}) {
        bench::Row row;
        row.kernel = "adaptive_avg_pool2d";
        row.version = is_backward ? "vlmc_v1 backward" : "vlmc_v1 forward";
        row.device = device.str();
        row.shape = shape;
        if (is_backward) {
          // The backward of an average pool over disjoint 2x2 windows spreads g/4.
          backward();
          const Tensor expected = adaptive_avg_pool2d_reference_backward(gy.to(Device::cpu()), s);
          row.max_rel_error = bench::rel_error(gx.to(Device::cpu()), expected);
        } else {
          row.max_rel_error = rel_error(y.to_vector<float>(), want);
        }
        row.valid = row.max_rel_error < 1e-5;
        if (row.valid)
          bench::time_bandwidth_row(row, is_backward ? std::function<void()>(backward) : forward, device.is_cuda(),
                                    flags.repeats, bytes, device.is_cuda() ? device_ceiling : host_ceiling,
                                    device.is_cuda() ? "device-to-device copy GB/s" : "memcpy GB/s of the same bytes",
                                    flags.quick);
        report.add(row);
      }
    }
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_pool");
}
