// Define-by-run autograd, as in PyTorch.
//
// Each op computes its forward and, when any input requires grad, records one
// Node whose closure maps the output gradient to input gradients. Closures
// capture only what their backward needs. backward() walks the graph in
// topological order and frees each node's captures afterwards unless asked to
// retain the graph.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlmc {

// ---- grad mode -------------------------------------------------------------

bool grad_enabled();
void set_grad_enabled(bool enabled);

// Disables graph recording for its scope (thread-local), like torch.no_grad().
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// ---- gradient-ready hook ---------------------------------------------------

// Called once per leaf per backward, right after the leaf's .grad received
// its whole gradient from that backward (the leaf's sink runs once every path
// into it has been summed). `leaf` shares the leaf's impl, so leaf.grad() is
// the accumulated gradient. Data-parallel training uses it to start summing a
// bucket of gradients over the processes while the backward goes on
// (dist/reducer.h), as PyTorch DDP's autograd hooks do.
using GradReadyFn = std::function<void(const Tensor& leaf)>;

// Installs `fn` as this thread's gradient-ready hook for its scope; the
// previous hook (or none) is restored on exit, so guards nest. Without a guard
// the engine does nothing extra.
class GradReadyGuard {
 public:
  explicit GradReadyGuard(GradReadyFn fn);
  ~GradReadyGuard();
  GradReadyGuard(const GradReadyGuard&) = delete;
  GradReadyGuard& operator=(const GradReadyGuard&) = delete;

 private:
  GradReadyFn fn_;
  const GradReadyFn* previous_;
};

// ---- graph nodes -------------------------------------------------------------

struct Node {
  std::string name;  // the op, for error messages
  // One edge per input of the op: the node that takes that input's gradient,
  // or null where the input needs none.
  std::vector<std::shared_ptr<Node>> next;
  std::vector<Shape> input_shapes;  // to check each gradient the closure returns

  virtual ~Node() = default;
  // Gradients for each input (undefined where next[i] is null).
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  virtual void release() {}  // frees saved tensors after backward
};

// Which inputs of an op need a gradient; backward closures skip the others
// (a frozen weight's gradient is never computed).
using GradMask = std::vector<bool>;
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output, const GradMask& needs)>;

// Records `out = op(inputs...)` in the graph when grad mode is on and any input
// requires grad; otherwise does nothing. Call it after computing out.
void record(Tensor& out, const char* op, const std::vector<Tensor>& inputs, BackwardFn backward);

// True when record() would record: grad mode on and an input requires grad.
// Ops use it to avoid saving tensors for a backward that will never run.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Runs backward from roots with the given gradients (see Tensor::backward).
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

}  // namespace vlmc
