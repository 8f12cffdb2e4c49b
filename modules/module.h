// Module: named parameters, buffers and children, with the names PyTorch's
// state_dict() gives ("mlp.0.weight"), train/eval mode, freezing, parameter
// counts and moving to a device.
//
// Modules are held by shared_ptr and never copied: they register pointers to
// their own Tensor members, so to(device) can swap what those members hold.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace vlmc::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Depth first, in registration order, prefixed with child names.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;  // sum of numel over parameters, as the seed counts them

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Freezes (false) or unfreezes (true) every parameter of this module.
  void set_requires_grad(bool requires_grad);
  void zero_grad();
  // Moves (and converts) every parameter and buffer; parameters stay leaves.
  void to(Device device);

  // Parameters and buffers by their PyTorch state_dict() names (detached).
  std::map<std::string, Tensor> state_dict() const;
  // Copies values in by name, converting F32/F16/BF16/F64 to each tensor's
  // dtype and device. strict: every missing, unexpected or mis-shaped key is
  // listed in one vlmc::Error, as PyTorch's load_state_dict does, and nothing
  // is changed unless all keys match.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

 protected:
  void register_parameter(std::string name, Tensor* tensor);
  void register_buffer(std::string name, Tensor* tensor);
  template <typename M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    children_.emplace_back(std::move(name), module);
    return module;
  }

 private:
  void collect(const std::string& prefix, bool buffers,
               std::vector<std::pair<std::string, Tensor>>& out) const;

  std::vector<std::pair<std::string, Tensor*>> parameters_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A module with one input and one output: what Sequential chains.
class UnaryModule : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

}  // namespace vlmc::nn
