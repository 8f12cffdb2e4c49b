// `vlmc demo`: the seed's compare_connectors() — parameter counts, shapes and
// forward time of the Linear, MLP and Downsampling connectors at LLaVA-1.5's
// sizes (ViT-L/14@336: 576 patches of width 1024, into a 4096-wide LLM).
#pragma once

#include <cstdint>
#include <string>

namespace vlmc::cli {

struct DemoOptions {
  int64_t batch = 4;
  int64_t grid_size = 24;  // 24 x 24 = 576 patches
  int64_t target_size = 12;
  int64_t dim_vision = 1024;
  int64_t dim_llm = 4096;
  int repeats = 3;  // timed runs after one warm-up; the median is printed
  bool backward = false;  // time forward + backward of sum(output) instead of forward alone
  std::string device = "cpu";
  uint64_t seed = 42;
};

int run_demo(const DemoOptions& options);

}  // namespace vlmc::cli
