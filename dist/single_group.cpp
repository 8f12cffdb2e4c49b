// The "single" backend: one process, so every collective is the identity and
// nothing of MPI is touched (a plain `vlmc train` needs no launcher).
#include <cstdio>
#include <cstdlib>

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
  void barrier(const std::string&) override {}
  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    std::fprintf(stderr, "vlmc rank 0/1: %s\n", message.c_str());
    std::fflush(stderr);
    std::exit(exit_code);
  }
};

}  // namespace

std::unique_ptr<ProcessGroup> make_single_group(Device) { return std::make_unique<SingleGroup>(); }

}  // namespace vlmc::dist
