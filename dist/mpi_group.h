// The "mpi" backend (internal to dist/, MPI builds only): collectives over
// host f32 tensors and scalars, each waited for with a deadline. The nccl
// backend owns one too, for its setup, scalars and barriers.
//
// Determinism: a floating-point sum depends on its order, and the MPI standard
// does not promise that MPI_Allreduce gives every rank the same bits. Ranks
// that diverge by one ulp would drift apart over a run. So a sum is a reduce
// to rank 0 followed by a broadcast from rank 0: every rank then holds the
// very bits rank 0 computed.
//
// Waiting: first a barrier, waited for with sleeps (ranks may arrive seconds
// apart), then the data collectives, polled without sleeping because Open MPI
// moves their data only inside MPI calls (see dist/poll.h). Any wait past
// timeout_s prints timeout_message and ends the job with MPI_Abort.
#pragma once

#include <mpi.h>

#include <deque>
#include <string>
#include <vector>

#include "dist/poll.h"
#include "dist/process_group.h"

namespace vlmc::dist {

class MpiWork;  // a started sum (mpi_group.cpp)

class MpiGroup final : public ProcessGroup {
 public:
  // Initializes MPI (MPI_THREAD_FUNNELED: only the thread that made the group
  // calls MPI) unless someone already did; throws if MPI was finalized.
  explicit MpiGroup(double timeout_s);
  // Finalizes MPI when this group initialized it.
  ~MpiGroup() override;
  MpiGroup(const MpiGroup&) = delete;
  MpiGroup& operator=(const MpiGroup&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void all_reduce_sum(const std::vector<Tensor>& tensors, const std::string& what) override;
  std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string& what) override;
  // The same reduce + broadcast, non-blocking: the broadcast starts once the
  // reduce is done (checked by Work::progress and wait of any started sum).
  std::unique_ptr<Work> all_reduce_sum_start(const Tensor& flat, const std::string& what) override;
  // Per owner, its tensors packed into buckets (dist/buckets.h), each an
  // MPI_Ibcast from the owner through the staging buffer; after a barrier,
  // polled without sleeping, as all_reduce_sum.
  void broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                 const std::string& what) override;
  void barrier(const std::string& what) override;
  [[noreturn]] void abort(const std::string& message, int exit_code) override;

  // Waits for `request`; past the deadline, ends the job naming `what`.
  void wait(MPI_Request& request, const std::string& what, Poll mode);
  // Copies rank 0's `nbytes` at `data` to every rank.
  void broadcast_bytes(void* data, int nbytes, const std::string& what);
  // Prints timeout_message for `what` and ends the job.
  [[noreturn]] void abort_timeout(const std::string& what);
  double timeout_s() const { return timeout_s_; }

 private:
  // Sums `count` elements at `data` over the ranks (reduce + broadcast).
  void sum_in_place(void* data, int count, MPI_Datatype type, const std::string& what, Poll mode);

  double timeout_s_;
  bool owns_mpi_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD: our traffic only
  // Started sums (MpiWork, mpi_group.cpp) have two communicators of their
  // own. MPI matches the collectives of a communicator in the order each rank
  // issues them, so that order must be the same on every rank:
  //  - the reduces go to reduce_comm_ in start order (the same everywhere);
  //  - a broadcast can start only once its reduce is done, which happens at
  //    different moments on different ranks: on one communicator with the
  //    reduces the orders would differ (reduce 2 before broadcast 1 here,
  //    after it there). So the broadcasts go to broadcast_comm_, also in start
  //    order: awaiting_broadcast_ queues the sums whose broadcast has not
  //    started, and only its head may start.
  // Neither is comm_, where the trainer's blocking scalar sums may be issued
  // while gradient buckets are in flight.
  friend class MpiWork;
  MPI_Comm reduce_comm_ = MPI_COMM_NULL;
  MPI_Comm broadcast_comm_ = MPI_COMM_NULL;
  std::deque<MpiWork*> awaiting_broadcast_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<float> host_bucket_;  // reused across calls
};

}  // namespace vlmc::dist
