// Data-parallel communication between the processes of one training job.
//
// A job is P processes ("ranks") launched by mpirun (Open MPI), one per GPU
// or, on CPUs, one per socket/machine. A ProcessGroup is what the trainer sees
// of them: who am I, how many are we, and the collectives data parallelism
// needs. Three backends, chosen by init_process_group():
//   single  one process (no launcher, or mpirun -np 1): every collective is the identity
//   mpi     CPU tensors: MPI reduce to rank 0 + broadcast over host buffers
//   nccl    CUDA tensors: ncclAllReduce / ncclBroadcast on the device's
//           streams (its unique id travels over MPI), CUDA builds with NCCL only
//
// Every collective waits at most `timeout_s` for the other ranks. A rank that
// died or hangs makes the others stop: the rank that times out prints which
// collective (and the step the caller named) did not complete, and aborts
// the whole job (MPI_Abort) so that mpirun ends with an error instead of
// hanging forever.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vlmc::dist {

// A collective started by ProcessGroup::all_reduce_sum_start.
struct Work {
  virtual ~Work() = default;
  // Blocks until the collective is complete (past the group's timeout it ends
  // the job naming the call, as every wait does); then the buffer holds the sums.
  virtual void wait() = 0;
  // Lets the collective advance without blocking. MPI moves a non-blocking
  // collective's data only inside MPI calls: the reducer calls this during
  // the backward so that the transfer goes on while gradients are computed.
  virtual void progress() {}
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "single", "mpi" or "nccl"

  // Sums every tensor in place over the ranks: afterwards each rank holds the
  // same sums. Tensors are f32, contiguous, on the group's device, and listed
  // in the same order with the same shapes on every rank (checked on the
  // first call is not possible cheaply: the caller guarantees it). Small
  // tensors are packed into buckets so that a step makes few collectives.
  // `what` names the call in timeout messages ("stage1 step 12 gradients").
  virtual void all_reduce_sum(const std::vector<Tensor>& tensors, const std::string& what) = 0;
  // Starts summing one flat f32 contiguous tensor on the group's device over
  // the ranks, in place, and returns at once; the buffer must stay untouched
  // until wait() returned. Every rank must start the same collectives (same
  // sizes) in the same order. The same bits as all_reduce_sum on every rank.
  virtual std::unique_ptr<Work> all_reduce_sum_start(const Tensor& flat, const std::string& what) = 0;
  // Sums host scalars (token counts, losses) over the ranks.
  virtual std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string& what) = 0;
  // all_reduce_sum({x, y}, what) with doubles: without this overload the
  // braced list also matches the tensor one (through std::vector's size
  // constructor) and the call is ambiguous.
  std::vector<double> all_reduce_sum(std::initializer_list<double> values, const std::string& what) {
    return all_reduce_sum(std::vector<double>(values), what);
  }
  // Copies tensors[i] from rank owners[i] to every other rank, in place:
  // afterwards every rank holds the very bits its owner had (ZeRO stage 1:
  // each rank updates the parameters it owns, then shares them). Tensors as
  // for all_reduce_sum (f32, contiguous, on the group's device, the same list
  // and shapes on every rank); owners are ranks, the same list on every rank.
  // Tensors of one owner are packed into buckets, so a call makes few
  // collectives. `what` names the call in timeout messages.
  virtual void broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                         const std::string& what) = 0;
  // Waits until every rank has arrived.
  virtual void barrier(const std::string& what) = 0;
  // Ends the whole job now with `message` printed by this rank (MPI_Abort);
  // for errors on one rank that would leave the others waiting. Never returns.
  [[noreturn]] virtual void abort(const std::string& message, int exit_code) = 0;
};

// The launcher's environment decides: under mpirun with more than one
// process, an "mpi" group (device cpu) or an "nccl" group (a CUDA device: the
// one this rank trains on, see rank_device); otherwise "single". Errors name
// what is missing: a build without MPI launched by mpirun -np 2, a CUDA device
// without NCCL. Call once per process (MPI_Init_thread happens inside); the
// group finalizes MPI when destroyed.
std::unique_ptr<ProcessGroup> init_process_group(Device device, double timeout_s);

// The world size and rank the launcher announced (OMPI_COMM_WORLD_SIZE /
// OMPI_COMM_WORLD_RANK, or PMI_SIZE / PMI_RANK), without initializing MPI:
// 1 and 0 when not launched by one. local_rank is the rank on this node
// (OMPI_COMM_WORLD_LOCAL_RANK), for picking a GPU.
struct LaunchInfo {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;
};
LaunchInfo launch_info();

// The device a rank trains on, from the run.device text: with several ranks,
// plain "cuda" means cuda:<local rank>, one GPU per process (an error names
// the rank when the node has fewer GPUs than local ranks); "cpu" and an
// explicit "cuda:N" are kept as they are.
Device rank_device(const std::string& configured, const LaunchInfo& launch);

// Checks ProcessGroup::broadcast's arguments for a group of `world_size`
// ranks (the backends call it): as many owners as tensors, each a rank; each
// tensor f32 and contiguous, and on `device` when one is given (the single
// group takes any). Errors name the call (`what`) and the tensor's index;
// `device_hint` follows a device mismatch.
void check_broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners, int world_size,
                     const std::optional<Device>& device, const std::string& what, const std::string& backend,
                     const std::string& device_hint = "");

// True when this vlmc was built with MPI (and with NCCL).
bool built_with_mpi();
bool built_with_nccl();

}  // namespace vlmc::dist
