// The "single" backend: one process, so every collective is the identity and
// nothing of MPI is touched (a plain `vlmc train` needs no launcher).
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "dist/groups.h"

namespace vlmc::dist {
namespace {

struct DoneWork final : Work {
  void wait() override {}
};

class SingleGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(const std::vector<Tensor>&, const std::string&) override {}
  std::unique_ptr<Work> all_reduce_sum_start(const Tensor&, const std::string&) override {
    return std::make_unique<DoneWork>();
  }
  std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string&) override {
    return values;
  }
  void broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                 const std::string& what) override {
    check_broadcast(tensors, owners, 1, std::nullopt, what, "single");  // every owner is rank 0: nothing moves
  }
  void barrier(const std::string&) override {}
  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    std::fprintf(stderr, "vlmc rank 0/1: %s\n", message.c_str());
    std::fflush(stderr);
    std::exit(exit_code);
  }
};

}  // namespace

// Here because this file is in every build; the other backends call it too.
void check_broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners, int world_size,
                     const std::optional<Device>& device, const std::string& what, const std::string& backend,
                     const std::string& device_hint) {
  VLMC_CHECK(owners.size() == tensors.size(), "broadcast (", what, "): ", tensors.size(), " tensors but ",
             owners.size(), " owners");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    VLMC_CHECK(owners[i] >= 0 && owners[i] < world_size, "broadcast (", what, "): tensor ", i, "'s owner ",
               owners[i], " is not a rank of this job of ", world_size);
    VLMC_CHECK(t.defined(), "broadcast (", what, "): tensor ", i, " is undefined");
    VLMC_CHECK(!device || t.device() == *device, "broadcast (", what, "): tensor ", i, " is on ", t.device().str(),
               ", but the ", backend, " process group broadcasts tensors on ", device->str(), device_hint);
    VLMC_CHECK(t.dtype() == DType::f32, "broadcast (", what, "): tensor ", i, " is ", dtype_name(t.dtype()),
               ", expected f32");
    VLMC_CHECK(t.is_contiguous(), "broadcast (", what, "): tensor ", i, " is not contiguous");
  }
}

std::unique_ptr<ProcessGroup> make_single_group(Device) { return std::make_unique<SingleGroup>(); }

}  // namespace vlmc::dist
