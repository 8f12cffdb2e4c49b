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

LayerNorm::LayerNorm(int64_t normalized_size, double eps) : eps_(eps) {
  VLMC_CHECK(normalized_size > 0, "LayerNorm: normalized size must be positive, got ", normalized_size);
  weight = Tensor::ones({normalized_size});
  bias = Tensor::zeros({normalized_size});
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride_,
               int64_t padding_, bool with_bias, Generator& gen)
    : stride(stride_), padding(padding_) {
  VLMC_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0 && stride_ > 0 && padding_ >= 0,
             "Conv2d: invalid in_channels ", in_channels, " out_channels ", out_channels, " kernel_size ",
             kernel_size, " stride ", stride_, " padding ", padding_);
  // nn.Conv2d's kaiming_uniform_(a=sqrt(5)) and bias init share this bound.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel_size * kernel_size));
  weight = Tensor::uniform({out_channels, in_channels, kernel_size, kernel_size}, -bound, bound, gen);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::uniform({out_channels}, -bound, bound, gen);
    register_parameter("bias", &bias);
  }
}

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps_, double momentum_)
    : eps(eps_), momentum(momentum_) {
  VLMC_CHECK(num_features > 0, "BatchNorm2d: num_features must be positive, got ", num_features);
  weight = Tensor::ones({num_features});
  bias = Tensor::zeros({num_features});
  running_mean = Tensor::zeros({num_features});
  running_var = Tensor::ones({num_features});
  num_batches_tracked = Tensor::zeros({}, DType::i64);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
  register_buffer("num_batches_tracked", &num_batches_tracked);
}

Tensor conv_bn(const Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool apply_gelu) {
  return conv2d_batchnorm(x, conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                          bn.num_batches_tracked, bn.is_training(), bn.momentum, bn.eps, apply_gelu,
                          conv.stride, conv.padding);
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
