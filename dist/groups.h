// The backends behind init_process_group (internal to dist/). Each factory
// exists only in builds that have its backend (VLMC_WITH_MPI, VLMC_WITH_NCCL);
// init_process_group calls none of the missing ones.
#pragma once

#include <memory>

#include "dist/process_group.h"

namespace vlmc::dist {

std::unique_ptr<ProcessGroup> make_single_group(Device device);
std::unique_ptr<ProcessGroup> make_mpi_group(double timeout_s);
std::unique_ptr<ProcessGroup> make_nccl_group(Device device, double timeout_s);

}  // namespace vlmc::dist
