// train/sharded_optimizer.h in one process (tag [sharded_optimizer]): the
// ownership plan, the unsharded path equal to optim::AdamW bit for bit, and
// one rank's view of a two-process job through a fake group (its own share
// updated exactly as the whole AdamW would, the rest left to the broadcast,
// and the full state split on load). The real two-process job is in
// tests/cli/test_distributed_cli.cpp, the broadcast in tests/dist/mpi_selftest.cpp.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/random.h"
#include "dist/process_group.h"
#include "optim/adamw.h"
#include "train/sharded_optimizer.h"

using namespace vlmc;
using vlmc::train::plan_ownership;
using vlmc::train::ShardedOptimizer;

namespace {

// Rank `rank` of a pretend job of `size`: the collectives do nothing (no
// other rank exists), the broadcasts are recorded.
class FakeGroup final : public dist::ProcessGroup {
 public:
  FakeGroup(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "fake"; }
  void all_reduce_sum(const std::vector<Tensor>&, const std::string&) override {}
  std::unique_ptr<dist::Work> all_reduce_sum_start(const Tensor&, const std::string&) override {
    throw std::logic_error("not used");
  }
  std::vector<double> all_reduce_sum(const std::vector<double>& values, const std::string&) override {
    return values;
  }
  void broadcast(const std::vector<Tensor>& tensors, const std::vector<int>& owners,
                 const std::string& what) override {
    dist::check_broadcast(tensors, owners, size_, Device::cpu(), what, "fake");
    broadcasts.push_back({tensors, owners, what});
  }
  void barrier(const std::string&) override {}
  [[noreturn]] void abort(const std::string& message, int) override { throw std::runtime_error(message); }

  struct Call {
    std::vector<Tensor> tensors;
    std::vector<int> owners;
    std::string what;
  };
  std::vector<Call> broadcasts;

 private:
  int rank_, size_;
};

// Parameters in all four groups (decay, no_decay, and both at a prefix lr),
// one without a gradient in step 2, with gradients drawn per step.
struct Problem {
  std::vector<optim::NamedTensor> named;
  explicit Problem(uint64_t seed) {
    Generator gen(seed);
    const std::vector<std::pair<std::string, Shape>> shapes = {
        {"encoder.weight", {7, 5}},  {"encoder.bias", {7}},      {"norm.weight", {5}},
        {"connector.0.weight", {9, 3}}, {"connector.0.bias", {9}}, {"connector.2.weight", {4, 9}},
        {"head.weight", {33, 2}}};
    for (const auto& [name, shape] : shapes)
      named.push_back({name, Tensor::randn(shape, gen).set_requires_grad(true)});
  }
  std::vector<optim::ParamGroup> groups() const {
    optim::GroupingOptions o;
    o.lr = 1e-2;
    o.weight_decay = 0.1;
    o.lr_prefix = "connector.";
    o.prefix_lr = 3e-2;
    return optim::make_param_groups(named, o);
  }
  // The same gradients on every copy of the problem at a given step.
  void set_grads(int step) const {
    Generator gen(1000 + static_cast<uint64_t>(step));
    for (size_t i = 0; i < named.size(); ++i) {
      const Tensor g = Tensor::randn(named[i].tensor.shape(), gen);
      named[i].tensor.set_grad(step == 2 && i == 1 ? Tensor() : g);
    }
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

bool same_state(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [key, t] : a) {
    const auto it = b.find(key);
    if (it == b.end() || !same_bits(t, it->second)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("sharded optimizer: the ownership plan is deterministic and balanced", "[sharded_optimizer]") {
  const std::vector<int64_t> numels = {100, 10, 10, 50, 40, 1};
  // Each parameter in order to the least-loaded process, the lowest rank on a tie.
  CHECK(plan_ownership(numels, 2) == std::vector<int>{0, 1, 1, 1, 1, 0});
  CHECK(plan_ownership(numels, 2) == plan_ownership(numels, 2));
  CHECK(plan_ownership(numels, 1) == std::vector<int>(6, 0));
  CHECK(plan_ownership({5, 5}, 3) == std::vector<int>{0, 1});  // more processes than parameters
  CHECK(plan_ownership({}, 4).empty());

  // On a larger example no process is above the average by more than the largest parameter.
  std::vector<int64_t> many;
  for (int64_t i = 0; i < 200; ++i) many.push_back((i * 7919) % 1000 + 1);
  for (const int p : {2, 3, 8}) {
    const std::vector<int> owners = plan_ownership(many, p);
    std::vector<int64_t> load(static_cast<size_t>(p), 0);
    int64_t total = 0, largest = 0;
    for (size_t i = 0; i < many.size(); ++i) {
      REQUIRE(owners[i] >= 0);
      REQUIRE(owners[i] < p);
      load[owners[i]] += many[i];
      total += many[i];
      largest = std::max(largest, many[i]);
    }
    for (const int64_t l : load) {
      INFO(p << " processes: a load of " << l << ", total " << total);
      CHECK(l * p <= total + largest * p);
      CHECK(l > 0);
    }
  }
  REQUIRE_THROWS_WITH(plan_ownership({1}, 0), Catch::Contains("0 processes"));
}

TEST_CASE("sharded optimizer: one process equals the fused AdamW bit for bit", "[sharded_optimizer]") {
  auto single = dist::init_process_group(Device::cpu(), 10.0);
  REQUIRE(single->world_size() == 1);
  struct Setup {
    const char* what;
    dist::ProcessGroup* group;
    int zero_stage;
  };
  for (const Setup& setup : {Setup{"no group, stage 0", nullptr, 0}, Setup{"no group, stage 1", nullptr, 1},
                             Setup{"single group, stage 1", single.get(), 1}}) {
    INFO(setup.what);
    Problem a(7), b(7);
    optim::AdamW reference(a.groups(), /*fused=*/true);
    ShardedOptimizer sharded(b.groups(), setup.group, setup.zero_stage);
    CHECK_FALSE(sharded.sharded());
    CHECK(sharded.owners() == std::vector<int>(b.named.size(), 0));
    const Tensor coef = Tensor::from_vector(std::vector<float>{0.75f}, Shape{1});
    for (int step = 0; step < 4; ++step) {
      const double multiplier = 1.0 - 0.2 * step;
      reference.set_lr_multiplier(multiplier);
      sharded.set_lr_multiplier(multiplier);
      a.set_grads(step);
      b.set_grads(step);
      reference.step(step % 2 ? coef : Tensor());
      sharded.step(step % 2 ? coef : Tensor(), "test step");
      reference.zero_grad();
      sharded.zero_grad();
    }
    for (size_t i = 0; i < a.named.size(); ++i) {
      INFO(a.named[i].name);
      CHECK(same_bits(a.named[i].tensor, b.named[i].tensor));
      CHECK_FALSE(b.named[i].tensor.grad().defined());
    }
    const auto state = sharded.state_dict("test state");
    CHECK(same_state(reference.state_dict(), state));

    // Loading a state into a fresh one and stepping once more stays equal.
    Problem c(7);
    ShardedOptimizer resumed(c.groups(), setup.group, setup.zero_stage);
    resumed.load_state_dict(state);
    resumed.set_lr_multiplier(1.0 - 0.2 * 3);  // the schedule's, as the trainer sets it every step
    {
      NoGradGuard no_grad;
      for (size_t i = 0; i < c.named.size(); ++i) c.named[i].tensor.copy_(b.named[i].tensor);
    }
    a.set_grads(9);
    c.set_grads(9);
    reference.step();
    resumed.step(Tensor(), "test step");
    for (size_t i = 0; i < a.named.size(); ++i) CHECK(same_bits(a.named[i].tensor, c.named[i].tensor));
  }
}

TEST_CASE("sharded optimizer: one rank of two updates its share as the whole AdamW would", "[sharded_optimizer]") {
  Problem whole(3), part(3);
  optim::AdamW reference(whole.groups(), /*fused=*/true);
  FakeGroup rank1(1, 2);
  ShardedOptimizer sharded(part.groups(), &rank1, 1);
  REQUIRE(sharded.sharded());
  // The plan is over the parameters in group order (decay, no_decay, prefix decay, prefix no_decay).
  std::vector<Tensor> in_group_order;
  for (const optim::ParamGroup& g : part.groups())
    for (const Tensor& p : g.params) in_group_order.push_back(p);
  std::vector<int64_t> group_numels;
  for (const Tensor& p : in_group_order) group_numels.push_back(p.numel());
  const std::vector<int> owners = plan_ownership(group_numels, 2);
  CHECK(sharded.owners() == owners);
  // Every group kept, with its lr, even when this rank owns none of its parameters.
  REQUIRE(sharded.local().groups().size() == reference.groups().size());
  CHECK(sharded.local().base_lrs() == reference.base_lrs());
  size_t owned = 0;
  for (const optim::ParamGroup& g : sharded.local().groups()) owned += g.params.size();
  CHECK(owned == static_cast<size_t>(std::count(owners.begin(), owners.end(), 1)));
  CHECK(owned > 0);
  CHECK(owned < owners.size());

  std::vector<Tensor> before;
  for (const Tensor& p : in_group_order) before.push_back(p.clone());
  reference.set_lr_multiplier(0.5);
  sharded.set_lr_multiplier(0.5);
  whole.set_grads(0);
  part.set_grads(0);
  reference.step();
  sharded.step(Tensor(), "stage1 step 1 parameters");
  std::vector<Tensor> whole_order;
  for (const optim::ParamGroup& g : reference.groups())
    for (const Tensor& p : g.params) whole_order.push_back(p);
  for (size_t k = 0; k < in_group_order.size(); ++k) {
    INFO("parameter " << k << " owned by " << owners[k]);
    // Its own: the whole AdamW's bits; the others': untouched until the broadcast brings them.
    CHECK(same_bits(in_group_order[k], owners[k] == 1 ? whole_order[k] : before[k]));
  }
  REQUIRE(rank1.broadcasts.size() == 1);
  CHECK(rank1.broadcasts[0].owners == owners);
  CHECK(rank1.broadcasts[0].what == "stage1 step 1 parameters");
  REQUIRE(rank1.broadcasts[0].tensors.size() == in_group_order.size());
  for (size_t k = 0; k < in_group_order.size(); ++k)
    CHECK(&rank1.broadcasts[0].tensors[k].impl() == &in_group_order[k].impl());
  sharded.zero_grad();
  for (const Tensor& p : in_group_order) CHECK_FALSE(p.grad().defined());

  // The full state of the whole AdamW: this rank keeps its own entries, renumbered.
  const std::map<std::string, Tensor> full = reference.state_dict();
  sharded.load_state_dict(full);
  const std::map<std::string, Tensor> local = sharded.local().state_dict();
  CHECK(local.size() == 3 * owned);
  size_t j = 0;
  for (size_t k = 0; k < owners.size(); ++k) {
    if (owners[k] != 1) continue;
    for (const char* name : {"step", "exp_avg", "exp_avg_sq"}) {
      INFO("parameter " << k << " " << name);
      CHECK(same_bits(local.at("state." + std::to_string(j) + "." + name),
                      full.at("state." + std::to_string(k) + "." + name)));
    }
    ++j;
  }

  // The whole dict is checked on every rank, also the entries of other owners.
  size_t other = 0;
  while (owners[other] == 1) ++other;
  std::map<std::string, Tensor> wrong_shape = full;
  wrong_shape["state." + std::to_string(other) + ".exp_avg"] = Tensor::zeros({1, 2, 3});
  REQUIRE_THROWS_WITH(sharded.load_state_dict(wrong_shape),
                      Catch::Contains("state." + std::to_string(other) + ".exp_avg") &&
                          Catch::Contains("does not match"));
  std::map<std::string, Tensor> extra = full;
  extra["state.99.step"] = Tensor::from_vector(std::vector<int64_t>{1}, Shape{});
  REQUIRE_THROWS_WITH(sharded.load_state_dict(extra), Catch::Contains("1 entries name no parameter"));
  std::map<std::string, Tensor> incomplete = full;
  incomplete.erase("state." + std::to_string(other) + ".exp_avg_sq");
  REQUIRE_THROWS_WITH(sharded.load_state_dict(incomplete), Catch::Contains("incomplete"));
}

TEST_CASE("sharded optimizer: bad settings and broadcast arguments are refused", "[sharded_optimizer]") {
  Problem p(1);
  REQUIRE_THROWS_WITH(ShardedOptimizer(p.groups(), nullptr, 2), Catch::Contains("run.zero_stage must be 0 or 1"));
  auto single = dist::init_process_group(Device::cpu(), 10.0);
  const std::vector<Tensor> tensors = {Tensor::zeros({3}), Tensor::zeros({2})};
  CHECK_NOTHROW(single->broadcast(tensors, {0, 0}, "test"));
  REQUIRE_THROWS_WITH(single->broadcast(tensors, {0}, "test call"),
                      Catch::Contains("test call") && Catch::Contains("2 tensors but 1 owners"));
  REQUIRE_THROWS_WITH(single->broadcast(tensors, {0, 1}, "test call"),
                      Catch::Contains("tensor 1's owner 1 is not a rank"));
  REQUIRE_THROWS_WITH(single->broadcast({Tensor::zeros({2}, DType::f64)}, {0}, "test call"),
                      Catch::Contains("expected f32"));
}
