// Vision-language connectors of the seed (section 5.2), with its constructor
// defaults and state_dict names. Each maps visual features [B, N, Dv] to
// visual tokens [B, N', Dllm].
#pragma once

#include <memory>
#include <optional>

#include "modules/layers.h"

namespace vlmc::nn {

// LLaVA v1: one linear layer. state_dict: proj.weight, proj.bias.
class LinearProjection : public UnaryModule {
 public:
  explicit LinearProjection(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                            Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features) override;

  std::shared_ptr<Linear> proj;
};

// LLaVA-1.5: Linear -> GELU -> Linear. state_dict: mlp.0.*, mlp.2.*.
class MLPConnector : public UnaryModule {
 public:
  explicit MLPConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                        std::optional<int64_t> dim_hidden = std::nullopt,
                        Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features) override;

  std::shared_ptr<Sequential> mlp;
};

// 2D adaptive average pooling of the grid_size x grid_size patch grid down to
// target_size x target_size, then an MLPConnector. state_dict: connector.mlp.*.
class DownsamplingConnector : public UnaryModule {
 public:
  explicit DownsamplingConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                                 int64_t grid_size = 24, int64_t target_size = 12,
                                 Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features) override;

  std::shared_ptr<MLPConnector> connector;

 private:
  int64_t grid_size_, target_size_;
};

}  // namespace vlmc::nn
