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
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
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

std::vector<double> MpiGroup::all_reduce_sum(const std::vector<double>& values, const std::string& what) {
  std::vector<double> sums = values;
  if (sums.empty()) return sums;
  VLMC_CHECK(sums.size() < (1u << 30), "all_reduce_sum (", what, "): too many scalars: ", sums.size());
  // A few bytes in few rounds: waiting with sleeps costs at most a few ms here.
  sum_in_place(sums.data(), static_cast<int>(sums.size()), MPI_DOUBLE, what, Poll::backoff);
  return sums;
}

std::unique_ptr<ProcessGroup> make_mpi_group(double timeout_s) { return std::make_unique<MpiGroup>(timeout_s); }

}  // namespace vlmc::dist
