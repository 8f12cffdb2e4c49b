#include "modules/layers.h"

#include <cmath>

namespace vlmc::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator& gen) {
  VLMC_CHECK(in_features > 0 && out_features > 0, "Linear: features must be positive, got in ",
             in_features, " out ", out_features);
  // kaiming_uniform_(a=sqrt(5)) reduces to this bound, as does the bias init.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = Tensor::uniform({out_features, in_features}, -bound, bound, gen);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::uniform({out_features}, -bound, bound, gen);
    register_parameter("bias", &bias);
  }
}

Sequential::Sequential(std::vector<std::shared_ptr<UnaryModule>> layers) {
  for (auto& l : layers) append(std::move(l));
}

void Sequential::append(std::shared_ptr<UnaryModule> layer) {
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

}  // namespace vlmc::nn
