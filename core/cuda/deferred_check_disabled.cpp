// core/cuda/deferred_check.h for a build configured with -DVLMC_CUDA=OFF: no
// op ever runs on a device, so nothing is ever deferred.
#include "core/cuda/deferred_check.h"

#include "core/error.h"

namespace vlmc::cuda {

int64_t* defer_check(int, std::initializer_list<int64_t>, DeferredReport) {
  throw Error("cuda::defer_check: this vlmc was built without CUDA (configure with -DVLMC_CUDA=ON)");
}
void check_deferred_errors(int) {}
size_t pending_deferred_checks(int) { return 0; }

}  // namespace vlmc::cuda
