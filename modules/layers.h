// Basic layers with PyTorch's parameter names and initialisation.
#pragma once

#include <memory>
#include <vector>

#include "core/ops.h"
#include "core/random.h"
#include "modules/module.h"

namespace vlmc::nn {

// y = x·Wᵀ + b with weight [out, in] and bias [out], initialised as
// nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public UnaryModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true,
         Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }

  Tensor weight;
  Tensor bias;
};

class GELU : public UnaryModule {
 public:
  explicit GELU(GeluApprox approx = GeluApprox::none) : approx_(approx) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx_); }

 private:
  GeluApprox approx_;
};

class SiLU : public UnaryModule {
 public:
  Tensor forward(const Tensor& x) override { return silu(x); }
};

class Sigmoid : public UnaryModule {
 public:
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};

// nn.LayerNorm over the last dim: weight ones, bias zeros, eps 1e-5.
class LayerNorm : public UnaryModule {
 public:
  explicit LayerNorm(int64_t normalized_size, double eps = 1e-5);
  Tensor forward(const Tensor& x) override { return layer_norm(x, {weight.size(0)}, weight, bias, eps_); }

  Tensor weight;
  Tensor bias;

 private:
  double eps_;
};

// nn.Conv2d (square kernel, dilation 1, groups 1) on channels-last grids
// x [B, H, W, Cin] -> [B, Ho, Wo, Cout]. weight [Cout, Cin, k, k] as PyTorch
// stores it, both tensors initialised U(-1/sqrt(Cin*k*k), +...) as nn.Conv2d.
class Conv2d : public UnaryModule {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
         int64_t padding = 0, bool bias = true, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return conv2d(x, weight, bias, stride, padding); }

  Tensor weight;
  Tensor bias;
  int64_t stride, padding;
};

// nn.BatchNorm2d's state: parameters weight (ones) and bias (zeros), buffers
// running_mean (zeros), running_var (ones) and num_batches_tracked (i64,
// shape [] as PyTorch saves it). Not a UnaryModule: it is only ever applied
// fused with the convolution before it (conv_bn below), which is how the
// engine computes batch norm.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);

  Tensor weight;
  Tensor bias;
  Tensor running_mean;
  Tensor running_var;
  Tensor num_batches_tracked;
  double eps, momentum;
};

// bn(conv(x)) (then exact GELU when apply_gelu) on a channels-last grid, in
// bn's training mode: batch statistics and running-stat updates in training,
// running statistics in eval.
Tensor conv_bn(const Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool apply_gelu);

// Children named "0", "1", ... as nn.Sequential names them.
class Sequential : public UnaryModule {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<UnaryModule>> layers);
  void append(std::shared_ptr<UnaryModule> layer);
  Tensor forward(const Tensor& x) override;
  UnaryModule& operator[](size_t i) const { return *layers_.at(i); }
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<UnaryModule>> layers_;
};

}  // namespace vlmc::nn
