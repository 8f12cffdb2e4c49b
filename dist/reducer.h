// Gradient sums over the ranks, overlapped with the backward (as PyTorch
// DDP's Reducer).
//
// Summing every gradient after the backward leaves the network idle during
// the backward and the processors idle during the sums. The reducer groups the
// trained parameters into buckets and starts a bucket's sum as soon as all of
// its parameters' gradients are final (the autograd engine says so through
// the GradReadyGuard hook, core/autograd.h), while the backward computes the
// rest:
//
//   Reducer reducer(group, params);            // once per stage
//   reducer.prepare("stage1 step 12 gradients");  // before the step's last backward
//   { GradReadyGuard hook([&](const Tensor& p) { reducer.on_ready(p); });
//     loss.backward(); }
//   reducer.finish();                              // every .grad holds the sum
//
// Buckets: the parameters in REVERSE order, laid end to end and cut into
// buckets of at most bucket_bytes (dist/buckets.h: a large parameter spans
// several), because a backward produces gradients roughly from the last layer
// to the first. Every rank computes the same plan from the same shapes.
//
// Order: MPI and NCCL match the collectives of a communicator in the order
// they are issued, so every rank must issue the same buckets in the same
// order. The order in which gradients become ready may differ between ranks
// (the engine's order depends on the graph, and a parameter may get no
// gradient on one rank), so ready order cannot decide: buckets are started in
// index order only. A ready bucket whose predecessors are not all started
// waits; when bucket i is started, every ready bucket after it follows.
// finish() starts whatever is left, still in index order.
//
// Parameters without a gradient: at finish(), a bucket is filled from the
// parameters' current .grad, so a parameter that got its gradient in an
// earlier micro-batch of the step (gradient accumulation) but not in this
// backward is summed too; one with no .grad counts as zeros. Each bucket
// also carries one flag per piece (1 where this rank had a gradient): after
// the sum, a parameter gets a .grad when any rank had one (so every rank
// updates the same parameters, as one process with the global batch would),
// and keeps none when no rank had one, so the optimizer skips it.
//
// No other collective of the group is needed between prepare() and finish():
// the backends run started sums on a communicator (MPI) or a stream (NCCL) of
// their own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "dist/buckets.h"
#include "dist/process_group.h"

namespace vlmc::dist {

class Reducer {
 public:
  // `params`: the tensors a stage trains, in the same order on every rank
  // (f32, on the group's device). The bucket buffers are allocated here and
  // reused every step.
  Reducer(ProcessGroup& group, std::vector<Tensor> params, int64_t bucket_bytes = kBucketBytes);
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Starts a step: nothing is ready, no bucket started. `what` names the
  // step's sums in timeout messages ("stage1 step 12 gradients"); it is given
  // here because buckets start during the backward.
  void prepare(const std::string& what);
  // The gradient-ready hook: `leaf`'s gradient is final for this step. Leaves
  // that are not parameters of this reducer are ignored. Starts every bucket
  // that is complete and whose predecessors are started, and lets the
  // started sums progress.
  void on_ready(const Tensor& leaf);
  // After the backward: starts the buckets not started yet, waits for all
  // (with the group's timeout), and writes the sums into each parameter's .grad.
  void finish();

  struct Stats {
    int64_t buckets = 0;
    int64_t started_in_backward = 0;  // by on_ready, during the last step's backward
    int64_t started_in_finish = 0;
  };
  // The last step's.
  const Stats& stats() const { return stats_; }

 private:
  struct Slot {
    Bucket plan;                 // pieces index params_ (in its own order, not the reversed one)
    std::vector<size_t> params;  // distinct parameters with a piece here
    int64_t waiting = 0;         // of those, how many are not ready yet
    Tensor flat;                 // plan.count sums, then one flag per piece
    std::unique_ptr<Work> work;
  };

  // Fills the bucket from the parameters' current .grad and starts its sum.
  void start(Slot& slot);

  ProcessGroup& group_;
  std::vector<Tensor> params_;
  std::unordered_map<const TensorImpl*, size_t> index_;  // param impl -> index in params_
  std::vector<std::vector<size_t>> slots_of_;             // param -> its buckets
  std::vector<bool> ready_;
  std::vector<Slot> slots_;
  std::string what_;
  size_t next_ = 0;  // the first bucket not started
  Stats stats_;
};

}  // namespace vlmc::dist
