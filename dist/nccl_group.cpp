// The "nccl" backend (CUDA + NCCL builds only): gradients on a GPU summed with
// ncclAllReduce on the device's vlmc stream; scalars, barriers and the NCCL
// setup go through an MpiGroup.
//
// Buckets as the mpi group (dist/buckets.h), staged in one device buffer from
// the caching allocator. Copies in, the all-reduce and copies out are all
// issued to the one stream, so reusing the buffer for the next bucket needs
// no host wait; the host waits once, at the end, polling the stream and the
// communicator's asynchronous error with a deadline.
//
// Started sums (all_reduce_sum_start, the reducer's buckets during the
// backward) run on a communication stream of their own, so that they overlap
// the backward's kernels on the compute stream: the communication stream first
// waits for an event recorded on the compute stream when the bucket was filled,
// and wait() makes the compute stream wait for the sum's done-event.
//
// ZeRO stage 1's broadcast (each parameter from the rank that updated it) runs
// on the communication stream too, in place, one ncclBroadcast per tensor.
//
// Determinism: NCCL's ring all-reduce is expected to leave the same bits on
// every rank (untested: no session has had two GPUs) (a ring
// all-reduce ends by passing the finished sums around), so no extra broadcast.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdio>

#include "core/cuda/deferred_check.h"
#include "core/cuda/runtime.h"
#include "core/error.h"
#include "kernels/cuda/check.h"
#include "dist/buckets.h"
#include "dist/groups.h"
#include "dist/mpi_group.h"

namespace vlmc::dist {
namespace {

void nccl_check(ncclResult_t result, const char* call) {
  VLMC_CHECK(result == ncclSuccess, "nccl: ", call, " failed: ", ncclGetErrorString(result));
}

// Two events for ordering a collective between the streams, destroyed on
// every path (CUDA releases a pending one once it completes).
struct EventPair {
  cudaEvent_t ready = nullptr;
  cudaEvent_t done = nullptr;
  EventPair() {
    VLMC_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    VLMC_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  }
  ~EventPair() {
    if (ready != nullptr) cudaEventDestroy(ready);
    if (done != nullptr) cudaEventDestroy(done);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

class NcclGroup final : public ProcessGroup {
 public:
  NcclGroup(Device device, double timeout_s) : mpi_(timeout_s), device_(device) {
    VLMC_CHECK(device.is_cuda(), "nccl process group: device ", device.str(), " is not a CUDA device");
    ncclUniqueId id{};
    if (mpi_.rank() == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    // Also proves every rank is alive before the (blocking) communicator setup.
    mpi_.broadcast_bytes(&id, static_cast<int>(sizeof(id)), "nccl setup (unique id broadcast)");
    const cudaError_t set = cudaSetDevice(device.index);
    VLMC_CHECK(set == cudaSuccess, "nccl process group: cudaSetDevice(", device.index,
               ") failed: ", cudaGetErrorString(set));
    nccl_check(ncclCommInitRank(&comm_, mpi_.world_size(), id, mpi_.rank()), "ncclCommInitRank");
    VLMC_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  }

  ~NcclGroup() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return mpi_.rank(); }
  int world_size() const override { return mpi_.world_size(); }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(const std::vector<Tensor>& tensors, const std::string& what) override {
    const std::vector<Bucket> buckets = plan_f32_buckets(tensors, device_, what, "nccl", "");
    if (buckets.empty()) return;
    int64_t largest = 0;
    for (const Bucket& b : buckets) largest = std::max(largest, b.count);
    const Tensor staging = Tensor::empty({largest}, DType::f32, device_);
    float* buffer = static_cast<float*>(staging.data_ptr());
    const int dev = device_.index;
    cudaStream_t stream = cuda::stream(dev);
    for (const Bucket& bucket : buckets) {
      int64_t at = 0;
      for (const BucketPiece& p : bucket.pieces) {
        const float* src = static_cast<const float*>(tensors[p.tensor].data_ptr()) + p.offset;
        cuda::copy_device_to_device(buffer + at, src, static_cast<size_t>(p.count) * sizeof(float), dev);
        at += p.count;
      }
      nccl_check(ncclAllReduce(buffer, buffer, static_cast<size_t>(bucket.count), ncclFloat, ncclSum, comm_,
                               stream),
                 "ncclAllReduce");
      at = 0;
      for (const BucketPiece& p : bucket.pieces) {
        float* dst = static_cast<float*>(tensors[p.tensor].data_ptr()) + p.offset;
        cuda::copy_device_to_device(dst, buffer + at, static_cast<size_t>(p.count) * sizeof(float), dev);
        at += p.count;
      }
    }
    wait_stream(stream, what);
  }

  std::unique_ptr<Work> all_reduce_sum_start(const Tensor& flat, const std::string& what) override;

  std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string& what) override {
    return mpi_.all_reduce_sum(values, what);
  }
  // ZeRO stage 1's parameter broadcast: one in-place ncclBroadcast per
  // tensor from its owner, fused by ncclGroupStart/End, on the communication
  // stream once the compute stream's work so far (the optimizer's kernel) is
  // done; the host waits for it with the deadline, and later compute-stream
  // work is ordered after it.
  void broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                 const std::string& what) override {
    check_broadcast(tensors, owners, world_size(), device_, what, "nccl");
    if (tensors.empty()) return;
    const cudaStream_t compute = cuda::stream(device_.index);
    EventPair events;
    VLMC_CUDA_CHECK(cudaEventRecord(events.ready, compute));
    VLMC_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, events.ready, 0));
    // NCCL bounds the operations of one group call: fuse a bounded number at a time.
    constexpr size_t kPerGroupCall = 256;
    for (size_t first = 0; first < tensors.size(); first += kPerGroupCall) {
      nccl_check(ncclGroupStart(), "ncclGroupStart");
      for (size_t i = first; i < std::min(tensors.size(), first + kPerGroupCall); ++i) {
        if (tensors[i].numel() == 0) continue;
        void* data = tensors[i].data_ptr();
        nccl_check(ncclBroadcast(data, data, static_cast<size_t>(tensors[i].numel()), ncclFloat, owners[i], comm_,
                                 comm_stream_),
                   "ncclBroadcast");
      }
      nccl_check(ncclGroupEnd(), "ncclGroupEnd");
    }
    VLMC_CUDA_CHECK(cudaEventRecord(events.done, comm_stream_));
    wait_until([&] { return cudaEventQuery(events.done); }, what);
    VLMC_CUDA_CHECK(cudaStreamWaitEvent(compute, events.done, 0));
  }

  void barrier(const std::string& what) override { mpi_.barrier(what); }

  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    mpi_.abort(message, exit_code);
  }

 private:
  friend class NcclWork;

  // Polls the stream until the collectives are done. A rank that died or hangs
  // leaves ncclAllReduce spinning on the GPU forever: past the deadline, or on
  // an asynchronous NCCL error, the communicator is aborted (which ends its
  // kernels) and so is the job.
  void wait_stream(cudaStream_t stream, const std::string& what) {
    wait_until([&] { return cudaStreamQuery(stream); }, what);
  }

  // Polls query() (cudaStreamQuery or cudaEventQuery) with sleeps until it
  // says done, with the deadline and the error handling above. Like every
  // host wait it then reads the device's deferred index checks
  // (core/cuda/deferred_check.h), which completes the compute stream when
  // records are pending. That wait cannot hang on a dead rank: the compute
  // stream only ever waits for collectives the host has seen finish.
  template <typename Query>
  void wait_until(const Query& query, const std::string& what) {
    cudaError_t stream_error = cudaSuccess;
    ncclResult_t async_error = ncclSuccess;
    const bool done = poll_until(
        [&] {
          const cudaError_t q = query();
          if (q == cudaSuccess) return true;
          if (q == cudaErrorNotReady) {
            cudaGetLastError();  // not an error: clear it so later checks do not see it
          } else {
            stream_error = q;
            return true;
          }
          if (ncclCommGetAsyncError(comm_, &async_error) != ncclSuccess || async_error != ncclSuccess) {
            if (async_error == ncclSuccess) async_error = ncclInternalError;
            return true;
          }
          return false;
        },
        mpi_.timeout_s(), Poll::backoff);
    if (done && stream_error == cudaSuccess && async_error == ncclSuccess) {
      cuda::check_deferred_errors(device_.index);
      return;
    }
    ncclCommAbort(comm_);
    comm_ = nullptr;
    if (!done) mpi_.abort_timeout(what);
    if (stream_error != cudaSuccess) {
      mpi_.abort(str(what, ": CUDA error while summing over the ranks: ", cudaGetErrorString(stream_error)), 1);
    }
    mpi_.abort(str(what, ": NCCL error while summing over the ranks: ", ncclGetErrorString(async_error)), 1);
  }

  MpiGroup mpi_;  // declared first: destroyed last, after the communicator
  Device device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // the started sums'
};

// A sum started on the communication stream (see the top of this file).
class NcclWork final : public Work {
 public:
  NcclWork(NcclGroup& group, const Tensor& flat, std::string what)
      : group_(group), flat_(flat), what_(std::move(what)) {
    VLMC_CUDA_CHECK(cudaEventCreateWithFlags(&filled_, cudaEventDisableTiming));
    VLMC_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    const cudaStream_t compute = cuda::stream(group_.device_.index);
    VLMC_CUDA_CHECK(cudaEventRecord(filled_, compute));
    VLMC_CUDA_CHECK(cudaStreamWaitEvent(group_.comm_stream_, filled_, 0));
    nccl_check(ncclAllReduce(flat_.data_ptr(), flat_.data_ptr(), static_cast<size_t>(flat_.numel()), ncclFloat,
                             ncclSum, group_.comm_, group_.comm_stream_),
               "ncclAllReduce");
    VLMC_CUDA_CHECK(cudaEventRecord(done_, group_.comm_stream_));
  }

  ~NcclWork() override {
    // Destroying an event still pending is allowed: CUDA releases it once it completes.
    cudaEventDestroy(filled_);
    cudaEventDestroy(done_);
  }

  void wait() override {
    // A host wait, with the group's deadline: a dead rank would leave the
    // all-reduce spinning on the GPU forever. The reducer waits only at the
    // end of the backward, when the host would soon wait for the step anyway.
    group_.wait_until([&] { return cudaEventQuery(done_); }, what_);
    // Later work on the compute stream (the copies out of the bucket) reads the sums.
    VLMC_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(group_.device_.index), done_, 0));
  }

 private:
  NcclGroup& group_;
  Tensor flat_;  // its block stays allocated until the sum is done
  std::string what_;
  cudaEvent_t filled_ = nullptr;
  cudaEvent_t done_ = nullptr;
};

std::unique_ptr<Work> NcclGroup::all_reduce_sum_start(const Tensor& flat, const std::string& what) {
  plan_f32_buckets({flat}, device_, what, "nccl", "");  // the checks only
  return std::make_unique<NcclWork>(*this, flat, what);
}

}  // namespace

std::unique_ptr<ProcessGroup> make_nccl_group(Device device, double timeout_s) {
  return std::make_unique<NcclGroup>(device, timeout_s);
}

}  // namespace vlmc::dist
