// Vision-language connectors of the seed (sections 5.2.1-5.2.7), with its
// constructor defaults, its state_dict names and its forward in both modes.
// Each maps visual features [B, N, Dv] to visual tokens [B, N', Dllm]; all are
// Connectors (modules/connector.h), so make_connector builds them by name.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "modules/connector.h"
#include "modules/layers.h"

namespace vlmc::nn {

// LLaVA v1: one linear layer. state_dict: proj.weight, proj.bias.
class LinearProjection : public Connector {
 public:
  explicit LinearProjection(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                            Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<Linear> proj;
};

// LLaVA-1.5: Linear -> GELU -> Linear (the first two fused). state_dict:
// mlp.0.*, mlp.2.*.
class MLPConnector : public Connector {
 public:
  explicit MLPConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                        std::optional<int64_t> dim_hidden = std::nullopt,
                        Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<Sequential> mlp;
};

// 2D adaptive average pooling of the grid_size x grid_size patch grid down to
// target_size x target_size, then an MLPConnector. state_dict: connector.mlp.*.
class DownsamplingConnector : public Connector {
 public:
  explicit DownsamplingConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                                 int64_t grid_size = 24, int64_t target_size = 12,
                                 Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<MLPConnector> connector;

 private:
  int64_t grid_size_, target_size_;
};

// The seed's conv_layers, an nn.Sequential of (Conv2d, BatchNorm2d, GELU) per
// layer: children "0", "1", "3", "4", ... (the GELUs hold nothing). Each
// triple runs as one fused conv2d_batchnorm on the channels-last grid.
class ConvBnGeluStack : public Module {
 public:
  ConvBnGeluStack(int64_t channels, const std::vector<int64_t>& strides, Generator& gen);
  Tensor forward(const Tensor& grid);  // [B, H, W, C] -> [B, H', W', C]

  std::vector<std::shared_ptr<Conv2d>> convs;
  std::vector<std::shared_ptr<BatchNorm2d>> norms;
};

// The seed's C-Abstractor stride for conv layer `layer`: 2 while
// grid_size // 2^(layer+1) is still at least target_size, then 1.
int64_t c_abstractor_stride(int64_t grid_size, int64_t target_size, int64_t layer);

// Honeybee's C-Abstractor as the seed writes it: num_conv_layers 3x3 convs
// (padding 1, stride 2 while grid_size // 2^(i+1) >= target_size, else 1),
// each with BatchNorm2d and GELU; adaptive average pooling to target_size²;
// then Linear(Dv, Dllm) -> GELU -> Linear(Dllm, Dllm). state_dict:
// conv_layers.{3i}.weight/bias, conv_layers.{3i+1}.weight/bias/running_mean/
// running_var/num_batches_tracked, proj.0.*, proj.2.*.
class CAbstractor : public Connector {
 public:
  explicit CAbstractor(int64_t dim_vision = 1024, int64_t dim_llm = 4096, int64_t grid_size = 24,
                       int64_t target_size = 12, int64_t num_conv_layers = 2,
                       Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<ConvBnGeluStack> conv_layers;
  std::shared_ptr<Sequential> proj;

 private:
  int64_t grid_size_, target_size_;
};

// Keeps the target_tokens best-scored tokens (a sigmoid of a linear score),
// in their original order, then an MLPConnector. target_tokens defaults to
// min(N, max_tokens); with N <= target_tokens every token passes through.
// min_tokens is stored as the seed stores it (its forward never reads it).
// score_weighting (not the seed's): each kept token is multiplied by its
// score, so the scorer receives a gradient. state_dict: connector.mlp.*,
// token_selector.0.*.
class DynamicResolutionConnector : public Connector {
 public:
  explicit DynamicResolutionConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                                      int64_t max_tokens = 576, int64_t min_tokens = 64,
                                      bool score_weighting = false,
                                      Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  std::shared_ptr<MLPConnector> connector;
  std::shared_ptr<Sequential> token_selector;
  int64_t max_tokens, min_tokens;
  bool score_weighting;
};

// Adds learned positions pos_embed [1, max_visual_tokens, Dv] (randn * 0.02)
// to the features — the first N when N <= max_visual_tokens, else linearly
// interpolated to N as F.interpolate(mode='linear', align_corners=False) —
// then LayerNorm -> Linear -> GELU -> Linear. state_dict: pos_embed,
// connector.0.* (LayerNorm), connector.1.*, connector.3.*.
class OCRProjectionConnector : public Connector {
 public:
  explicit OCRProjectionConnector(int64_t dim_vision = 1024, int64_t dim_llm = 4096,
                                  int64_t max_visual_tokens = 1024,
                                  Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  Tensor pos_embed;
  std::shared_ptr<Sequential> connector;
};

// The [out_size, in_size] matrix M with M·v = F.interpolate(v, out_size,
// mode='linear', align_corners=False) along v's first dim (f32, CPU).
Tensor linear_interpolation_matrix(int64_t in_size, int64_t out_size);

}  // namespace vlmc::nn
