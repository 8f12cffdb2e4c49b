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
