// init_process_group: picks the backend from the launcher's environment, the
// device and what this build has, with an error that says what to do when the
// needed backend is missing.
#include "core/error.h"
#include "dist/groups.h"

namespace vlmc::dist {

std::unique_ptr<ProcessGroup> init_process_group(Device device, double timeout_s) {
  VLMC_CHECK(timeout_s > 0, "init_process_group: timeout_s must be positive, got ", timeout_s);
  const LaunchInfo launch = launch_info();
  if (launch.world_size <= 1) return make_single_group(device);
#if !VLMC_WITH_MPI
  throw Error(str("init_process_group: launched as rank ", launch.rank, " of ", launch.world_size,
                  ", but this vlmc was built without MPI (install libopenmpi-dev and rebuild)"));
#else
  if (device.is_cuda()) {
#if VLMC_WITH_NCCL
    return make_nccl_group(device, timeout_s);
#else
    throw Error(str("init_process_group: ", launch.world_size, " ranks on ", device.str(),
                    " need NCCL, but this vlmc was built without it (NCCL in the CUDA toolkit, "
                    "nccl.h and libnccl, then rebuild; or train on device cpu)"));
#endif
  }
  return make_mpi_group(timeout_s);
#endif
}

}  // namespace vlmc::dist
