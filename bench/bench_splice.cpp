// The image-token splice at LLaVA-1.5's sizes: B = 4 and 16 samples of 64
// text tokens with one <image> each (after a 5-token prefix), Nv = 576 (and
// 144, a pooled connector) visual tokens, width D = 4096, a 32000-row table.
//
// Steps: the host plan (ids -> index tables; time only), the forward row copy,
// the visual tokens' gradient (a gather) and the table's gradient (dense
// [V, D]: zeroing it dominates). Each step writes into a NaN-poisoned buffer,
// is validated against a plain host loop, then timed on preallocated buffers.
// The measure is GB/s of the rows moved, against memcpy of the same bytes
// (CPU) or a device-to-device copy (CUDA) measured in the same run.
//
// --quick scales the problem down to B = 4, Nv = 144, D = 256 and a 2048-row
// table (the full table's dense gradient alone is 512 MiB, its f64 reference
// 1 GiB): the same steps and kernels, small enough for a smoke test.
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/harness.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/splice.h"

using namespace vlmc;

namespace {

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
  std::function<double()> error;
  double bytes;  // 0: host bookkeeping, timed only
};

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_splice [--threads N] [--repeats N] [--json PATH] [--quick]", flags))
      return 0;
    if (!flags.rest.empty()) throw std::runtime_error("unknown flag '" + flags.rest[0] + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_splice: %s\n", e.what());
    return 2;
  }
  bench::Report report("image-token splice (LLaVA prepare_inputs)");
  const bool gpu = cuda::is_available();
  const double device_ceiling = gpu ? bench::device_copy_gbps(size_t(1) << 30, cuda::stream(0)) : 0;
  const int64_t text_len = 64, vocab = flags.quick ? 2048 : 32000, width = flags.quick ? 256 : 4096;
  Generator gen(3);
  const Tensor table = Tensor::randn({vocab, width}, gen);
  const std::vector<float> table_v = table.to_vector<float>();

  const std::vector<int64_t> image_token_counts =
      flags.quick ? std::vector<int64_t>{144} : std::vector<int64_t>{576, 144};
  const std::vector<int64_t> batches = flags.quick ? std::vector<int64_t>{4} : std::vector<int64_t>{4, 16};
  for (const int64_t image_tokens : image_token_counts) {
    for (const int64_t batch : batches) {
      // The full run's shapes all have the 32000-row table; a quick run names its smaller one.
      const std::string shape = "B=" + std::to_string(batch) + " T=" + std::to_string(text_len) + " Nv=" +
                                std::to_string(image_tokens) + " D=" + std::to_string(width) +
                                (flags.quick ? " V=" + std::to_string(vocab) : "");
      // A shared 20-token system prompt (ids repeat across samples), then text
      // that differs per sample; the <image> right after the first 5 tokens.
      std::vector<int64_t> ids(static_cast<size_t>(batch * text_len));
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t t = 0; t < text_len; ++t)
          ids[static_cast<size_t>(b * text_len + t)] = (t * 7919 + 13 + (t < 20 ? 0 : b * 104729)) % vocab;
      for (int64_t b = 0; b < batch; ++b) ids[static_cast<size_t>(b * text_len + 5)] = -200;
      const Tensor visual = Tensor::randn({batch, image_tokens, width}, gen);
      const std::vector<float> visual_v = visual.to_vector<float>();

      kernels::SpliceRequest q;
      q.input_ids = ids.data();
      q.batch = batch;
      q.text_len = text_len;
      q.vocab = vocab;
      q.num_images = batch;
      q.image_tokens = image_tokens;
      kernels::SplicePlan plan;
      kernels::plan_splice(plan, q);
      const int64_t rows = batch * plan.length, visual_rows = batch * image_tokens;
      const int64_t groups = static_cast<int64_t>(plan.table_ids.size()), row_bytes = width * 4;
      const Tensor g = Tensor::randn({batch, plan.length, width}, gen);
      const std::vector<float> g_v = g.to_vector<float>();

      // Host references: the output rows, the visual gradient, the table gradient.
      std::vector<double> want_out(static_cast<size_t>(rows * width), 0.0), want_dvis(static_cast<size_t>(visual_rows * width));
      std::vector<double> want_dtable(static_cast<size_t>(vocab * width), 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t s = plan.row_source[static_cast<size_t>(r)];
        for (int64_t c = 0; c < width; ++c) {
          const size_t o = static_cast<size_t>(r * width + c);
          if (s >= vocab) {
            want_out[o] = visual_v[static_cast<size_t>((s - vocab) * width + c)];
            want_dvis[static_cast<size_t>((s - vocab) * width + c)] = g_v[o];
          } else if (s >= 0) {
            want_out[o] = table_v[static_cast<size_t>(s * width + c)];
            want_dtable[static_cast<size_t>(s * width + c)] += g_v[o];
          }
        }
      }
      const double text_rows = static_cast<double>(plan.group_rows.size());
      const double forward_bytes = 4.0 * width * (rows + text_rows + visual_rows) + 8.0 * rows;
      const double visual_bytes = 4.0 * width * 2 * visual_rows + 8.0 * visual_rows;
      const double table_bytes = 4.0 * width * (vocab + text_rows);
      const double host_ceiling = bench::host_copy_gbps(static_cast<size_t>(forward_bytes / 2));

      for (const Device device : flags.devices(gpu)) {
        const bool on_gpu = device.is_cuda();
        const auto up = [&](const std::vector<int64_t>& v) { return Tensor::from_vector(v, {int64_t(v.size())}).to(device); };
        const Tensor table_d = table.to(device), visual_d = visual.to(device), g_d = g.to(device);
        const Tensor source = up(plan.row_source), dest = up(plan.visual_dest), tids = up(plan.table_ids);
        const Tensor offsets = up(plan.group_offsets), group_rows = up(plan.group_rows);
        Tensor out = Tensor::full({batch, plan.length, width}, NAN, DType::f32, device);
        Tensor dvis = Tensor::full(visual.shape(), NAN, DType::f32, device);
        Tensor dtable = Tensor::full(table.shape(), NAN, DType::f32, device);
        const auto forward = [&] {
          if (on_gpu) {
#if VLMC_WITH_CUDA
            kernels::cuda::splice_rows(out.data_ptr(), table_d.data_ptr(), visual_d.data_ptr(), source.data<int64_t>(),
                                       rows, vocab, row_bytes, cuda::stream(0));
#endif
          } else {
            kernels::cpu::splice_rows(out.data_ptr(), table_d.data_ptr(), visual_d.data_ptr(), source.data<int64_t>(),
                                      rows, vocab, row_bytes);
          }
        };
        const auto visual_backward = [&] {
          if (on_gpu) {
#if VLMC_WITH_CUDA
            kernels::cuda::rows_from_map(dvis.data_ptr(), g_d.data_ptr(), dest.data<int64_t>(), visual_rows, row_bytes,
                                         cuda::stream(0));
#endif
          } else {
            kernels::cpu::rows_from_map(dvis.data_ptr(), g_d.data_ptr(), dest.data<int64_t>(), visual_rows, row_bytes);
          }
        };
        const auto table_backward = [&] {
          if (on_gpu) {
#if VLMC_WITH_CUDA
            kernels::cuda::splice_table_backward<float>(dtable.data<float>(), g_d.data<float>(), tids.data<int64_t>(),
                                                        offsets.data<int64_t>(), group_rows.data<int64_t>(), groups,
                                                        vocab, width, cuda::stream(0));
#endif
          } else {
            kernels::cpu::splice_table_backward<float>(dtable.data<float>(), g_d.data<float>(), tids.data<int64_t>(),
                                                       offsets.data<int64_t>(), group_rows.data<int64_t>(), groups,
                                                       vocab, width);
          }
        };
        std::vector<Step> steps = {
            {"vlmc splice forward", forward, [&] { return rel_error(out.to_vector<double>(), want_out); }, forward_bytes},
            {"vlmc visual backward", visual_backward, [&] { return rel_error(dvis.to_vector<double>(), want_dvis); },
             visual_bytes},
            {"vlmc table backward (dense)", table_backward,
             [&] { return rel_error(dtable.to_vector<double>(), want_dtable); }, table_bytes},
        };
        kernels::SplicePlan scratch;  // outlives the steps: the plan step writes into it
        if (!on_gpu) {
          steps.insert(steps.begin(), Step{"plan (host)", [&] { kernels::plan_splice(scratch, q); },
                                           [] { return 0.0; }, 0.0});
        }
        for (const Step& step : steps) {
          bench::Row row;
          row.kernel = "splice";
          row.version = step.version;
          row.device = device.str();
          row.shape = shape;
          step.run();
          if (on_gpu) cuda::synchronize(0);
          row.max_rel_error = step.error();
          row.valid = row.max_rel_error < 1e-6;
          if (row.valid)
            bench::time_bandwidth_row(row, step.run, on_gpu, flags.repeats, step.bytes,
                                      on_gpu ? device_ceiling : host_ceiling,
                                      on_gpu ? "device-to-device copy GB/s" : "memcpy GB/s of the forward's bytes",
                                      flags.quick);
          report.add(row);
        }
      }
    }
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_splice");
}
