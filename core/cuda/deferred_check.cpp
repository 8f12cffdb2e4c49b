// The CUDA build of core/cuda/deferred_check.h: one ring of records per
// device, in device memory (the kernels' atomics stay device-local: atomics on
// mapped host memory are not guaranteed over PCIe), mirrored by a pinned host
// array that gives each record its initial slots (an async copy queued before
// the op's kernel) and receives the pending records after a synchronisation.
#include "core/cuda/deferred_check.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "kernels/cuda/check.h"

namespace vlmc::cuda {
namespace {

struct Ring {
  std::mutex mutex;
  int64_t* host = nullptr;    // kDeferredRecords * kDeferredSlots, pinned
  int64_t* device = nullptr;  // the records the kernels write, same layout
  // pending[i] reports record i: records are handed out in order from 0 and
  // all become free together at each check.
  std::vector<DeferredReport> pending;
};

Ring& ring_of(int device, bool create) {
  static std::mutex mutex;
  static std::map<int, Ring*>* rings = new std::map<int, Ring*>();  // never destroyed, as the allocator
  static Ring none;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = rings->find(device);
  if (it != rings->end()) return *it->second;
  if (!create) return none;
  Ring* ring = new Ring();
  VLMC_CUDA_CHECK(cudaSetDevice(device));
  const size_t bytes = kDeferredRecords * kDeferredSlots * sizeof(int64_t);
  VLMC_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ring->host), bytes, cudaHostAllocDefault));
  VLMC_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ring->device), bytes));
  ring->pending.reserve(kDeferredRecords);
  (*rings)[device] = ring;
  return *ring;
}

}  // namespace

int64_t* defer_check(int device, std::initializer_list<int64_t> initial, DeferredReport report) {
  VLMC_CHECK(initial.size() <= static_cast<size_t>(kDeferredSlots), "defer_check: ", initial.size(),
             " initial slots, a record has ", kDeferredSlots);
  Ring& ring = ring_of(device, true);
  std::unique_lock<std::mutex> lock(ring.mutex);
  while (ring.pending.size() == kDeferredRecords) {
    // Every record is in flight: wait for them, report (or forget) them, reuse.
    lock.unlock();
    synchronize(device);  // checks the records, and throws an earlier op's error if one was flagged
    lock.lock();
  }
  const size_t index = ring.pending.size();
  int64_t* slots = ring.host + index * kDeferredSlots;
  int k = 0;
  for (int64_t v : initial) slots[k++] = v;
  for (; k < kDeferredSlots; ++k) slots[k] = 0;
  // Stream-ordered before the op's kernel; the pinned source is not written
  // again before the record is checked, which follows a synchronisation.
  int64_t* record = ring.device + index * kDeferredSlots;
  VLMC_CUDA_CHECK(cudaMemcpyAsync(record, slots, kDeferredSlots * sizeof(int64_t), cudaMemcpyHostToDevice,
                                  stream(device)));
  ring.pending.push_back(std::move(report));
  return record;
}

void check_deferred_errors(int device) {
  Ring& ring = ring_of(device, false);
  std::string message;
  {
    std::lock_guard<std::mutex> lock(ring.mutex);
    if (ring.pending.empty()) return;
    // The copy runs behind every op that took a record, so what it reads is
    // final (usually the stream was just synchronised and this adds no wait).
    const cudaStream_t s = stream(device);
    VLMC_CUDA_CHECK(cudaMemcpyAsync(ring.host, ring.device, ring.pending.size() * kDeferredSlots * sizeof(int64_t),
                                    cudaMemcpyDeviceToHost, s));
    VLMC_CUDA_CHECK(cudaStreamSynchronize(s));
    for (size_t i = 0; i < ring.pending.size() && message.empty(); ++i)
      message = ring.pending[i](ring.host + i * kDeferredSlots);
    ring.pending.clear();  // every record is free again, reported or not
  }
  if (!message.empty()) throw Error(message + " (reported at the next synchronisation)");
}

size_t pending_deferred_checks(int device) {
  Ring& ring = ring_of(device, false);
  std::lock_guard<std::mutex> lock(ring.mutex);
  return ring.pending.size();
}

}  // namespace vlmc::cuda
