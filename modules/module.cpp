#include "modules/module.h"

#include "core/autograd.h"

namespace vlmc::nn {

void Module::collect(const std::string& prefix, bool buffers,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, tensor] : buffers ? buffers_ : parameters_) out.emplace_back(prefix + name, *tensor);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", buffers, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", false, out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::set_requires_grad(bool requires_grad) {
  for (auto& [name, t] : parameters_) t->set_requires_grad(requires_grad);
  for (auto& [name, child] : children_) child->set_requires_grad(requires_grad);
}

void Module::zero_grad() {
  for (auto& [name, t] : parameters_) t->set_grad(Tensor());
  for (auto& [name, child] : children_) child->zero_grad();
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  for (auto& [name, t] : parameters_) {
    if (t->device() == device) continue;
    const bool requires_grad = t->requires_grad();
    *t = t->detach().to(device);
    t->set_requires_grad(requires_grad);
  }
  for (auto& [name, t] : buffers_)
    if (t->device() != device) *t = t->to(device);
  for (auto& [name, child] : children_) child->to(device);
}

void Module::register_parameter(std::string name, Tensor* tensor) {
  tensor->set_requires_grad(true);
  parameters_.emplace_back(std::move(name), tensor);
}

void Module::register_buffer(std::string name, Tensor* tensor) { buffers_.emplace_back(std::move(name), tensor); }

}  // namespace vlmc::nn
