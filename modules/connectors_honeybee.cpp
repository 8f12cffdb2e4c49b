#include "modules/connectors_honeybee.h"

#include <cmath>

#include "core/error.h"
#include "modules/connector_parts.h"

namespace vlmc::nn {

// ---- RegNet blocks (timm) ----------------------------------------------------------------

ConvNormAct::ConvNormAct(int64_t in_channels, int64_t out_channels, Kind kind, bool act, Generator& gen)
    : act_(act) {
  if (kind == Kind::pointwise) {
    conv = register_module("conv", std::make_shared<Conv2d>(in_channels, out_channels, 1, 1, 0, false, gen));
  } else {
    VLMC_CHECK(in_channels == out_channels, "ConvNormAct: a depthwise conv keeps its ", in_channels,
               " channels, not ", out_channels);
    conv = register_module("conv", std::make_shared<DepthwiseConv2d>(out_channels, 3, gen, /*bias=*/false));
  }
  // timm turns LayerNorm2d + SiLU into its LayerNormAct2d, whose eps is 1e-5
  // (LayerNorm2d's own 1e-6 never applies inside a ConvNormAct).
  bn = register_module("bn", std::make_shared<LayerNorm>(out_channels, 1e-5));
}

Tensor ConvNormAct::forward(const Tensor& x) {
  const Tensor y = bn->forward(conv->forward(x));  // [B, H, W, out]
  return act_ ? silu(y) : y;
}

SqueezeExcite::SqueezeExcite(int64_t channels, int64_t reduced, Generator& gen) {
  fc1 = register_module("fc1", std::make_shared<Conv2d>(channels, reduced, 1, 1, 0, true, gen));
  fc2 = register_module("fc2", std::make_shared<Conv2d>(reduced, channels, 1, 1, 0, true, gen));
}

Tensor SqueezeExcite::forward(const Tensor& x) {
  const Tensor squeezed = mean(x, {1, 2}, /*keepdim=*/true);           // [B, 1, 1, C]
  const Tensor gate = sigmoid(fc2->forward(silu(fc1->forward(squeezed))));  // [B, 1, 1, C]
  return x * gate;
}

int64_t squeeze_channels(int64_t in_channels) {
  // Python's round() of in * 0.25: halves go to the even neighbour, as
  // nearbyint does in the default rounding mode.
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(in_channels) * 0.25));
}

RegBottleneck::RegBottleneck(int64_t in_channels, int64_t out_channels, Generator& gen) {
  using Kind = ConvNormAct::Kind;
  conv1 = register_module("conv1", std::make_shared<ConvNormAct>(in_channels, out_channels, Kind::pointwise, true, gen));
  conv2 = register_module("conv2",
                          std::make_shared<ConvNormAct>(out_channels, out_channels, Kind::depthwise3x3, true, gen));
  const int64_t reduced = squeeze_channels(in_channels);
  VLMC_CHECK(reduced > 0, "RegBottleneck: ", in_channels, " input channels leave no squeeze-excite channel (",
             in_channels, " x 0.25 rounds to 0)");
  se = register_module("se", std::make_shared<SqueezeExcite>(out_channels, reduced, gen));
  conv3 = register_module("conv3",
                          std::make_shared<ConvNormAct>(out_channels, out_channels, Kind::pointwise, false, gen));
  if (in_channels != out_channels)
    downsample = register_module("downsample", std::make_shared<ConvNormAct>(in_channels, out_channels,
                                                                            Kind::pointwise, false, gen));
}

Tensor RegBottleneck::forward(const Tensor& x) {
  const Tensor body = conv3->forward(se->forward(conv2->forward(conv1->forward(x))));  // [B, H, W, out]
  return silu(body + (downsample ? downsample->forward(x) : x));
}

RegStage::RegStage(int64_t depth, int64_t in_channels, int64_t out_channels, Generator& gen) {
  check_positive("RegStage", "depth", depth);
  for (int64_t i = 0; i < depth; ++i)
    blocks.push_back(register_module("b" + std::to_string(i + 1),
                                     std::make_shared<RegBottleneck>(i == 0 ? in_channels : out_channels,
                                                                     out_channels, gen)));
}

Tensor RegStage::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& block : blocks) h = block->forward(h);
  return h;
}

// ---- the connector ------------------------------------------------------------------------

HoneybeeCAbstractor::HoneybeeCAbstractor(int64_t dim_vision, int64_t dim_llm, int64_t grid_size,
                                         int64_t target_size, int64_t dim_hidden, int64_t depth, Generator& gen)
    : grid_size_(grid_size), target_size_(target_size) {
  check_positive("HoneybeeCAbstractor", "grid_size", grid_size);
  check_positive("HoneybeeCAbstractor", "target_size", target_size);
  check_positive("HoneybeeCAbstractor", "dim_hidden", dim_hidden);
  // trunc_normal_(std=0.02) cuts at ±2, a hundred standard deviations out: a
  // plain normal draws the same distribution.
  pos_emb = Tensor::randn({1, grid_size * grid_size, dim_vision}, gen) * 0.02;
  register_parameter("pos_emb", &pos_emb);
  // Honeybee's nn.Sequential(s1, sampler, s2): the pooling has no state, so
  // the container holds children "0" and "2" only.
  auto net = register_module("net", std::make_shared<Container>());
  stage1 = net->register_module("0", std::make_shared<RegStage>(depth, dim_vision, dim_hidden, gen));
  stage2 = net->register_module("2", std::make_shared<RegStage>(depth, dim_hidden, dim_hidden, gen));
  readout = register_module("readout", std::make_shared<Sequential>());
  readout->append(std::make_shared<Linear>(dim_hidden, dim_llm, true, gen));
  readout->append(std::make_shared<SiLU>());
  readout->append(std::make_shared<Linear>(dim_llm, dim_llm, true, gen));
}

Tensor HoneybeeCAbstractor::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("HoneybeeCAbstractor", target_tokens);
  check_features("HoneybeeCAbstractor", x, pos_emb.size(2));
  check_grid("HoneybeeCAbstractor", x, grid_size_);
  const int64_t batch = x.size(0), dim = x.size(2);
  const Tensor grid = (x + pos_emb).reshape({batch, grid_size_, grid_size_, dim});        // [B, g, g, Dv]
  const Tensor pooled = adaptive_avg_pool2d(stage1->forward(grid), target_size_, target_size_);  // [B, t, t, H]
  const Tensor h = stage2->forward(pooled);
  return readout->forward(h.reshape({batch, target_size_ * target_size_, h.size(3)}));  // [B, t², Dllm]
}

}  // namespace vlmc::nn
