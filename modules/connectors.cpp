#include "modules/connectors.h"

#include <algorithm>
#include <string>

#include "modules/connector_parts.h"

namespace vlmc::nn {

// ---- LinearProjection -------------------------------------------------------------

LinearProjection::LinearProjection(int64_t dim_vision, int64_t dim_llm, Generator& gen) {
  proj = register_module("proj", std::make_shared<Linear>(dim_vision, dim_llm, true, gen));
}

Tensor LinearProjection::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("LinearProjection", target_tokens);
  check_features("LinearProjection", x, proj->weight.size(1));
  return proj->forward(x);  // [B, N, Dllm]
}

// ---- MLPConnector ------------------------------------------------------------------

MLPConnector::MLPConnector(int64_t dim_vision, int64_t dim_llm, std::optional<int64_t> dim_hidden,
                           Generator& gen) {
  // The seed's `dim_hidden or dim_llm`: 0 means the default too.
  const int64_t hidden = dim_hidden && *dim_hidden != 0 ? *dim_hidden : dim_llm;
  mlp = register_module("mlp", make_mlp(dim_vision, hidden, dim_llm, gen));
}

Tensor MLPConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("MLPConnector", target_tokens);
  check_features("MLPConnector", x, linear_at(*mlp, 0).weight.size(1));
  return mlp_gelu(*mlp, 0, x);  // [B, N, Dllm]
}

// ---- DownsamplingConnector ---------------------------------------------------------

DownsamplingConnector::DownsamplingConnector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size,
                                             int64_t target_size, Generator& gen)
    : grid_size_(grid_size), target_size_(target_size) {
  check_positive("DownsamplingConnector", "grid_size", grid_size);
  check_positive("DownsamplingConnector", "target_size", target_size);
  connector = register_module("connector", std::make_shared<MLPConnector>(dim_vision, dim_llm,
                                                                           std::nullopt, gen));
}

Tensor DownsamplingConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("DownsamplingConnector", target_tokens);
  check_features("DownsamplingConnector", x, linear_at(*connector->mlp, 0).weight.size(1));
  check_grid("DownsamplingConnector", x, grid_size_);
  const int64_t batch = x.size(0), dim = x.size(2);
  // The seed permutes to [B, D, H, W] for nn.AdaptiveAvgPool2d; our kernel pools
  // channels-last directly, which is the same arithmetic without two transposes.
  const Tensor grid = x.reshape({batch, grid_size_, grid_size_, dim});        // [B, g, g, D]
  const Tensor pooled = adaptive_avg_pool2d(grid, target_size_, target_size_);  // [B, t, t, D]
  return connector->forward(pooled.reshape({batch, target_size_ * target_size_, dim}));
}

// ---- CAbstractor ---------------------------------------------------------------------

ConvBnGeluStack::ConvBnGeluStack(int64_t channels, const std::vector<int64_t>& strides, Generator& gen) {
  for (size_t i = 0; i < strides.size(); ++i) {
    convs.push_back(register_module(std::to_string(3 * i),
                                    std::make_shared<Conv2d>(channels, channels, 3, strides[i], 1, true, gen)));
    norms.push_back(register_module(std::to_string(3 * i + 1), std::make_shared<BatchNorm2d>(channels)));
  }
}

Tensor ConvBnGeluStack::forward(const Tensor& grid) {
  Tensor h = grid;
  for (size_t i = 0; i < convs.size(); ++i) h = conv_bn(*convs[i], *norms[i], h, /*apply_gelu=*/true);
  return h;
}

int64_t c_abstractor_stride(int64_t grid_size, int64_t target_size, int64_t layer) {
  return grid_size / (int64_t{1} << (layer + 1)) >= target_size ? 2 : 1;
}

CAbstractor::CAbstractor(int64_t dim_vision, int64_t dim_llm, int64_t grid_size, int64_t target_size,
                         int64_t num_conv_layers, Generator& gen)
    : grid_size_(grid_size), target_size_(target_size) {
  check_positive("CAbstractor", "grid_size", grid_size);
  check_positive("CAbstractor", "target_size", target_size);
  VLMC_CHECK(num_conv_layers >= 0 && num_conv_layers < 62, "CAbstractor: num_conv_layers must be in [0, 62), got ",
             num_conv_layers);
  std::vector<int64_t> strides;
  for (int64_t i = 0; i < num_conv_layers; ++i)
    strides.push_back(c_abstractor_stride(grid_size, target_size, i));
  conv_layers = register_module("conv_layers", std::make_shared<ConvBnGeluStack>(dim_vision, strides, gen));
  proj = register_module("proj", make_mlp(dim_vision, dim_llm, dim_llm, gen));
}

Tensor CAbstractor::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("CAbstractor", target_tokens);
  check_features("CAbstractor", x, linear_at(*proj, 0).weight.size(1));
  check_grid("CAbstractor", x, grid_size_);
  const int64_t batch = x.size(0), dim = x.size(2);
  // Channels last throughout: the seed's permutes to [B, D, H, W] and back
  // are only layout changes.
  const Tensor grid = conv_layers->forward(x.reshape({batch, grid_size_, grid_size_, dim}));
  const Tensor pooled = adaptive_avg_pool2d(grid, target_size_, target_size_);  // [B, t, t, D]
  return mlp_gelu(*proj, 0, pooled.reshape({batch, target_size_ * target_size_, dim}));
}

// ---- DynamicResolutionConnector ------------------------------------------------------

DynamicResolutionConnector::DynamicResolutionConnector(int64_t dim_vision, int64_t dim_llm,
                                                       int64_t max_tokens_, int64_t min_tokens_,
                                                       bool score_weighting_, Generator& gen)
    : max_tokens(max_tokens_), min_tokens(min_tokens_), score_weighting(score_weighting_) {
  check_positive("DynamicResolutionConnector", "max_tokens", max_tokens_);
  connector = register_module("connector", std::make_shared<MLPConnector>(dim_vision, dim_llm,
                                                                           std::nullopt, gen));
  token_selector = register_module("token_selector", std::make_shared<Sequential>());
  token_selector->append(std::make_shared<Linear>(dim_vision, 1, true, gen));
  token_selector->append(std::make_shared<Sigmoid>());
}

Tensor DynamicResolutionConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  check_features("DynamicResolutionConnector", x, linear_at(*token_selector, 0).weight.size(1));
  const int64_t tokens = x.size(1);
  const int64_t target = target_tokens.value_or(std::min(tokens, max_tokens));
  VLMC_CHECK(target > 0, "DynamicResolutionConnector: target_tokens must be positive, got ", target);
  if (tokens <= target) return connector->forward(x);  // few tokens: all pass through

  const Tensor scores = token_selector->forward(x).squeeze(-1);  // [B, N] in (0, 1)
  // The seed's topk(target).indices.sort(): the best tokens in their original order.
  const Tensor indices = topk_indices(scores.detach(), target);  // i64 [B, k]
  Tensor selected = gather_rows(x, indices);                    // [B, k, Dv]
  if (score_weighting) selected = selected * gather_rows(scores.unsqueeze(-1), indices);  // * [B, k, 1]
  return connector->forward(selected);
}

// ---- OCRProjectionConnector ----------------------------------------------------------

Tensor linear_interpolation_matrix(int64_t in_size, int64_t out_size) {
  VLMC_CHECK(in_size > 0 && out_size > 0, "linear_interpolation_matrix: sizes must be positive, got ", in_size,
             " -> ", out_size);
  // PyTorch's upsample_linear1d (align_corners=False), in float as it computes
  // for f32: src = max(scale * (i + 0.5) - 0.5, 0), blending floor(src) and
  // the next index (clamped to the last) by the fraction.
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  // The dense [out, in] blend: its size is checked and it is allocated through
  // the tensor allocator, whose error names the bytes (a token count read from
  // a file can be anything).
  Tensor blend = Tensor::zeros({out_size, in_size});
  float* m = blend.data<float>();
  for (int64_t i = 0; i < out_size; ++i) {
    const float src = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.0f);
    const int64_t i0 = static_cast<int64_t>(src);
    const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
    const float lambda1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
    m[static_cast<size_t>(i * in_size + i0)] += 1.0f - lambda1;
    m[static_cast<size_t>(i * in_size + i1)] += lambda1;
  }
  return blend;
}

OCRProjectionConnector::OCRProjectionConnector(int64_t dim_vision, int64_t dim_llm, int64_t max_visual_tokens,
                                               Generator& gen) {
  check_positive("OCRProjectionConnector", "max_visual_tokens", max_visual_tokens);
  check_positive("OCRProjectionConnector", "dim_vision", dim_vision);
  pos_embed = Tensor::randn({1, max_visual_tokens, dim_vision}, gen) * 0.02;
  register_parameter("pos_embed", &pos_embed);
  connector = register_module("connector", std::make_shared<Sequential>());
  connector->append(std::make_shared<LayerNorm>(dim_vision));
  connector->append(std::make_shared<Linear>(dim_vision, dim_llm, true, gen));
  connector->append(std::make_shared<GELU>());
  connector->append(std::make_shared<Linear>(dim_llm, dim_llm, true, gen));
}

Tensor OCRProjectionConnector::forward(const Tensor& x, std::optional<int64_t> target_tokens) {
  refuse_target("OCRProjectionConnector", target_tokens);
  check_features("OCRProjectionConnector", x, pos_embed.size(2));
  const int64_t tokens = x.size(1), max_tokens = pos_embed.size(1);
  Tensor pos;  // [1, N, Dv]
  if (tokens <= max_tokens) {
    pos = pos_embed.narrow(1, 0, tokens);
  } else {
    // A fixed [N, max] blend applied by matmul, so pos_embed gets its gradient.
    const Tensor blend = linear_interpolation_matrix(max_tokens, tokens).to(pos_embed.device(), pos_embed.dtype());
    pos = matmul(blend, pos_embed.select(0, 0)).unsqueeze(0);
  }
  const Tensor h = connector->operator[](0).forward(x + pos);  // LayerNorm
  return mlp_gelu(*connector, 1, h);
}

}  // namespace vlmc::nn
