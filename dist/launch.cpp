// What the launcher told this process (launch_info), which device a rank
// trains on (rank_device), and what this build can do (built_with_*).
// None of it initializes MPI, so it is cheap to call before choosing a backend.
#include <cerrno>
#include <cstdlib>
#include <string>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "dist/process_group.h"

namespace vlmc::dist {
namespace {

// The first of `names` that is set, parsed as a non-negative integer; -1 when
// none is set. A set but malformed value is an error naming the variable.
int env_int(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* text = std::getenv(name);
    if (text == nullptr) continue;
    char* end = nullptr;
    errno = 0;
    const long value = std::strtol(text, &end, 10);
    VLMC_CHECK(end != text && *end == '\0' && errno == 0 && value >= 0 && value < (1L << 30),
               "launch_info: environment variable ", name, "='", text,
               "' is not a non-negative integer");
    return static_cast<int>(value);
  }
  return -1;
}

}  // namespace

LaunchInfo launch_info() {
  LaunchInfo info;
  const int size = env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"});
  if (size < 0) return info;  // not launched by mpirun: one process
  const int rank = env_int({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"});
  VLMC_CHECK(size >= 1, "launch_info: the launcher announced a world size of ", size);
  VLMC_CHECK(rank >= 0, "launch_info: the launcher announced a world size of ", size,
             " but no rank (OMPI_COMM_WORLD_RANK, PMI_RANK or PMIX_RANK)");
  VLMC_CHECK(rank < size, "launch_info: rank ", rank, " is out of range for a world size of ", size);
  info.world_size = size;
  info.rank = rank;
  // Without a node-local rank (a launcher that does not announce one), all
  // ranks are taken to share one node.
  const int local = env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"});
  info.local_rank = local >= 0 ? local : rank;
  return info;
}

Device rank_device(const std::string& configured, const LaunchInfo& launch) {
  const Device parsed = Device::parse(configured);
  if (configured != "cuda" || launch.world_size <= 1) return parsed;
  const int count = cuda::device_count();
  VLMC_CHECK(launch.local_rank < count, "rank ", launch.rank, "/", launch.world_size,
             ": run.device is cuda, which gives local rank ", launch.local_rank, " the device cuda:",
             launch.local_rank, ", but this node has ", count,
             " CUDA device(s); start at most one process per GPU on each node");
  return Device::cuda(launch.local_rank);
}

bool built_with_mpi() { return VLMC_WITH_MPI; }
bool built_with_nccl() { return VLMC_WITH_NCCL; }

}  // namespace vlmc::dist
