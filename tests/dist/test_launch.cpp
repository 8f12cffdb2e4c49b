// dist/: what the launcher's environment means (launch_info, rank_device), the
// single-process group, and the pieces every backend shares (bucket plans,
// waiting with a deadline). The MPI collectives themselves run under mpirun in
// tests/dist/mpi_selftest.cpp.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "dist/buckets.h"
#include "dist/poll.h"
#include "dist/process_group.h"

using namespace vlmc;
using namespace vlmc::dist;

namespace {

// Unsets every launcher variable, sets the given ones for one test and puts
// every launcher variable back as it was afterwards, so the tests behave the
// same whether or not the suite itself runs under mpirun.
class ScopedLaunchEnv {
 public:
  explicit ScopedLaunchEnv(std::initializer_list<std::pair<const char*, const char*>> values) {
    for (const char* name : kNames) {
      const char* old = std::getenv(name);
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) ::setenv(name, value, 1);
  }
  ScopedLaunchEnv(const ScopedLaunchEnv&) = delete;
  ScopedLaunchEnv& operator=(const ScopedLaunchEnv&) = delete;
  ~ScopedLaunchEnv() {
    for (const auto& [name, value] : saved_) apply(name, value);
  }

 private:
  static void apply(const std::string& name, const std::optional<std::string>& value) {
    if (value) ::setenv(name.c_str(), value->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
  static constexpr const char* kNames[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                                           "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_SIZE", "PMI_RANK",
                                           "PMIX_RANK", "MPI_LOCALRANKID"};
  std::map<std::string, std::optional<std::string>> saved_;
};

}  // namespace

TEST_CASE("launch_info without a launcher is one process", "[dist]") {
  ScopedLaunchEnv env({});
  const LaunchInfo info = launch_info();
  CHECK(info.world_size == 1);
  CHECK(info.rank == 0);
  CHECK(info.local_rank == 0);
}

TEST_CASE("launch_info reads Open MPI's variables", "[dist]") {
  ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"},
                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  const LaunchInfo info = launch_info();
  CHECK(info.world_size == 4);
  CHECK(info.rank == 3);
  CHECK(info.local_rank == 1);
}

TEST_CASE("launch_info falls back to PMI and PMIx variables", "[dist]") {
  {
    ScopedLaunchEnv env({{"PMI_SIZE", "2"}, {"PMI_RANK", "1"}});
    const LaunchInfo info = launch_info();
    CHECK(info.world_size == 2);
    CHECK(info.rank == 1);
    CHECK(info.local_rank == 1);  // no local rank announced: one node
  }
  {
    ScopedLaunchEnv env({{"PMI_SIZE", "3"}, {"PMIX_RANK", "2"}, {"MPI_LOCALRANKID", "0"}});
    const LaunchInfo info = launch_info();
    CHECK(info.world_size == 3);
    CHECK(info.rank == 2);
    CHECK(info.local_rank == 0);
  }
}

TEST_CASE("launch_info rejects malformed or inconsistent variables", "[dist]") {
  {
    ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "0"}});
    REQUIRE_THROWS_WITH(launch_info(), Catch::Contains("OMPI_COMM_WORLD_SIZE='two'"));
  }
  {
    ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "2"}});
    REQUIRE_THROWS_WITH(launch_info(), Catch::Contains("rank 2 is out of range for a world size of 2"));
  }
  {
    ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "2"}});
    REQUIRE_THROWS_WITH(launch_info(), Catch::Contains("no rank"));
  }
  {
    ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "-1"}});
    REQUIRE_THROWS_WITH(launch_info(), Catch::Contains("OMPI_COMM_WORLD_RANK='-1'"));
  }
}

TEST_CASE("rank_device gives each local rank its own GPU", "[dist]") {
  const LaunchInfo one{};
  CHECK(rank_device("cpu", one) == Device::cpu());
  CHECK(rank_device("cuda", one) == Device::cuda(0));

  const LaunchInfo second{4, 3, 1};  // world 4, rank 3, local rank 1
  CHECK(rank_device("cpu", second) == Device::cpu());
  CHECK(rank_device("cuda:0", second) == Device::cuda(0));  // explicit: kept
  if (cuda::device_count() > 1) {
    CHECK(rank_device("cuda", second) == Device::cuda(1));
  } else {
    REQUIRE_THROWS_WITH(rank_device("cuda", second),
                        Catch::Contains("rank 3/4") && Catch::Contains("local rank 1") &&
                            Catch::Contains(std::to_string(cuda::device_count()) + " CUDA device(s)"));
  }
  REQUIRE_THROWS_WITH(rank_device("gpu", second), Catch::Contains("cannot parse 'gpu'"));
}

TEST_CASE("init_process_group without a launcher is the single group", "[dist]") {
  ScopedLaunchEnv env({});
  auto group = init_process_group(Device::cpu(), 10.0);
  REQUIRE(group != nullptr);
  CHECK(group->backend() == "single");
  CHECK(group->rank() == 0);
  CHECK(group->world_size() == 1);

  Tensor a = Tensor::from_vector(std::vector<float>{1.5f, -2.0f, 3.25f}, {3});
  Tensor b = Tensor::from_vector(std::vector<float>{7.0f}, {1, 1});
  group->all_reduce_sum({a, b}, "test gradients");
  CHECK(a.to_vector<float>() == std::vector<float>{1.5f, -2.0f, 3.25f});
  CHECK(b.to_vector<float>() == std::vector<float>{7.0f});
  CHECK(group->all_reduce_sum(std::vector<double>{2.5, 4.0}, "test scalars") == std::vector<double>{2.5, 4.0});
  CHECK(group->all_reduce_sum({3.0}, "braced scalars") == std::vector<double>{3.0});  // not ambiguous
  group->barrier("test barrier");

  REQUIRE_THROWS_WITH(init_process_group(Device::cpu(), 0.0), Catch::Contains("timeout_s must be positive"));
}

TEST_CASE("init_process_group names the backend a build lacks", "[dist]") {
  // Both errors come before MPI is initialized; the MPI path itself is checked
  // under mpirun by the mpi_selftest ctest entries.
  ScopedLaunchEnv env({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "1"}});
  if (!built_with_mpi()) {
    REQUIRE_THROWS_WITH(init_process_group(Device::cpu(), 10.0),
                        Catch::Contains("rank 1 of 2") &&
                            Catch::Contains("built without MPI (install libopenmpi-dev and rebuild)"));
  } else if (!built_with_nccl()) {
    REQUIRE_THROWS_WITH(init_process_group(Device::cuda(0), 10.0),
                        Catch::Contains("2 ranks on cuda:0 need NCCL"));
  }
}

TEST_CASE("plan_buckets cuts tensors into bounded consecutive buckets", "[dist]") {
  // Sizes 3, 0, 10, 2 with capacity 4: [t0 0..3, t2 0..1] [t2 1..5] [t2 5..9] [t2 9..10, t3 0..2]
  const auto buckets = plan_buckets({3, 0, 10, 2}, 4);
  REQUIRE(buckets.size() == 4);
  CHECK(buckets[0].count == 4);
  REQUIRE(buckets[0].pieces.size() == 2);
  CHECK(buckets[0].pieces[0].tensor == 0);
  CHECK(buckets[0].pieces[0].count == 3);
  CHECK(buckets[0].pieces[1].tensor == 2);
  CHECK(buckets[0].pieces[1].offset == 0);
  CHECK(buckets[0].pieces[1].count == 1);
  CHECK(buckets[1].pieces.size() == 1);
  CHECK(buckets[1].pieces[0].offset == 1);
  CHECK(buckets[2].pieces[0].offset == 5);
  REQUIRE(buckets[3].pieces.size() == 2);
  CHECK(buckets[3].count == 3);
  CHECK(buckets[3].pieces[0].offset == 9);
  CHECK(buckets[3].pieces[0].count == 1);
  CHECK(buckets[3].pieces[1].tensor == 3);
  CHECK(buckets[3].pieces[1].count == 2);

  // Every element is covered exactly once, in order.
  int64_t total = 0;
  for (const auto& b : plan_buckets({5, 7, 1, 0, 13}, 6)) {
    CHECK(b.count <= 6);
    int64_t sum = 0;
    for (const auto& p : b.pieces) sum += p.count;
    CHECK(sum == b.count);
    total += b.count;
  }
  CHECK(total == 26);
  CHECK(plan_buckets({}, 4).empty());
  CHECK(plan_buckets({0, 0}, 4).empty());
  REQUIRE_THROWS_WITH(plan_buckets({1}, 0), Catch::Contains("capacity must be positive"));
}

TEST_CASE("poll_until returns when done and gives up at the deadline", "[dist]") {
  int calls = 0;
  CHECK(poll_until([&] { return ++calls == 3; }, 5.0, Poll::backoff));
  CHECK(calls == 3);

  calls = 0;
  CHECK(poll_until([&] { return ++calls > 0; }, 0.0, Poll::spin));  // called once even without time

  for (Poll mode : {Poll::backoff, Poll::spin}) {
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(poll_until([] { return false; }, 0.1, mode));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(waited >= 0.1);
    CHECK(waited < 1.0);
  }
}

TEST_CASE("timeout_message names the rank, the call and the time", "[dist]") {
  CHECK(timeout_message(1, 2, "stage1 step 12 gradients", 30) ==
        "vlmc rank 1/2: stage1 step 12 gradients did not complete within 30 s: another rank failed or "
        "hangs; stopping the job");
}
