#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace vlmc {
namespace {

thread_local bool g_grad_enabled = true;
// The innermost GradReadyGuard's callback, or null: one pointer test per leaf
// when no guard is set.
thread_local const GradReadyFn* g_grad_ready = nullptr;

// A recorded op: its backward is a closure.
struct FunctionNode final : Node {
  BackwardFn fn;
  GradMask needs;

  std::vector<Tensor> apply(const Tensor& grad_output) override {
    VLMC_CHECK(fn != nullptr, "backward: the graph through '", name,
               "' was freed by an earlier backward(); call backward(grad, /*retain_graph=*/true) "
               "the first time to go through it twice");
    return fn(grad_output, needs);
  }
  void release() override { fn = nullptr; }
};

// Whether g is the only handle on a storage that holds exactly its elements,
// contiguous: then no other tensor can see or change that memory.
bool owns_its_memory(const Tensor& g) {
  const std::shared_ptr<TensorImpl>& impl = g.impl_ptr();
  return impl.use_count() == 1 && impl->storage && impl->storage.use_count() == 1 && impl->offset == 0 &&
         !impl->grad_fn && g.is_contiguous() && g.nbytes() == impl->storage->nbytes();
}

// Sums a second gradient into the one pending for a node (a tensor used by
// several ops: a residual stream, the input of q, k and v). In place when the
// pending gradient owns its memory and both are f32 or f64 of one device:
// nothing else can see the change, and the sum has the same bits as add's
// (one rounding of a + b either way); this saves a fresh [tokens, width]
// buffer per extra use. Otherwise a new tensor, which leaves a gradient that
// another edge or a closure shares untouched.
void accumulate_pending(Tensor& pending, const Tensor& g) {
  const DType dt = pending.dtype();
  if ((dt == DType::f32 || dt == DType::f64) && g.dtype() == dt && g.device() == pending.device() &&
      owns_its_memory(pending)) {
    add_(pending, g);  // run_backward holds a NoGradGuard
  } else {
    pending = add(pending, g);
  }
}

// The sink for a leaf: adds the gradient into leaf.grad.
struct AccumulateGrad final : Node {
  std::weak_ptr<TensorImpl> leaf;

  std::vector<Tensor> apply(const Tensor& grad_output) override {
    std::shared_ptr<TensorImpl> impl = leaf.lock();
    if (!impl) return {};  // the leaf is gone; nobody can read its gradient
    accumulate_into(impl, grad_output);
    if (g_grad_ready != nullptr) (*g_grad_ready)(Tensor(impl));
    return {};
  }

  static void accumulate_into(const std::shared_ptr<TensorImpl>& impl, const Tensor& g) {
    NoGradGuard no_grad;
    if (!impl->grad) {
      // The gradient becomes the leaf's own: taken as it is when nothing else
      // can reach its memory (the engine's handle is the only one, on a
      // contiguous storage of its own), else copied, since it may alias
      // another tensor (a gradient passed through unchanged, a view of a
      // saved one, a broadcast). Taking it saves a copy of every parameter's
      // gradient per step, 67 MB for a 4096 x 4096 weight, into freshly
      // faulted pages (docs/perf.md).
      impl->grad = owns_its_memory(g) ? g.detach().impl_ptr() : g.detach().clone().impl_ptr();
    } else {
      Tensor acc(impl->grad);
      add_(acc, g);
    }
  }
};

std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  TensorImpl& impl = t.impl();
  if (impl.grad_fn) return impl.grad_fn;
  std::shared_ptr<Node> acc = impl.grad_accumulator.lock();
  if (!acc) {
    auto node = std::make_shared<AccumulateGrad>();
    node->name = "AccumulateGrad";
    node->leaf = t.impl_ptr();
    acc = node;
    impl.grad_accumulator = acc;
  }
  return acc;
}

}  // namespace

GradReadyGuard::GradReadyGuard(GradReadyFn fn) : fn_(std::move(fn)), previous_(g_grad_ready) {
  g_grad_ready = fn_ ? &fn_ : nullptr;
}
GradReadyGuard::~GradReadyGuard() { g_grad_ready = previous_; }

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* op, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>();
  node->name = op;
  node->fn = std::move(backward);
  node->next.reserve(inputs.size());
  node->needs.reserve(inputs.size());
  node->input_shapes.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    node->next.push_back(gradient_edge(t));
    node->needs.push_back(node->next.back() != nullptr);
    node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
  }
  TensorImpl& impl = out.impl();
  impl.grad_fn = node;
  impl.requires_grad = true;
}

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  VLMC_CHECK(root.requires_grad(), "backward: tensor ", describe(root),
             " does not require grad and has no grad_fn");
  Tensor grad = gradient;
  if (!grad.defined()) {
    VLMC_CHECK(root.numel() == 1, "backward: a gradient can be created implicitly only for "
               "one-element outputs; pass one for ", describe(root));
    grad = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  VLMC_CHECK(grad.shape() == root.shape(), "backward: gradient ", shape_str(grad.shape()),
             " does not match output ", shape_str(root.shape()));
  VLMC_CHECK(grad.device() == root.device(), "backward: gradient on ", grad.device().str(),
             " but output on ", root.device().str());

  std::shared_ptr<Node> start = gradient_edge(root);

  NoGradGuard no_grad;  // backward closures never record (no double backward)

  // Count, for every reachable node, how many edges lead into it.
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack{start.get()};
  std::unordered_set<Node*> seen{start.get()};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& next : n->next) {
      if (!next) continue;
      ++dependencies[next.get()];
      if (seen.insert(next.get()).second) stack.push_back(next.get());
    }
  }

  // Kahn's algorithm: a node runs once all gradients flowing into it are summed.
  std::unordered_map<Node*, Tensor> pending{{start.get(), grad}};
  std::vector<std::shared_ptr<Node>> ready{start};
  std::vector<std::shared_ptr<Node>> done;
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    Tensor g = std::move(pending[node.get()]);
    pending.erase(node.get());
    std::vector<Tensor> input_grads = node->apply(g);
    for (size_t i = 0; i < node->next.size(); ++i) {
      const std::shared_ptr<Node>& next = node->next[i];
      if (!next) continue;
      VLMC_CHECK(i < input_grads.size() && input_grads[i].defined(), "backward of '", node->name,
                 "' returned no gradient for input ", i);
      const Tensor& gi = input_grads[i];
      VLMC_CHECK(gi.shape() == node->input_shapes[i], "backward of '", node->name,
                 "' returned gradient ", shape_str(gi.shape()), " for input ", i, " of shape ",
                 shape_str(node->input_shapes[i]));
      auto it = pending.find(next.get());
      if (it == pending.end()) {
        pending.emplace(next.get(), gi);
      } else {
        accumulate_pending(it->second, gi);
      }
      if (--dependencies[next.get()] == 0) ready.push_back(next);
    }
    done.push_back(std::move(node));
  }
  if (!retain_graph)
    for (const auto& n : done) n->release();
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward(*this, gradient, retain_graph);
}

}  // namespace vlmc
