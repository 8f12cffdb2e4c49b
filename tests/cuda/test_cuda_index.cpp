// CUDA against CPU for the joining, splitting and indexing ops: f32 forward
// and gradients on fresh random inputs, odd shapes, one element and > 64K
// elements; index tensors on the host and on the device; index range errors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;

namespace {

using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&, Device)>;

const Device kGpu = Device::cuda(0);

Tensor random(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen);
}

// Values in [0, bound), with repeats whenever numel > bound.
Tensor random_index(const Shape& shape, int64_t bound, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, bound - 1);
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  for (int64_t& x : v) x = pick(rng);
  return Tensor::from_vector(v, shape);
}

Tensor random_mask(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(shape_numel(shape)));
  for (uint8_t& x : v) x = static_cast<uint8_t>(rng() % 3 == 0 ? 0 : 1 + rng() % 200);
  return Tensor::from_vector(v, shape);
}

// fn on CPU copies and on CUDA copies of the inputs (each a leaf that
// requires grad); the same random output gradient goes back through both.
void compare(const Fn& fn, const Inputs& inputs, uint64_t seed) {
  Inputs cpu, gpu;
  for (const Tensor& t : inputs) {
    Tensor c = t.detach().clone();
    c.set_requires_grad(true);
    cpu.push_back(c);
    Tensor g = t.detach().to(kGpu);
    g.set_requires_grad(true);
    gpu.push_back(g);
  }
  const Tensor out_c = fn(cpu, Device::cpu());
  const Tensor out_g = fn(gpu, kGpu);
  REQUIRE(out_g.device() == kGpu);
  REQUIRE(out_g.shape() == out_c.shape());
  CHECK_REL(out_g, out_c, 1e-5);
  const Tensor grad = random(out_c.shape(), seed);
  out_c.backward(grad);
  out_g.backward(grad.to(kGpu));
  for (size_t i = 0; i < inputs.size(); ++i) {
    INFO("gradient of input " << i << " " << describe(inputs[i]));
    REQUIRE(gpu[i].grad().defined());
    CHECK(gpu[i].grad().device() == kGpu);
    CHECK_REL(gpu[i].grad(), cpu[i].grad(), 1e-5);
  }
}

// An index moved to the op's device, or left on the host (the CUDA op then
// validates it there and copies it over).
Tensor place(const Tensor& index, Device device, bool on_host) { return on_host ? index : index.to(device); }

}  // namespace

TEST_CASE("cuda cat, stack and split match the CPU", "[cuda][index]") {
  struct Case {
    std::vector<Shape> shapes;
    int64_t dim;
  };
  const std::vector<Case> cases = {
      {{{1}, {1}}, 0},
      {{{37, 5}, {37, 1}, {37, 11}}, 1},
      {{{300, 257}, {100, 257}}, 0},  // 102,800 elements
      {{{3, 7, 2}, {3, 1, 2}}, -2},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    Inputs inputs;
    for (const Shape& s : c.shapes) inputs.push_back(random(s, seed++));
    const int64_t dim = c.dim;
    compare([dim](const Inputs& in, Device) { return cat(in, dim); }, inputs, seed++);
  }
  // Non-contiguous inputs.
  compare([](const Inputs& in, Device) { return cat({in[0].transpose(0, 1), in[1]}, 0); },
          {random({5, 301}, 20), random({2, 5}, 21)}, 22);
  compare([](const Inputs& in, Device) { return stack({in[0], in[1].transpose(0, 1), in[0]}, 1); },
          {random({17, 3}, 23), random({3, 17}, 24)}, 25);
  compare([](const Inputs& in, Device) { return stack({in[0], in[1]}, 0); }, {random({70000}, 26), random({70000}, 27)},
          28);
  compare(
      [](const Inputs& in, Device) {
        const std::vector<Tensor> p = split(in[0], 3, 1);
        return cat({p[2], p[0], p[1]}, 1);
      },
      {random({129, 7}, 29)}, 30);
  compare(
      [](const Inputs& in, Device) {
        const std::vector<Tensor> p = split(in[0], std::vector<int64_t>{1, 200, 56}, 0);
        return cat({p[1], p[2]}, 0);
      },
      {random({257, 300}, 31)}, 32);
}

TEST_CASE("cuda index_select matches the CPU", "[cuda][index]") {
  struct Case {
    Shape x;
    int64_t dim;
    int64_t n;
  };
  const std::vector<Case> cases = {
      {{1}, 0, 1},
      {{37, 5, 3}, 1, 11},
      {{300, 257}, 0, 513},     // 131,841 output elements, many repeats
      {{3, 1000, 65}, 1, 400},  // odd inner size
      {{7, 9}, -1, 1},
  };
  uint64_t seed = 100;
  for (const bool on_host : {false, true}) {
    for (const Case& c : cases) {
      INFO("x " << shape_str(c.x) << " dim " << c.dim << " n " << c.n << (on_host ? " host index" : " device index"));
      const Tensor x = random(c.x, seed++);
      const Tensor index = random_index({c.n}, x.size(c.dim), seed++);
      const int64_t dim = c.dim;
      compare([&](const Inputs& in, Device d) { return index_select(in[0], dim, place(index, d, on_host)); }, {x},
              seed++);
    }
  }
  // Non-contiguous x.
  const Tensor index = random_index({99}, 40, 150);
  compare([&](const Inputs& in, Device d) { return index_select(in[0].transpose(0, 1), 0, index.to(d)); },
          {random({33, 40}, 151)}, 152);
  // Integer elements move unchanged.
  const Tensor ids = random_index({1000, 3}, 1 << 30, 153);
  const Tensor pick = random_index({70001}, 1000, 154);
  CHECK(index_select(ids.to(kGpu), 0, pick.to(kGpu)).to_vector<int64_t>() ==
        index_select(ids, 0, pick).to_vector<int64_t>());
}

TEST_CASE("cuda gather matches the CPU", "[cuda][index]") {
  struct Case {
    Shape x;
    Shape index;
    int64_t dim;
  };
  const std::vector<Case> cases = {
      {{1}, {1}, 0},
      {{7, 9}, {7, 13}, 1},
      {{300, 300}, {257, 300}, 0},  // 77,100 elements
      {{4, 5, 6}, {4, 3, 6}, 1},
      {{3, 4, 5}, {2, 4, 7}, -1},   // index smaller than x in dim 0
      {{2, 70000}, {2, 40000}, 1},  // 80,000 elements
  };
  uint64_t seed = 200;
  for (const bool on_host : {false, true}) {
    for (const Case& c : cases) {
      INFO("x " << shape_str(c.x) << " index " << shape_str(c.index) << " dim " << c.dim);
      const Tensor x = random(c.x, seed++);
      const Tensor index = random_index(c.index, x.size(c.dim), seed++);
      const int64_t dim = c.dim;
      compare([&](const Inputs& in, Device d) { return gather(in[0], dim, place(index, d, on_host)); }, {x}, seed++);
    }
  }
  const Tensor index = random_index({20, 31}, 40, 250);
  compare([&](const Inputs& in, Device d) { return gather(in[0].transpose(0, 1), 1, index.to(d)); },
          {random({40, 31}, 251)}, 252);
  const Tensor ids = random_index({65, 1100}, 1 << 30, 253);
  const Tensor pick = random_index({65, 1100}, 1100, 254);
  CHECK(gather(ids.to(kGpu), 1, pick.to(kGpu)).to_vector<int64_t>() == gather(ids, 1, pick).to_vector<int64_t>());
}

TEST_CASE("cuda where and masked_fill match the CPU", "[cuda][index]") {
  struct Case {
    Shape cond, a, b;
  };
  const std::vector<Case> cases = {
      {{1}, {1}, {1}},
      {{37, 1}, {1, 5}, {37, 5}},
      {{256, 300}, {300}, {}},  // 76,800 elements
      {{2, 1, 9}, {3, 1}, {2, 3, 9}},
  };
  uint64_t seed = 300;
  for (const Case& c : cases) {
    INFO("cond " << shape_str(c.cond) << " a " << shape_str(c.a) << " b " << shape_str(c.b));
    const Tensor cond = random_mask(c.cond, seed++);
    compare([&](const Inputs& in, Device d) { return where(cond.to(d), in[0], in[1]); },
            {random(c.a, seed++), random(c.b, seed++)}, seed++);
  }
  const Tensor cond = random_mask({11, 13}, 350);
  compare([&](const Inputs& in, Device d) { return where(cond.to(d), in[0].transpose(0, 1), in[1]); },
          {random({13, 11}, 351), random({13}, 352)}, 353);

  struct FillCase {
    Shape x, mask;
  };
  const std::vector<FillCase> fills = {
      {{1}, {1}}, {{37, 5}, {5}}, {{37, 5}, {37, 1}}, {{300, 257}, {300, 257}}, {{4, 3, 7}, {1, 3, 1}}};
  for (const FillCase& c : fills) {
    INFO("x " << shape_str(c.x) << " mask " << shape_str(c.mask));
    const Tensor mask = random_mask(c.mask, seed++);
    compare([&](const Inputs& in, Device d) { return masked_fill(in[0], mask.to(d), -1e4); }, {random(c.x, seed++)},
            seed++);
  }
  const Tensor mask = random_mask({9}, 360);
  compare([&](const Inputs& in, Device d) { return masked_fill(in[0].transpose(0, 1), mask.to(d), 2.5); },
          {random({9, 65}, 361)}, 362);

  // Integer tensors and an infinite fill.
  const Tensor labels = random_index({70001}, 1000, 370);
  const Tensor m = random_mask({70001}, 371);
  CHECK(masked_fill(labels.to(kGpu), m.to(kGpu), -100).to_vector<int64_t>() ==
        masked_fill(labels, m, -100).to_vector<int64_t>());
  CHECK(where(m.to(kGpu), labels.to(kGpu), Tensor::full({}, -100, DType::i64, kGpu)).to_vector<int64_t>() ==
        where(m, labels, Tensor::full({}, -100, DType::i64)).to_vector<int64_t>());
  CHECK(masked_fill(Tensor::zeros({3}, DType::f32, kGpu), Tensor::ones({1}, DType::u8, kGpu), -INFINITY)
            .to_vector<float>()[2] == -INFINITY);
}

TEST_CASE("cuda index range errors", "[cuda][index]") {
  const Tensor x = Tensor::zeros({4, 70000}, DType::f32, kGpu);
  std::vector<int64_t> picks(5000, 3);
  picks[4321] = 70000;
  picks[4500] = -2;
  const Tensor bad = Tensor::from_vector(picks, {1, 5000});
  // On the device: checked there without a wait, the first bad position and
  // its value reported at the next synchronising read.
  const Tensor gathered = gather(x, 1, bad.to(kGpu));
  REQUIRE_THROWS_WITH(gathered.to_vector<float>(),
                      Contains("gather: index 70000 is out of range for dim 1 of size 70000"));
  (void)index_select(x, 1, bad.view({5000}).to(kGpu));
  REQUIRE_THROWS_WITH(cuda::synchronize(0), Contains("index_select: index 70000 is out of range for dim 1 of size 70000"));
  const Tensor selected = index_select(x, 0, bad.view({5000}).to(kGpu));
  REQUIRE_THROWS_WITH(selected.to_vector<float>(),
                      Contains("index_select: index 70000 is out of range for dim 0 of size 4"));
  // On the host: checked before the copy.
  REQUIRE_THROWS_WITH(gather(x, 1, bad), Contains("gather: index 70000 is out of range for dim 1 of size 70000"));
  REQUIRE_THROWS_WITH(index_select(x, 0, Tensor::from_vector(std::vector<int64_t>{0, -1}, {2})),
                      Contains("index_select: index -1 is out of range for dim 0 of size 4"));
  // An index on the GPU for a CPU x is refused.
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros({4}), 0, Tensor::zeros({1}, DType::i64, kGpu)),
                      Contains("index_select: index on cuda:0 but x on cpu"));
  REQUIRE_THROWS_WITH(where(Tensor::ones({1}, DType::u8), x, x), Contains("where: tensors on cpu and cuda:0"));
  REQUIRE_THROWS_WITH(masked_fill(x, Tensor::ones({1}, DType::u8), 0), Contains("masked_fill: tensors on cuda:0 and cpu"));
  REQUIRE_THROWS_WITH(cat({x, Tensor::zeros({4, 70000})}, 0), Contains("cat: tensor 1 f32 [4,70000] on cpu is on cpu"));
  // Nothing was left broken on the stream.
  const Tensor ok = Tensor::from_vector(std::vector<int64_t>{3, 0}, {2}).to(kGpu);
  CHECK(index_select(Tensor::arange(4, DType::f32, kGpu), 0, ok).to_vector<float>() == std::vector<float>{3, 0});
}
