#include "dist/mpi_group.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "dist/buckets.h"
#include "dist/groups.h"

namespace vlmc::dist {

MpiGroup::MpiGroup(double timeout_s) : timeout_s_(timeout_s) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  VLMC_CHECK(!finalized, "init_process_group: MPI was already finalized in this process "
                         "(a process group can be made once per process)");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw Error("init_process_group: this MPI library does not support MPI_THREAD_FUNNELED");
    }
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
  MPI_Comm_dup(MPI_COMM_WORLD, &reduce_comm_);
  MPI_Comm_dup(MPI_COMM_WORLD, &broadcast_comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (broadcast_comm_ != MPI_COMM_NULL) MPI_Comm_free(&broadcast_comm_);
  if (reduce_comm_ != MPI_COMM_NULL) MPI_Comm_free(&reduce_comm_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  if (owns_mpi_) MPI_Finalize();
}

void MpiGroup::abort_timeout(const std::string& what) {
  std::fprintf(stderr, "%s\n", timeout_message(rank_, size_, what, timeout_s_).c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; this tells the compiler so
}

void MpiGroup::abort(const std::string& message, int exit_code) {
  std::fprintf(stderr, "vlmc rank %d/%d: %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::abort();
}

void MpiGroup::wait(MPI_Request& request, const std::string& what, Poll mode) {
  const bool done = poll_until(
      [&] {
        int flag = 0;
        MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
        return flag != 0;
      },
      timeout_s_, mode);
  if (!done) abort_timeout(what);
}

void MpiGroup::sum_in_place(void* data, int count, MPI_Datatype type, const std::string& what, Poll mode) {
  MPI_Request request;
  if (rank_ == 0) {
    MPI_Ireduce(MPI_IN_PLACE, data, count, type, MPI_SUM, 0, comm_, &request);
  } else {
    MPI_Ireduce(data, nullptr, count, type, MPI_SUM, 0, comm_, &request);
  }
  wait(request, what, mode);
  MPI_Ibcast(data, count, type, 0, comm_, &request);
  wait(request, what, mode);
}

void MpiGroup::broadcast_bytes(void* data, int nbytes, const std::string& what) {
  MPI_Request request;
  MPI_Ibcast(data, nbytes, MPI_BYTE, 0, comm_, &request);
  wait(request, what, Poll::backoff);
}

void MpiGroup::barrier(const std::string& what) {
  MPI_Request request;
  MPI_Ibarrier(comm_, &request);
  wait(request, what, Poll::backoff);
}

void MpiGroup::all_reduce_sum(const std::vector<Tensor>& tensors, const std::string& what) {
  const std::vector<Bucket> buckets =
      plan_f32_buckets(tensors, Device::cpu(), what, "mpi", " (CUDA tensors need the nccl group: init_process_group "
                                                            "with a CUDA device)");
  if (buckets.empty()) return;
  // Everyone arrives first (sleeping while waiting); then the data moves at full speed.
  barrier(what + " (waiting for every rank)");
  int64_t largest = 0;
  for (const Bucket& b : buckets) largest = std::max(largest, b.count);
  if (static_cast<int64_t>(host_bucket_.size()) < largest) host_bucket_.resize(static_cast<size_t>(largest));
  float* buffer = host_bucket_.data();
  for (const Bucket& bucket : buckets) {
    int64_t at = 0;
    for (const BucketPiece& p : bucket.pieces) {
      const float* src = static_cast<const float*>(tensors[p.tensor].data_ptr()) + p.offset;
      std::memcpy(buffer + at, src, static_cast<size_t>(p.count) * sizeof(float));
      at += p.count;
    }
    sum_in_place(buffer, static_cast<int>(bucket.count), MPI_FLOAT, what, Poll::spin);
    at = 0;
    for (const BucketPiece& p : bucket.pieces) {
      float* dst = static_cast<float*>(tensors[p.tensor].data_ptr()) + p.offset;
      std::memcpy(dst, buffer + at, static_cast<size_t>(p.count) * sizeof(float));
      at += p.count;
    }
  }
}

void MpiGroup::broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                         const std::string& what) {
  check_broadcast(tensors, owners, size_, Device::cpu(), what, "mpi",
                  " (CUDA tensors need the nccl group: init_process_group with a CUDA device)");
  if (tensors.empty()) return;
  barrier(what + " (waiting for every rank)");
  const int64_t capacity = kBucketBytes / static_cast<int64_t>(sizeof(float));
  for (int root = 0; root < size_; ++root) {
    // The root's tensors, in list order: every rank makes the same plan.
    std::vector<size_t> index;
    std::vector<int64_t> numels;
    for (size_t i = 0; i < tensors.size(); ++i)
      if (owners[i] == root) {
        index.push_back(i);
        numels.push_back(tensors[i].numel());
      }
    for (const Bucket& bucket : plan_buckets(numels, capacity)) {
      if (static_cast<int64_t>(host_bucket_.size()) < bucket.count)
        host_bucket_.resize(static_cast<size_t>(bucket.count));
      float* buffer = host_bucket_.data();
      if (rank_ == root) {
        int64_t at = 0;
        for (const BucketPiece& p : bucket.pieces) {
          const float* src = static_cast<const float*>(tensors[index[p.tensor]].data_ptr()) + p.offset;
          std::memcpy(buffer + at, src, static_cast<size_t>(p.count) * sizeof(float));
          at += p.count;
        }
      }
      MPI_Request request;
      MPI_Ibcast(buffer, static_cast<int>(bucket.count), MPI_FLOAT, root, comm_, &request);
      wait(request, what, Poll::spin);
      if (rank_ == root) continue;  // its tensors already hold these bits
      int64_t at = 0;
      for (const BucketPiece& p : bucket.pieces) {
        float* dst = static_cast<float*>(tensors[index[p.tensor]].data_ptr()) + p.offset;
        std::memcpy(dst, buffer + at, static_cast<size_t>(p.count) * sizeof(float));
        at += p.count;
      }
    }
  }
}

std::vector<double> MpiGroup::all_reduce_sum(const std::vector<double>& values, const std::string& what) {
  std::vector<double> sums = values;
  if (sums.empty()) return sums;
  VLMC_CHECK(sums.size() < (1u << 30), "all_reduce_sum (", what, "): too many scalars: ", sums.size());
  // A few bytes in few rounds: waiting with sleeps costs at most a few ms here.
  sum_in_place(sums.data(), static_cast<int>(sums.size()), MPI_DOUBLE, what, Poll::backoff);
  return sums;
}

// A started sum: MPI_Ireduce to rank 0, then MPI_Ibcast from rank 0 (the bits
// rank 0 computed, on every rank, as sum_in_place), each stage on its own
// communicator in start order (see MpiGroup's members).
class MpiWork final : public Work {
 public:
  MpiWork(MpiGroup& group, const Tensor& flat, std::string what)
      : group_(group), flat_(flat), what_(std::move(what)) {
    const int count = static_cast<int>(flat_.numel());
    if (group_.rank() == 0) {
      MPI_Ireduce(MPI_IN_PLACE, flat_.data_ptr(), count, MPI_FLOAT, MPI_SUM, 0, group_.reduce_comm_, &request_);
    } else {
      MPI_Ireduce(flat_.data_ptr(), nullptr, count, MPI_FLOAT, MPI_SUM, 0, group_.reduce_comm_, &request_);
    }
    group_.awaiting_broadcast_.push_back(this);
  }

  ~MpiWork() override {
    if (done_) return;
    // Only on an error path (the job is ending): MPI forbids freeing or
    // cancelling a collective in flight, and it may still write into the
    // buffer, so the buffer is kept alive on purpose.
    new Tensor(flat_);
    auto& queue = group_.awaiting_broadcast_;
    queue.erase(std::remove(queue.begin(), queue.end(), this), queue.end());
  }

  void progress() override { advance(); }

  void wait() override {
    // Every rank has started this sum (the reducer waits for every rank
    // first): poll without sleeping so that MPI moves the data at full speed.
    if (!poll_until([&] { return advance(); }, group_.timeout_s(), Poll::spin)) group_.abort_timeout(what_);
  }

 private:
  // Starts the broadcasts whose turn has come (the queue's head, once its
  // reduce is done, then the next...), then tests this sum. True when done.
  bool advance() {
    auto& queue = group_.awaiting_broadcast_;
    while (!queue.empty()) {
      MpiWork& head = *queue.front();
      int flag = 0;
      MPI_Test(&head.request_, &flag, MPI_STATUS_IGNORE);
      if (flag == 0) break;
      MPI_Ibcast(head.flat_.data_ptr(), static_cast<int>(head.flat_.numel()), MPI_FLOAT, 0, group_.broadcast_comm_,
                 &head.request_);
      head.broadcasting_ = true;
      queue.pop_front();
    }
    if (!done_ && broadcasting_) {
      int flag = 0;
      MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
      done_ = flag != 0;
    }
    return done_;
  }

  MpiGroup& group_;
  Tensor flat_;  // keeps the buffer alive while MPI uses it
  std::string what_;
  MPI_Request request_ = MPI_REQUEST_NULL;  // the reduce's, then the broadcast's
  bool broadcasting_ = false;
  bool done_ = false;
};

std::unique_ptr<Work> MpiGroup::all_reduce_sum_start(const Tensor& flat, const std::string& what) {
  plan_f32_buckets({flat}, Device::cpu(), what, "mpi", " (CUDA tensors need the nccl group)");  // the checks only
  VLMC_CHECK(flat.numel() < (int64_t{1} << 31), "all_reduce_sum_start (", what, "): ", flat.numel(),
             " elements are more than one MPI call can take");
  return std::make_unique<MpiWork>(*this, flat, what);
}

std::unique_ptr<ProcessGroup> make_mpi_group(double timeout_s) { return std::make_unique<MpiGroup>(timeout_s); }

}  // namespace vlmc::dist
