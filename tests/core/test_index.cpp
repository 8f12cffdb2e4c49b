// Joining, splitting and indexing ops (core/ops/index.cpp): values on small
// hand-checked examples, f64 finite-difference gradients, error messages.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "core/ops.h"
#include "core/threads.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;
using test::leaf;

namespace {

using Values = std::vector<double>;
using Inputs = std::vector<Tensor>;

Values values(const Tensor& t) { return t.to_vector<double>(); }

Tensor f32(const std::vector<float>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
Tensor i64(const std::vector<int64_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
Tensor u8(const std::vector<uint8_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }

// 0, 1, 2, ... as f32 in the given shape.
Tensor iota(const Shape& shape) { return Tensor::arange(shape_numel(shape), DType::f32).view(shape); }

}  // namespace

// ---- cat / stack / split ----------------------------------------------------------

TEST_CASE("cat joins along a dim", "[index]") {
  const Tensor a = f32({1, 2, 3, 4}, {2, 2});
  const Tensor b = f32({5, 6}, {2, 1});
  const Tensor c1 = cat({a, b}, 1);
  CHECK(c1.shape() == Shape{2, 3});
  CHECK(values(c1) == Values{1, 2, 5, 3, 4, 6});
  CHECK(values(cat({a, b}, -1)) == values(c1));

  const Tensor c0 = cat({f32({9, 8}, {1, 2}), a}, 0);
  CHECK(c0.shape() == Shape{3, 2});
  CHECK(values(c0) == Values{9, 8, 1, 2, 3, 4});

  // A non-contiguous input, an empty one and a single one.
  CHECK(values(cat({a.transpose(0, 1), b.view({1, 2})}, 0)) == Values{1, 3, 2, 4, 5, 6});
  CHECK(values(cat({a, Tensor::empty({0, 2})}, 0)) == values(a));
  const Tensor single = cat({a}, 0);
  CHECK(values(single) == values(a));
  CHECK_FALSE(single.storage() == a.storage());  // a new tensor, not a view

  // Other dtypes are moved unchanged.
  const Tensor ints = cat({i64({1, 2}, {2}), i64({-100}, {1})}, 0);
  CHECK(ints.dtype() == DType::i64);
  CHECK(ints.to_vector<int64_t>() == std::vector<int64_t>{1, 2, -100});
}

TEST_CASE("cat gradients", "[index]") {
  CHECK_GRADIENTS([](const Inputs& in) { return cat({in[0], in[1], in[2]}, 1); },
                  {leaf({2, 3}, 1), leaf({2, 1}, 2), leaf({2, 4}, 3)});
  // Non-contiguous inputs, a negative dim, one input used twice, one frozen.
  const Tensor frozen = Tensor::randn({4, 2}, DType::f64);
  CHECK_GRADIENTS(
      [frozen](const Inputs& in) { return cat({in[0].transpose(0, 1), frozen, in[1], in[0].transpose(0, 1)}, -1); },
      {leaf({3, 4}, 4), leaf({4, 1}, 5)});
  CHECK_GRADIENTS([](const Inputs& in) { return cat({in[0].narrow(0, 1, 2), in[1]}, 0); },
                  {leaf({4, 3}, 6), leaf({1, 3}, 7)});
}

TEST_CASE("cat errors", "[index]") {
  const Tensor a = Tensor::zeros({3, 4});
  REQUIRE_THROWS_WITH(cat({}, 0), Contains("cat: expected at least one tensor"));
  REQUIRE_THROWS_WITH(cat({a, a, Tensor::zeros({2, 5})}, 0),
                      Contains("cat: tensor 2 has shape [2,5] but tensor 0 has [3,4]"));
  REQUIRE_THROWS_WITH(cat({a, Tensor::zeros({3, 4, 1})}, 0), Contains("cat: tensor 1 has shape [3,4,1]"));
  REQUIRE_THROWS_WITH(cat({a, Tensor::zeros({3, 4}, DType::f64)}, 0),
                      Contains("cat: tensor 1 f64 [3,4] on cpu has dtype f64 but tensor 0"));
  REQUIRE_THROWS_WITH(cat({Tensor::scalar(1), Tensor::scalar(2)}, 0), Contains("cat: tensor 0 f32 [] on cpu is a scalar"));
  REQUIRE_THROWS_WITH(cat({a, a}, 2), Contains("cat: dim 2 is out of range"));
  REQUIRE_THROWS_WITH(cat({a, Tensor()}, 0), Contains("cat: tensor 1 is undefined"));
}

TEST_CASE("stack adds a dim", "[index]") {
  const Tensor a = f32({1, 2, 3}, {3});
  const Tensor b = f32({4, 5, 6}, {3});
  const Tensor s0 = stack({a, b}, 0);
  CHECK(s0.shape() == Shape{2, 3});
  CHECK(values(s0) == Values{1, 2, 3, 4, 5, 6});
  const Tensor s1 = stack({a, b}, -1);
  CHECK(s1.shape() == Shape{3, 2});
  CHECK(values(s1) == Values{1, 4, 2, 5, 3, 6});

  CHECK_GRADIENTS([](const Inputs& in) { return stack({in[0], in[1].transpose(0, 1)}, 1); },
                  {leaf({2, 3}, 8), leaf({3, 2}, 9)});

  REQUIRE_THROWS_WITH(stack({a, f32({1, 2}, {2})}, 0),
                      Contains("stack: tensor 1 has shape [2] but tensor 0 has [3]; all shapes must be equal"));
  REQUIRE_THROWS_WITH(stack({a, b}, 2), Contains("stack: dim 2 is out of range"));
  REQUIRE_THROWS_WITH(stack({}, 0), Contains("stack: expected at least one tensor"));
}

TEST_CASE("split returns views", "[index]") {
  const Tensor x = iota({5, 2});
  const std::vector<Tensor> parts = split(x, 2, 0);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{2, 2});
  CHECK(parts[2].shape() == Shape{1, 2});
  CHECK(values(parts[1]) == Values{4, 5, 6, 7});
  CHECK(values(parts[2]) == Values{8, 9});
  for (const Tensor& p : parts) CHECK(p.storage() == x.storage());
  CHECK(parts[1].offset() == 4);

  const std::vector<Tensor> cols = split(x, std::vector<int64_t>{1, 0, 1}, -1);
  REQUIRE(cols.size() == 3);
  CHECK(values(cols[0]) == Values{0, 2, 4, 6, 8});
  CHECK(cols[1].shape() == Shape{5, 0});
  CHECK(values(cols[2]) == Values{1, 3, 5, 7, 9});
  CHECK(cols[2].storage() == x.storage());

  CHECK(split(x, 7, 0).size() == 1);
  CHECK(split(Tensor::zeros({0, 3}), 0, 0).size() == 1);
}

TEST_CASE("split gradients", "[index]") {
  // Recombine the parts out of order: the gradient of each goes back through narrow.
  CHECK_GRADIENTS(
      [](const Inputs& in) {
        const std::vector<Tensor> p = split(in[0], 2, 1);
        return cat({p[2], p[0], p[1]}, 1);
      },
      {leaf({3, 5}, 10)});
  CHECK_GRADIENTS(
      [](const Inputs& in) {
        const std::vector<Tensor> p = split(in[0].transpose(0, 1), std::vector<int64_t>{3, 1}, 0);
        return cat({p[1], p[0]}, 0);
      },
      {leaf({2, 4}, 11)});
  // Only one part used: the other rows get zero gradient.
  CHECK_GRADIENTS([](const Inputs& in) { return split(in[0], std::vector<int64_t>{1, 2}, 0)[1]; },
                  {leaf({3, 2}, 12)});
}

TEST_CASE("split errors", "[index]") {
  const Tensor x = Tensor::zeros({4, 6});
  REQUIRE_THROWS_WITH(split(x, std::vector<int64_t>{2, 3}, 1),
                      Contains("split: sizes [2,3] sum to 5 but dim 1 of f32 [4,6] on cpu has size 6"));
  REQUIRE_THROWS_WITH(split(x, std::vector<int64_t>{5, -1}, 0), Contains("split: negative size in [5,-1]"));
  REQUIRE_THROWS_WITH(split(x, 0, 0), Contains("split: split_size must be positive, got 0"));
  REQUIRE_THROWS_WITH(split(x, 2, 2), Contains("split: dim 2 is out of range"));
  REQUIRE_THROWS_WITH(split(Tensor::scalar(1), 1, 0), Contains("split: cannot split the scalar"));
}

// ---- index_select -----------------------------------------------------------------

TEST_CASE("index_select picks slices", "[index]") {
  const Tensor x = iota({3, 2});  // [[0,1],[2,3],[4,5]]
  const Tensor rows = index_select(x, 0, i64({2, 0, 2}, {3}));
  CHECK(rows.shape() == Shape{3, 2});
  CHECK(values(rows) == Values{4, 5, 0, 1, 4, 5});
  CHECK(values(index_select(x, 1, i64({1}, {1}))) == Values{1, 3, 5});
  CHECK(index_select(x, 0, i64({}, {0})).shape() == Shape{0, 2});

  // Middle dim of a 3-D tensor, and a non-contiguous x.
  const Tensor y = iota({2, 3, 2});
  CHECK(values(index_select(y, 1, i64({2, 2, 0}, {3}))) == Values{4, 5, 4, 5, 0, 1, 10, 11, 10, 11, 6, 7});
  CHECK(values(index_select(x.transpose(0, 1), 1, i64({1, 0}, {2}))) == Values{2, 0, 3, 1});
  // A strided index and other dtypes.
  CHECK(values(index_select(x, 0, i64({2, 9, 1, 9}, {2, 2}).select(1, 0))) == Values{4, 5, 2, 3});
  const Tensor ids = i64({10, 11, 12, 13}, {4});
  CHECK(index_select(ids, -1, i64({3, 3, 0}, {3})).to_vector<int64_t>() == std::vector<int64_t>{13, 13, 10});
}

TEST_CASE("index_select gradients accumulate over repeated indices", "[index]") {
  const Tensor rep = i64({2, 0, 2, 2, 1}, {5});
  CHECK_GRADIENTS([rep](const Inputs& in) { return index_select(in[0], 0, rep); }, {leaf({3, 4}, 20)});
  CHECK_GRADIENTS([rep](const Inputs& in) { return index_select(in[0], 1, rep); }, {leaf({2, 3, 2}, 21)});
  CHECK_GRADIENTS([rep](const Inputs& in) { return index_select(in[0], -1, rep); }, {leaf({2, 3}, 22)});
  // Non-contiguous x.
  CHECK_GRADIENTS([rep](const Inputs& in) { return index_select(in[0].transpose(0, 1), 0, rep); },
                  {leaf({4, 3}, 23)});

  // Exact accumulation: every selected element's gradient counts once per pick.
  Tensor x = Tensor::zeros({3, 2}, DType::f64);
  x.set_requires_grad(true);
  index_select(x, 0, rep).backward(Tensor::ones({5, 2}, DType::f64));
  CHECK(values(x.grad()) == Values{1, 1, 1, 1, 3, 3});
}

TEST_CASE("index_select backward does not depend on the thread count", "[index]") {
  // Large enough to run in parallel; many repeats so the summation order matters.
  Generator gen(7);
  const Tensor x0 = Tensor::randn({16, 50, 70}, gen);
  std::vector<int64_t> picks;
  for (int64_t i = 0; i < 400; ++i) picks.push_back((i * 37) % 50 / 5);
  const Tensor index = i64(picks, {400});
  const Tensor g = Tensor::randn({16, 400, 70}, gen);

  auto run = [&](int threads) {
    set_num_threads(threads);
    Tensor x = x0.detach().clone();
    x.set_requires_grad(true);
    index_select(x, 1, index).backward(g);
    return x.grad().to_vector<float>();
  };
  const int saved = num_threads();
  const std::vector<float> one = run(1), two = run(2);
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("index_select backward over rows narrower than a chunk: each row sums its picks in order, on any thread count", "[index][threads]") {
  // An embedding's gradient: outer 1, rows of 128 (narrower than a chunk), 600 picks of 50 rows.
  Generator gen(8);
  const Tensor x0 = Tensor::randn({50, 128}, gen);
  std::vector<int64_t> picks;
  for (int64_t i = 0; i < 600; ++i) picks.push_back((i * 37) % 50);
  const Tensor index = i64(picks, {600});
  const Tensor g = Tensor::randn({600, 128}, gen);
  // Each row's gradient: the picks' rows of g added in pick order, from zero.
  const std::vector<float> gv = g.to_vector<float>();
  std::vector<float> expected(50 * 128, 0.0f);
  for (size_t i = 0; i < picks.size(); ++i)
    for (size_t k = 0; k < 128; ++k) expected[static_cast<size_t>(picks[i]) * 128 + k] += gv[i * 128 + k];
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor x = x0.detach().clone();
    x.set_requires_grad(true);
    index_select(x, 0, index).backward(g);
    CHECK(x.grad().to_vector<float>() == expected);
  }
  set_num_threads(saved);
}

TEST_CASE("index_select errors", "[index]") {
  const Tensor x = Tensor::zeros({2, 5});
  REQUIRE_THROWS_WITH(index_select(x, 1, i64({0, 7}, {2})),
                      Contains("index_select: index 7 is out of range for dim 1 of size 5"));
  REQUIRE_THROWS_WITH(index_select(x, 0, i64({-1}, {1})),
                      Contains("index_select: index -1 is out of range for dim 0 of size 2"));
  REQUIRE_THROWS_WITH(index_select(x, 0, f32({0}, {1})), Contains("index_select: index f32 [1] on cpu must be i64"));
  REQUIRE_THROWS_WITH(index_select(x, 0, i64({0, 1}, {1, 2})), Contains("index_select: index i64 [1,2] on cpu must be 1-D"));
  REQUIRE_THROWS_WITH(index_select(x, 2, i64({0}, {1})), Contains("index_select: dim 2 is out of range"));
  REQUIRE_THROWS_WITH(index_select(Tensor::scalar(1), 0, i64({0}, {1})), Contains("index_select: x f32 [] on cpu is a scalar"));
}

// ---- gather -------------------------------------------------------------------------

TEST_CASE("gather follows torch.gather", "[index]") {
  const Tensor t = f32({1, 2, 3, 4}, {2, 2});
  // torch.gather(t, 1, [[0,0],[1,0]]) = [[1,1],[4,3]]
  CHECK(values(gather(t, 1, i64({0, 0, 1, 0}, {2, 2}))) == Values{1, 1, 4, 3});
  // dim 0: out[i][j] = t[index[i][j]][j]
  CHECK(values(gather(t, 0, i64({1, 0, 1, 1, 0, 0}, {3, 2}))) == Values{3, 2, 3, 4, 1, 2});
  // An index smaller than x in the other dim reads only its own columns.
  const Tensor x = iota({3, 4});
  const Tensor g = gather(x, 0, i64({2, 1, 0}, {1, 3}));
  CHECK(g.shape() == Shape{1, 3});
  CHECK(values(g) == Values{8, 5, 2});
  // Non-contiguous x: xt = x^T [4,3], xt[i][index[i][j]].
  CHECK(values(gather(x.transpose(0, 1), 1, i64({2, 0, 1, 1}, {2, 2}))) == Values{8, 0, 5, 5});
  // 3-D, last dim, and an integer x.
  const Tensor y = iota({2, 2, 3});
  CHECK(values(gather(y, -1, i64({2, 1, 0, 0, 1, 1, 2, 2}, {2, 2, 2}))) == Values{2, 1, 3, 3, 7, 7, 11, 11});
  CHECK(gather(i64({5, 6, 7}, {3}), 0, i64({2, 2}, {2})).to_vector<int64_t>() == std::vector<int64_t>{7, 7});
}

TEST_CASE("gather gradients accumulate over repeated indices", "[index]") {
  const Tensor i1 = i64({0, 2, 2, 1, 1, 1, 0, 0}, {2, 4});
  CHECK_GRADIENTS([i1](const Inputs& in) { return gather(in[0], 1, i1); }, {leaf({2, 3}, 30)});
  const Tensor i0 = i64({2, 0, 1, 2, 2, 2}, {3, 2});
  CHECK_GRADIENTS([i0](const Inputs& in) { return gather(in[0], 0, i0); }, {leaf({3, 3}, 31)});
  // Non-contiguous x, and an index smaller than x along the other dims.
  CHECK_GRADIENTS([i0](const Inputs& in) { return gather(in[0].transpose(0, 1), 0, i0); }, {leaf({4, 3}, 32)});
  const Tensor i3 = i64({1, 1, 0, 3, 3, 3}, {1, 2, 3});
  CHECK_GRADIENTS([i3](const Inputs& in) { return gather(in[0], 1, i3); }, {leaf({2, 4, 3}, 33)});

  Tensor x = Tensor::zeros({2, 3}, DType::f64);
  x.set_requires_grad(true);
  gather(x, 1, i1).backward(Tensor::ones({2, 4}, DType::f64));
  CHECK(values(x.grad()) == Values{1, 1, 2, 2, 2, 0});  // row 0 picks 0,2,2,1; row 1 picks 1,1,0,0
}

TEST_CASE("gather backward does not depend on the thread count", "[index]") {
  // Large enough to run in parallel; many repeats so the summation order matters.
  Generator gen(8);
  const Tensor x0 = Tensor::randn({300, 40}, gen);
  auto picks = [](int64_t n, int64_t bound) {
    std::vector<int64_t> v;
    for (int64_t i = 0; i < n; ++i) v.push_back((i * 7919) % bound / 4);
    return v;
  };
  const Tensor along_rows = i64(picks(300 * 200, 40), {300, 200});  // dim 1
  const Tensor along_cols = i64(picks(900 * 40, 300), {900, 40});   // dim 0
  auto run = [&](int threads, int64_t dim, const Tensor& index) {
    set_num_threads(threads);
    Tensor x = x0.detach().clone();
    x.set_requires_grad(true);
    gather(x, dim, index).backward(Tensor::randn(index.shape(), gen));
    return x.grad().to_vector<float>();
  };
  const int saved = num_threads();
  gen.manual_seed(99);
  const std::vector<float> rows1 = run(1, 1, along_rows), cols1 = run(1, 0, along_cols);
  gen.manual_seed(99);
  const std::vector<float> rows2 = run(2, 1, along_rows), cols2 = run(2, 0, along_cols);
  set_num_threads(saved);
  CHECK(rows1 == rows2);
  CHECK(cols1 == cols2);
}

TEST_CASE("gather errors", "[index]") {
  const Tensor x = Tensor::zeros({2, 4});
  REQUIRE_THROWS_WITH(gather(x, 1, i64({0, 4}, {1, 2})), Contains("gather: index 4 is out of range for dim 1 of size 4"));
  REQUIRE_THROWS_WITH(gather(x, 0, i64({0, -3}, {1, 2})), Contains("gather: index -3 is out of range for dim 0 of size 2"));
  REQUIRE_THROWS_WITH(gather(x, 1, i64({0, 0}, {2})), Contains("gather: index i64 [2] on cpu must have as many dims as x f32 [2,4]"));
  REQUIRE_THROWS_WITH(gather(x, 0, i64(std::vector<int64_t>(10, 0), {2, 5})),
                      Contains("gather: index [2,5] is larger than x [2,4] in dim 1 (only dim 0 may be)"));
  REQUIRE_THROWS_WITH(gather(x, 0, Tensor::zeros({1, 1}, DType::i32)), Contains("gather: index i32 [1,1] on cpu must be i64"));
}

// ---- where / masked_fill ------------------------------------------------------------

TEST_CASE("where selects with three-way broadcasting", "[index]") {
  const Tensor cond = u8({1, 0}, {2, 1});
  const Tensor a = f32({1, 2, 3}, {1, 3});
  const Tensor b = Tensor::scalar(-1);
  const Tensor w = where(cond, a, b);
  CHECK(w.shape() == Shape{2, 3});
  CHECK(values(w) == Values{1, 2, 3, -1, -1, -1});
  // Nonzero mask bytes other than 1 count as true; a non-contiguous a.
  const Tensor c2 = u8({7, 0, 1, 0}, {2, 2});
  CHECK(values(where(c2, iota({2, 2}).transpose(0, 1), Tensor::full({2, 2}, 9))) == Values{0, 9, 1, 9});
  CHECK(where(u8({0, 1}, {2}), i64({1, 2}, {2}), i64({-100}, {1})).to_vector<int64_t>() ==
        std::vector<int64_t>{-100, 2});
}

TEST_CASE("where gradients", "[index]") {
  const Tensor cond = u8({1, 0, 0, 1, 1, 0}, {2, 3});
  CHECK_GRADIENTS([cond](const Inputs& in) { return where(cond, in[0], in[1]); },
                  {leaf({2, 3}, 40), leaf({2, 3}, 41)});
  // Broadcasting: a [3] and b [2,1] both get summed gradients; cond [2,1,3] widens the output.
  const Tensor c3 = u8({1, 0, 1, 0, 1, 1}, {2, 1, 3});
  CHECK_GRADIENTS([c3](const Inputs& in) { return where(c3, in[0], in[1]); }, {leaf({3}, 42), leaf({2, 1}, 43)});
  // Non-contiguous a, a frozen b.
  const Tensor frozen = Tensor::randn({2, 3}, DType::f64);
  CHECK_GRADIENTS([cond, frozen](const Inputs& in) { return where(cond, in[0].transpose(0, 1), frozen); },
                  {leaf({3, 2}, 44)});
}

TEST_CASE("where errors", "[index]") {
  const Tensor a = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(where(Tensor::zeros({2, 3}), a, a), Contains("where: condition f32 [2,3] on cpu must be u8"));
  REQUIRE_THROWS_WITH(where(u8({1, 0}, {2}), a, a),
                      Contains("where: condition [2], a [2,3] and b [2,3] cannot be broadcast together"));
  REQUIRE_THROWS_WITH(where(u8({1}, {1}), a, Tensor::zeros({4})),
                      Contains("where: condition [1], a [2,3] and b [4] cannot be broadcast together"));
  REQUIRE_THROWS_WITH(where(u8({1}, {1}), a, Tensor::zeros({2, 3}, DType::f64)), Contains("where: dtypes f32 and f64 differ"));
}

TEST_CASE("masked_fill fills where the mask is set", "[index]") {
  const Tensor x = iota({2, 3});
  CHECK(values(masked_fill(x, u8({1, 0, 1}, {3}), -5)) == Values{-5, 1, -5, -5, 4, -5});
  CHECK(values(masked_fill(x, u8({0, 1}, {2, 1}), 0.5)) == Values{0, 1, 2, 0.5, 0.5, 0.5});
  // Non-contiguous x, the input unchanged, integer labels.
  CHECK(values(masked_fill(x.transpose(0, 1), u8({1, 0}, {2}), 9)) == Values{9, 3, 9, 4, 9, 5});
  CHECK(values(x) == Values{0, 1, 2, 3, 4, 5});
  CHECK(masked_fill(i64({3, 4, 5}, {3}), u8({0, 1, 1}, {3}), -100).to_vector<int64_t>() ==
        std::vector<int64_t>{3, -100, -100});
  const Tensor inf = masked_fill(Tensor::zeros({2}), u8({1, 0}, {2}), -INFINITY);
  CHECK(values(inf)[0] == -INFINITY);
  // The attention shape: scores [B, H, T, S] under a causal [T, S] mask, over
  // a contiguous x and over a view whose rows are strided.
  const Tensor scores = iota({2, 2, 3, 4});
  std::vector<uint8_t> causal_bits;
  std::vector<double> want;
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t j = 0; j < 4; ++j) causal_bits.push_back(j > t + 1 ? 1 : 0);
  for (int64_t i = 0; i < 48; ++i) {
    const int64_t t = (i / 4) % 3, j = i % 4;
    want.push_back(j > t + 1 ? -7.0 : double(i));
  }
  const Tensor causal = u8(causal_bits, {3, 4});
  CHECK(values(masked_fill(scores, causal, -7)) == want);
  const Tensor padded = iota({2, 2, 3, 6}).narrow(3, 1, 4);  // rows of 4 inside rows of 6
  const Values filled = values(masked_fill(padded, causal, -7));
  for (int64_t i = 0; i < 48; ++i) {
    const int64_t row = i / 4, j = i % 4, t = row % 3;
    CHECK(filled[static_cast<size_t>(i)] == (j > t + 1 ? -7.0 : double(row * 6 + 1 + j)));
  }
}

TEST_CASE("masked_fill gradients", "[index]") {
  const Tensor mask = u8({1, 0, 0, 1, 1, 0}, {2, 3});
  CHECK_GRADIENTS([mask](const Inputs& in) { return masked_fill(in[0], mask, 3.0); }, {leaf({2, 3}, 50)});
  const Tensor row = u8({0, 1, 1}, {3});
  CHECK_GRADIENTS([row](const Inputs& in) { return masked_fill(in[0].transpose(0, 1), row, 0.0); },
                  {leaf({3, 2}, 51)});
  CHECK_GRADIENTS([row](const Inputs& in) { return masked_fill(in[0], row.view({1, 1, 3}), -1.0); },
                  {leaf({2, 2, 3}, 52)});
}

TEST_CASE("masked_fill errors", "[index]") {
  const Tensor x = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(masked_fill(x, u8({1, 0}, {2}), 0), Contains("masked_fill: mask [2] does not broadcast to x [2,3]"));
  REQUIRE_THROWS_WITH(masked_fill(x, Tensor::zeros({2, 3, 1}, DType::u8), 0),
                      Contains("masked_fill: mask [2,3,1] does not broadcast to x [2,3]"));
  REQUIRE_THROWS_WITH(masked_fill(x, Tensor::zeros({3}, DType::i64), 0), Contains("masked_fill: mask i64 [3] on cpu must be u8"));
}
