// Honeybee's C-Abstractor (Cha et al., 2024; kakaobrain/honeybee's
// `CAbstractor`), the full form the seed's c-abstractor simplifies: learned
// positions on the patches, a stage of RegNet bottleneck blocks (timm's
// `RegStage` with SiLU and LayerNorm2d), adaptive average pooling to
// target_size², a second stage, then a Linear -> SiLU -> Linear readout.
//
// Every tensor here is a channels-last grid [B, H, W, C]; PyTorch's NCHW
// modules see the same numbers, and the state_dict keeps their names and
// layouts (1x1 conv weights [out, in, 1, 1], depthwise [C, 1, 3, 3]), so a
// Honeybee projector's weights load as they are.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modules/connector.h"
#include "modules/connectors_post_llava.h"
#include "modules/layers.h"

namespace vlmc::nn {

// timm's ConvNormAct with LayerNorm2d: conv (1x1, or 3x3 depthwise), no bias,
// then LayerNorm over the channels (eps 1e-5, timm's LayerNormAct2d) as
// "bn", then SiLU when `act`.
class ConvNormAct : public UnaryModule {
 public:
  enum class Kind { pointwise, depthwise3x3 };
  ConvNormAct(int64_t in_channels, int64_t out_channels, Kind kind, bool act, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<UnaryModule> conv;  // Conv2d(in, out, 1) or DepthwiseConv2d(out, 3)
  std::shared_ptr<LayerNorm> bn;

 private:
  bool act_;
};

// timm's SEModule with SiLU: x * sigmoid(fc2(silu(fc1(mean over H, W)))),
// fc1 / fc2 1x1 convs with biases (channels -> reduced -> channels).
class SqueezeExcite : public UnaryModule {
 public:
  SqueezeExcite(int64_t channels, int64_t reduced, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<Conv2d> fc1, fc2;
};

// timm's RegNet `Bottleneck` as Honeybee builds it (bottle_ratio 1,
// group_size 1: a depthwise 3x3; se_ratio 0.25 of the input channels,
// rounded half to even as Python's round): silu(conv3(se(conv2(conv1(x))))
// + shortcut(x)), the shortcut a 1x1 ConvNormAct without activation when the
// channels change, else x.
class RegBottleneck : public UnaryModule {
 public:
  RegBottleneck(int64_t in_channels, int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<ConvNormAct> conv1, conv2, conv3, downsample;  // downsample: null when in == out
  std::shared_ptr<SqueezeExcite> se;
};

// timm's RegStage: blocks b1 (in -> out), b2 .. b<depth> (out -> out), in turn.
class RegStage : public UnaryModule {
 public:
  RegStage(int64_t depth, int64_t in_channels, int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;

  std::vector<std::shared_ptr<RegBottleneck>> blocks;
};
// reduced channels of a bottleneck's squeeze-excite: round(in * 0.25), half to even.
int64_t squeeze_channels(int64_t in_channels);

// The connector: pos_emb [1, N, Dv] (truncated normal, std 0.02) added to the
// patches, net.0 = RegStage(depth, Dv, hidden), pooling to target_size²,
// net.2 = RegStage(depth, hidden, hidden), readout.0 Linear(hidden, Dllm),
// SiLU, readout.2 Linear(Dllm, Dllm) (Honeybee's mlp_depth 2). N' =
// target_size². Honeybee's defaults: depth 3, hidden = 1024 (= Dv for CLIP
// ViT-L), no prenorm, no eos tokens.
class HoneybeeCAbstractor : public Connector {
 public:
  HoneybeeCAbstractor(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t target_size,
                      int64_t dim_hidden, int64_t depth, Generator& gen = default_generator());
  Tensor forward(const Tensor& visual_features,
                 std::optional<int64_t> target_tokens = std::nullopt) override;

  Tensor pos_emb;
  std::shared_ptr<RegStage> stage1, stage2;
  std::shared_ptr<Sequential> readout;

 private:
  int64_t grid_size_, target_size_;
};

}  // namespace vlmc::nn
