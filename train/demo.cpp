#include "train/demo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <locale>
#include <sstream>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/text.h"
#include "core/threads.h"
#include "modules/connectors.h"

namespace vlmc::cli {
namespace {

std::string torch_shape(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Median wall time of `repeats` calls after one warm-up, in milliseconds.
double time_runs(const std::function<Tensor()>& forward, int repeats, Device device, Tensor& output) {
  output = forward();  // warm-up: first-touch page faults, allocator caches
  if (device.is_cuda()) cuda::synchronize(device.index);
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    output = forward();
    if (device.is_cuda()) cuda::synchronize(device.index);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int run_demo(const DemoOptions& o) {
  const Device device = Device::parse(o.device);
  Generator gen(o.seed);
  const int64_t patches = o.grid_size * o.grid_size;
  const Tensor visual_features = Tensor::randn({o.batch, patches, o.dim_vision}, gen, DType::f32, device);

  nn::LinearProjection linear_proj(o.dim_vision, o.dim_llm, gen);
  nn::MLPConnector mlp_conn(o.dim_vision, o.dim_llm, std::nullopt, gen);
  nn::DownsamplingConnector down_conn(o.dim_vision, o.dim_llm, o.grid_size, o.target_size, gen);
  struct Row {
    const char* name;
    nn::Connector* module;
  };
  const std::vector<Row> rows = {{"Linear Projection", &linear_proj},
                                 {"MLP Connector", &mlp_conn},
                                 {"Downsampling Connector", &down_conn}};

  std::printf("============================================================\n");
  std::printf("Connector comparison\n");
  std::printf("============================================================\n");
  const char* mode = o.backward ? "forward+backward" : "forward";
  std::printf("device %s, %d threads, %s time = median of %d after one warm-up\n",
              device.str().c_str(), num_threads(), mode, o.repeats);
  for (const Row& row : rows) {
    row.module->to(device);
    Tensor output;
    const double ms = time_runs(
        [&] {
          if (!o.backward) {
            NoGradGuard no_grad;
            return row.module->forward(visual_features);
          }
          row.module->zero_grad();
          Tensor out = row.module->forward(visual_features);
          sum(out).backward();
          return out;
        },
        o.repeats, device, output);
    std::printf("\n%s:\n", row.name);
    std::printf("  parameters:    %s\n", with_commas(row.module->num_parameters()).c_str());
    std::printf("  input shape:   %s\n", torch_shape(visual_features.shape()).c_str());
    std::printf("  output shape:  %s\n", torch_shape(output.shape()).c_str());
    std::printf("  %s time:  %.2f ms\n", mode, ms);
    std::printf("  output tokens: %lld\n", static_cast<long long>(output.size(1)));
  }
  return 0;
}

}  // namespace vlmc::cli
