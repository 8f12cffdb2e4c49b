#include "dist/reducer.h"

#include "core/error.h"

namespace vlmc::dist {

Reducer::Reducer(ProcessGroup& group, std::vector<Tensor> params, int64_t bucket_bytes)
    : group_(group), params_(std::move(params)) {
  VLMC_CHECK(bucket_bytes >= static_cast<int64_t>(sizeof(float)), "Reducer: bucket size of ", bucket_bytes,
             " bytes holds no f32 element");
  const size_t n = params_.size();
  const Device device = n > 0 ? params_.front().device() : Device::cpu();
  std::vector<int64_t> reversed_numels;
  reversed_numels.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params_[i];
    VLMC_CHECK(p.defined(), "Reducer: parameter ", i, " is undefined");
    VLMC_CHECK(p.dtype() == DType::f32, "Reducer: parameter ", i, " is ", dtype_name(p.dtype()), ", expected f32");
    VLMC_CHECK(p.device() == device, "Reducer: parameter ", i, " is on ", p.device().str(), ", parameter 0 on ",
               device.str());
    VLMC_CHECK(index_.emplace(&p.impl(), i).second, "Reducer: parameter ", i, " is listed twice");
    reversed_numels.push_back(params_[n - 1 - i].numel());
  }
  slots_of_.resize(n);
  ready_.assign(n, false);
  for (Bucket& bucket : plan_buckets(reversed_numels, bucket_bytes / static_cast<int64_t>(sizeof(float)))) {
    Slot slot;
    for (BucketPiece& piece : bucket.pieces) {
      piece.tensor = n - 1 - piece.tensor;  // back to the parameters' own order
      // A parameter has at most one piece per bucket (its elements are consecutive).
      slot.params.push_back(piece.tensor);
      slots_of_[piece.tensor].push_back(slots_.size());
    }
    slot.flat = Tensor::empty({bucket.count + static_cast<int64_t>(bucket.pieces.size())}, DType::f32, device);
    slot.plan = std::move(bucket);
    slots_.push_back(std::move(slot));
  }
  stats_.buckets = static_cast<int64_t>(slots_.size());
  prepare("gradients");
}

Reducer::~Reducer() = default;

void Reducer::prepare(const std::string& what) {
  what_ = what;
  ready_.assign(params_.size(), false);
  for (Slot& slot : slots_) {
    slot.waiting = static_cast<int64_t>(slot.params.size());
    slot.work.reset();
  }
  next_ = 0;
  stats_.started_in_backward = 0;
  stats_.started_in_finish = 0;
}

void Reducer::on_ready(const Tensor& leaf) {
  const auto it = index_.find(&leaf.impl());
  if (it == index_.end() || ready_[it->second]) return;
  ready_[it->second] = true;
  for (const size_t s : slots_of_[it->second]) --slots_[s].waiting;
  while (next_ < slots_.size() && slots_[next_].waiting == 0) {
    start(slots_[next_++]);
    ++stats_.started_in_backward;
  }
  for (size_t s = 0; s < next_; ++s) slots_[s].work->progress();
}

void Reducer::start(Slot& slot) {
  const int64_t count = slot.plan.count;
  std::vector<float> flags;
  flags.reserve(slot.plan.pieces.size());
  int64_t at = 0;
  for (const BucketPiece& piece : slot.plan.pieces) {
    const Tensor& param = params_[piece.tensor];
    Tensor dst = slot.flat.narrow(0, at, piece.count);
    const Tensor grad = param.grad();
    if (grad.defined()) {
      VLMC_CHECK(grad.dtype() == DType::f32 && grad.shape() == param.shape(), what_, ": the gradient of parameter ",
                 piece.tensor, " is ", dtype_name(grad.dtype()), " ", shape_str(grad.shape()), ", expected f32 ",
                 shape_str(param.shape()));
      dst.copy_(grad.contiguous().reshape({-1}).narrow(0, piece.offset, piece.count));
    } else {
      dst.zero_();  // no gradient here: this rank adds nothing
    }
    flags.push_back(grad.defined() ? 1.0f : 0.0f);
    at += piece.count;
  }
  slot.flat.narrow(0, count, static_cast<int64_t>(flags.size()))
      .copy_(Tensor::from_vector(flags, {static_cast<int64_t>(flags.size())}));
  slot.work = group_.all_reduce_sum_start(slot.flat, what_);
}

void Reducer::finish() {
  while (next_ < slots_.size()) {
    start(slots_[next_++]);
    ++stats_.started_in_finish;
  }
  // Every rank arrives first, waiting with sleeps (one may still be in its
  // backward); then the sums are waited for without sleeping (dist/poll.h).
  if (group_.world_size() > 1 && !slots_.empty()) group_.barrier(what_ + " (waiting for every rank)");
  for (Slot& slot : slots_) {
    slot.work->wait();
    slot.work.reset();
    const int64_t pieces = static_cast<int64_t>(slot.plan.pieces.size());
    const std::vector<float> flags = slot.flat.narrow(0, slot.plan.count, pieces).to_vector<float>();
    int64_t at = 0;
    for (int64_t k = 0; k < pieces; ++k) {
      const BucketPiece& piece = slot.plan.pieces[static_cast<size_t>(k)];
      const Tensor& param = params_[piece.tensor];
      if (flags[static_cast<size_t>(k)] > 0) {  // some rank had a gradient
        Tensor grad = param.grad();
        if (!grad.defined()) {
          // Every piece of it is written below (its flags agree across buckets).
          grad = Tensor::empty(param.shape(), DType::f32, param.device());
          param.set_grad(grad);
        } else if (!grad.is_contiguous()) {
          grad = grad.contiguous();
          param.set_grad(grad);
        }
        grad.reshape({-1}).narrow(0, piece.offset, piece.count).copy_(slot.flat.narrow(0, at, piece.count));
      }
      at += piece.count;
    }
  }
}

}  // namespace vlmc::dist
