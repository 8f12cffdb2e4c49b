#include "modules/module.h"

#include <set>
#include <sstream>

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

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : named_parameters()) out.emplace(name, t.detach());
  for (auto& [name, t] : named_buffers()) out.emplace(name, t.detach());
  return out;
}

namespace {

// Which stored dtypes a destination of dtype `to` takes: floating tensors take
// any of F32/F16/BF16/F64 (converted), integer buffers take integers.
bool loadable(DType from, DType to) {
  if (is_floating(to)) return is_floating(from);
  return from == DType::i64 || from == DType::i32 || from == DType::u8;
}

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", \"" : "\"") + keys[i] + "\"";
  return out;
}

}  // namespace

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  std::vector<std::pair<std::string, Tensor>> targets = named_parameters();
  for (auto& b : named_buffers()) targets.push_back(std::move(b));

  // Validate everything first, so that a failed load changes nothing.
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> known;
  for (const auto& [name, t] : targets) {
    known.insert(name);
    const auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined()) {
      mismatched.push_back("undefined tensor for " + name);
    } else if (src.shape() != t.shape()) {
      // PyTorch's wording, with our shape notation.
      mismatched.push_back("size mismatch for " + name + ": copying a param with shape " +
                           shape_str(src.shape()) + " from checkpoint, the shape in current model is " +
                           shape_str(t.shape()));
    } else if (!loadable(src.dtype(), t.dtype())) {
      mismatched.push_back("dtype mismatch for " + name + ": cannot load " + dtype_name(src.dtype()) +
                           " into " + dtype_name(t.dtype()));
    }
  }
  for (const auto& [name, t] : state)
    if (!known.count(name)) unexpected.push_back(name);

  const bool key_errors = strict && (!missing.empty() || !unexpected.empty());
  if (key_errors || !mismatched.empty()) {
    std::ostringstream msg;
    msg << "load_state_dict: Error(s) in loading state_dict:";
    if (strict && !missing.empty()) msg << "\n\tMissing key(s) in state_dict: " << quoted_list(missing) << ".";
    if (strict && !unexpected.empty())
      msg << "\n\tUnexpected key(s) in state_dict: " << quoted_list(unexpected) << ".";
    for (const std::string& m : mismatched) msg << "\n\t" << m << ".";
    throw Error(msg.str());
  }

  // Copy into the existing storage: parameters stay the same leaves, on
  // their own device and in their own dtype (copy_ converts both).
  NoGradGuard no_grad;
  for (auto& [name, t] : targets) {
    const auto it = state.find(name);
    if (it != state.end()) t.copy_(it->second);
  }
}

void Module::register_parameter(std::string name, Tensor* tensor) {
  tensor->set_requires_grad(true);
  parameters_.emplace_back(std::move(name), tensor);
}

void Module::register_buffer(std::string name, Tensor* tensor) { buffers_.emplace_back(std::move(name), tensor); }

}  // namespace vlmc::nn
