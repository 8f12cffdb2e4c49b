#include "modules/connectors.h"

namespace vlmc::nn {
namespace {

// visual_features must be [B, N, dim]; names the connector in the error.
void check_features(const char* connector, const Tensor& x, int64_t dim) {
  VLMC_CHECK(x.dim() == 3, connector, ": visual_features ", shape_str(x.shape()),
             " must be [batch, tokens, dim_vision]");
  VLMC_CHECK(x.size(2) == dim, connector, ": visual_features ", shape_str(x.shape()),
             " have width ", x.size(2), " but dim_vision is ", dim);
}

}  // namespace

LinearProjection::LinearProjection(int64_t dim_vision, int64_t dim_llm, Generator& gen) {
  proj = register_module("proj", std::make_shared<Linear>(dim_vision, dim_llm, true, gen));
}

Tensor LinearProjection::forward(const Tensor& x) {
  check_features("LinearProjection", x, proj->weight.size(1));
  return proj->forward(x);  // [B, N, Dllm]
}

MLPConnector::MLPConnector(int64_t dim_vision, int64_t dim_llm, std::optional<int64_t> dim_hidden,
                           Generator& gen) {
  const int64_t hidden = dim_hidden.value_or(dim_llm);
  mlp = register_module("mlp", std::make_shared<Sequential>());
  mlp->append(std::make_shared<Linear>(dim_vision, hidden, true, gen));
  mlp->append(std::make_shared<GELU>());
  mlp->append(std::make_shared<Linear>(hidden, dim_llm, true, gen));
}

Tensor MLPConnector::forward(const Tensor& x) {
  check_features("MLPConnector", x, static_cast<Linear&>((*mlp)[0]).weight.size(1));
  return mlp->forward(x);  // [B, N, Dllm]
}

DownsamplingConnector::DownsamplingConnector(int64_t dim_vision, int64_t dim_llm, int64_t grid_size,
                                             int64_t target_size, Generator& gen)
    : grid_size_(grid_size), target_size_(target_size) {
  VLMC_CHECK(grid_size > 0 && target_size > 0, "DownsamplingConnector: grid_size ", grid_size,
             " and target_size ", target_size, " must be positive");
  connector = register_module("connector", std::make_shared<MLPConnector>(dim_vision, dim_llm,
                                                                           std::nullopt, gen));
}

Tensor DownsamplingConnector::forward(const Tensor& x) {
  check_features("DownsamplingConnector", x, static_cast<Linear&>((*connector->mlp)[0]).weight.size(1));
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  VLMC_CHECK(tokens == grid_size_ * grid_size_, "DownsamplingConnector: visual_features ",
             shape_str(x.shape()), " hold ", tokens, " tokens but grid_size ", grid_size_, " needs ",
             grid_size_ * grid_size_);
  // The seed permutes to [B, D, H, W] for nn.AdaptiveAvgPool2d; our kernel pools
  // channels-last directly, which is the same arithmetic without two transposes.
  const Tensor grid = x.reshape({batch, grid_size_, grid_size_, dim});        // [B, g, g, D]
  const Tensor pooled = adaptive_avg_pool2d(grid, target_size_, target_size_);  // [B, t, t, D]
  return connector->forward(pooled.reshape({batch, target_size_ * target_size_, dim}));
}

}  // namespace vlmc::nn
