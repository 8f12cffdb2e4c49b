// View ops (core/views.cpp): shapes, strides and offsets, shared storage,
// values through contiguous(), error messages, and gradients through each view.
#include <catch2/catch.hpp>

#include <vector>

#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;
using test::leaf;

namespace {

using Values = std::vector<double>;
using Inputs = std::vector<Tensor>;

Values values(const Tensor& t) { return t.to_vector<double>(); }

// 0, 1, 2, ... as f32 in the given shape.
Tensor iota(const Shape& shape) { return Tensor::arange(shape_numel(shape), DType::f32).view(shape); }

bool shares(const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); }

}  // namespace

TEST_CASE("view and reshape", "[views]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor v = x.view({6, 4});
  CHECK(v.shape() == Shape{6, 4});
  CHECK(v.strides() == Shape{4, 1});
  CHECK(shares(v, x));
  CHECK(x.view({-1, 4}).shape() == Shape{6, 4});
  CHECK(x.view({2, -1}).shape() == Shape{2, 12});
  CHECK(x.view({-1}).shape() == Shape{24});
  CHECK(x.view({4, 1, -1, 2}).shape() == Shape{4, 1, 3, 2});
  CHECK(values(x.view({24})) == values(x));
  CHECK(Tensor::scalar(3).view({1, 1}).shape() == Shape{1, 1});
  CHECK(Tensor::ones({1}).view({}).shape() == Shape{});

  // Viewable after a transpose when the merged dims stay adjacent in memory.
  const Tensor t = x.transpose(1, 2);  // [2,4,3] strides [12,1,4]
  const Tensor u = x.transpose(0, 1);  // [3,2,4] strides [4,12,1]
  CHECK(u.view({3, 2, 2, 2}).strides() == Shape{4, 12, 2, 1});
  CHECK(values(u.view({3, 2, 2, 2})) == values(u));

  REQUIRE_THROWS_WITH(t.view({2, 12}), Contains("view: cannot view f32 [2,4,3] on cpu with strides [12,1,4]"));
  REQUIRE_THROWS_WITH(t.view({2, 12}), Contains("without a copy; use reshape()"));
  REQUIRE_THROWS_WITH(x.view({-1, -1}), Contains("view: only one dim may be -1 in [-1,-1]"));
  REQUIRE_THROWS_WITH(x.view({5, -1}), Contains("view: shape [5,-1] is invalid for input [2,3,4]"));
  REQUIRE_THROWS_WITH(x.view({5, 5}), Contains("view: shape [5,5] is invalid for input [2,3,4] of 24 elements"));
  REQUIRE_THROWS_WITH(x.view({-2, 12}), Contains("view: invalid dim -2 in [-2,12]"));

  // reshape: a view when possible, a copy when not.
  const Tensor r = x.reshape({4, -1});
  CHECK(shares(r, x));
  const Tensor rc = t.reshape({2, 12});
  CHECK_FALSE(shares(rc, x));
  CHECK(rc.is_contiguous());
  CHECK(values(rc) == values(t.contiguous()));
  REQUIRE_THROWS_WITH(x.reshape({7, -1}), Contains("reshape: shape [7,-1] is invalid for input [2,3,4]"));
}

TEST_CASE("views share storage", "[views]") {
  Tensor x = Tensor::zeros({3, 4});
  x.narrow(1, 1, 2).fill_(5);
  x.select(0, 2).fill_(7);
  x.transpose(0, 1).select(0, 0).narrow(0, 0, 1).fill_(-1);
  CHECK(values(x) == Values{-1, 5, 5, 0, 0, 5, 5, 0, 7, 7, 7, 7});
  Tensor v = x.view({12});
  v.narrow(0, 11, 1).fill_(9);
  CHECK(values(x)[11] == 9);
  x.unsqueeze(0).expand({2, 3, 4}).select(0, 1).narrow(0, 1, 1).fill_(3);
  CHECK(values(x.select(0, 1)) == Values{3, 3, 3, 3});
}

TEST_CASE("permute and transpose", "[views]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(shares(p, x));
  CHECK_FALSE(p.is_contiguous());
  // contiguous() of the permuted tensor: element [k][i][j] = x[i][j][k] = 12i + 4j + k.
  const Tensor c = p.contiguous();
  CHECK(c.is_contiguous());
  CHECK_FALSE(shares(c, x));
  const Values cv = values(c);
  bool all = true;
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) all = all && cv[static_cast<size_t>(k * 6 + i * 3 + j)] == 12 * i + 4 * j + k;
  CHECK(all);
  CHECK(x.permute({-1, 0, 1}).shape() == Shape{4, 2, 3});
  CHECK(x.contiguous().same(x));

  const Tensor t = iota({2, 3}).transpose(0, 1);
  CHECK(t.shape() == Shape{3, 2});
  CHECK(values(t) == Values{0, 3, 1, 4, 2, 5});
  CHECK(values(iota({2, 3}).transpose(-1, -2)) == values(t));
  CHECK(values(t.transpose(0, 1)) == Values{0, 1, 2, 3, 4, 5});

  REQUIRE_THROWS_WITH(x.permute({0, 1}), Contains("permute: 2 dims given for tensor f32 [2,3,4]"));
  REQUIRE_THROWS_WITH(x.permute({0, 1, 1}), Contains("permute: dim 1 repeated in [0,1,1]"));
  REQUIRE_THROWS_WITH(x.permute({0, 1, 3}), Contains("permute: dim 3 is out of range"));
  REQUIRE_THROWS_WITH(x.transpose(0, 3), Contains("transpose: dim 3 is out of range"));
}

TEST_CASE("narrow, slice and select", "[views]") {
  const Tensor x = iota({3, 4});
  const Tensor n = x.narrow(1, 1, 2);
  CHECK(n.shape() == Shape{3, 2});
  CHECK(n.offset() == 1);
  CHECK(shares(n, x));
  CHECK(values(n) == Values{1, 2, 5, 6, 9, 10});
  CHECK(values(x.narrow(-2, 2, 1)) == Values{8, 9, 10, 11});
  CHECK(x.narrow(0, 3, 0).shape() == Shape{0, 4});
  REQUIRE_THROWS_WITH(x.narrow(1, 3, 2), Contains("narrow: [3, 5) is out of range for dim 1 of f32 [3,4] on cpu"));
  REQUIRE_THROWS_WITH(x.narrow(0, -1, 1), Contains("narrow: [-1, 0) is out of range for dim 0"));
  REQUIRE_THROWS_WITH(Tensor::scalar(1).narrow(0, 0, 1), Contains("narrow: cannot narrow a scalar"));

  // slice: Python semantics, negative bounds count from the end, out-of-range ones clamp.
  CHECK(values(x.slice(1, 1, 3)) == Values{1, 2, 5, 6, 9, 10});
  CHECK(values(x.slice(1, -2, 4)) == Values{2, 3, 6, 7, 10, 11});
  CHECK(values(x.slice(1, 0, -1)) == values(x.narrow(1, 0, 3)));
  CHECK(values(x.slice(0, -10, 10)) == values(x));
  CHECK(values(x.slice(0, 2, 100)) == Values{8, 9, 10, 11});
  CHECK(x.slice(0, 3, 1).shape() == Shape{0, 4});
  CHECK(x.slice(0, 5, 7).shape() == Shape{0, 4});
  CHECK(x.slice(1, -1, -3).shape() == Shape{3, 0});
  REQUIRE_THROWS_WITH(x.slice(2, 0, 1), Contains("slice: dim 2 is out of range"));

  const Tensor s = x.select(0, 1);
  CHECK(s.shape() == Shape{4});
  CHECK(shares(s, x));
  CHECK(values(s) == Values{4, 5, 6, 7});
  CHECK(values(x.select(1, -1)) == Values{3, 7, 11});
  CHECK(x.select(0, 0).select(0, 2).shape() == Shape{});
  CHECK(x.select(0, 2).select(0, 3).item() == 11);
  REQUIRE_THROWS_WITH(x.select(0, 3), Contains("select: index 3 is out of range for dim 0 of f32 [3,4] on cpu"));
  REQUIRE_THROWS_WITH(x.select(1, -5), Contains("select: index -5 is out of range for dim 1"));
}

TEST_CASE("expand", "[views]") {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3, 1});
  const Tensor e = x.expand({2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.strides() == Shape{0, 1, 0});
  CHECK(shares(e, x));
  const Values v = values(e);
  CHECK(v.size() == 24);
  CHECK(Values(v.begin(), v.begin() + 12) == Values{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
  CHECK(Values(v.begin() + 12, v.end()) == Values(v.begin(), v.begin() + 12));
  CHECK(x.expand({-1, 5}).shape() == Shape{3, 5});
  CHECK(x.expand({3, 1}).strides() == x.strides());
  CHECK(Tensor::scalar(2).expand({2, 2}).shape() == Shape{2, 2});
  CHECK(x.expand({3, 0}).shape() == Shape{3, 0});

  REQUIRE_THROWS_WITH(x.expand({4}), Contains("expand: cannot expand f32 [3,1] on cpu to [4] (fewer dims)"));
  REQUIRE_THROWS_WITH(x.expand({4, 4}), Contains("expand: cannot expand f32 [3,1] on cpu to [4,4] (dim 0)"));
  REQUIRE_THROWS_WITH(x.expand({-1, 3, 4}), Contains("expand: -1 is not allowed for the new leading dim 0"));
  REQUIRE_THROWS_WITH(x.expand({3, -2}), Contains("expand: cannot expand f32 [3,1] on cpu to [3,-2] (dim 1)"));
}

TEST_CASE("squeeze, unsqueeze and flatten", "[views]") {
  const Tensor x = iota({2, 1, 3});
  CHECK(x.squeeze(1).shape() == Shape{2, 3});
  CHECK(x.squeeze(-2).shape() == Shape{2, 3});
  CHECK(x.squeeze(0).same(x));  // not size 1: unchanged
  CHECK(Tensor::scalar(1).squeeze(0).shape() == Shape{});
  CHECK(shares(x.squeeze(1), x));
  REQUIRE_THROWS_WITH(x.squeeze(3), Contains("squeeze: dim 3 is out of range"));

  CHECK(x.unsqueeze(0).shape() == Shape{1, 2, 1, 3});
  CHECK(x.unsqueeze(3).shape() == Shape{2, 1, 3, 1});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 1, 3, 1});
  CHECK(x.unsqueeze(-4).shape() == Shape{1, 2, 1, 3});
  CHECK(x.unsqueeze(3).strides() == Shape{3, 3, 1, 1});
  CHECK(x.unsqueeze(0).is_contiguous());
  CHECK(Tensor::scalar(1).unsqueeze(0).shape() == Shape{1});
  CHECK(values(iota({2, 3}).transpose(0, 1).unsqueeze(1)) == Values{0, 3, 1, 4, 2, 5});
  REQUIRE_THROWS_WITH(x.unsqueeze(4), Contains("unsqueeze: dim 4 is out of range"));

  const Tensor y = iota({2, 3, 4});
  CHECK(y.flatten().shape() == Shape{24});
  CHECK(y.flatten(1).shape() == Shape{2, 12});
  CHECK(y.flatten(0, 1).shape() == Shape{6, 4});
  CHECK(y.flatten(-2, -1).shape() == Shape{2, 12});
  CHECK(y.flatten(1, 1).shape() == y.shape());
  CHECK(shares(y.flatten(), y));
  CHECK(Tensor::scalar(4).flatten().shape() == Shape{1});
  const Tensor f = y.transpose(0, 2).flatten();  // not viewable: a copy
  CHECK_FALSE(shares(f, y));
  CHECK(values(f) == values(y.transpose(0, 2).contiguous()));
  REQUIRE_THROWS_WITH(y.flatten(2, 1), Contains("flatten: start_dim 2 is after end_dim 1"));
}

TEST_CASE("gradients through views", "[views]") {
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].view({3, -1}); }, {leaf({2, 3, 2}, 1)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].reshape({4, 3}); }, {leaf({2, 6}, 2)});
  // reshape through a copy (transpose is not viewable as [12]).
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].transpose(0, 1).reshape({-1}); }, {leaf({3, 4}, 3)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].permute({2, 0, 1}); }, {leaf({2, 3, 4}, 4)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].transpose(-1, 0); }, {leaf({2, 3, 4}, 5)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].narrow(1, 1, 2); }, {leaf({3, 4}, 6)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].slice(0, -2, 100); }, {leaf({3, 4}, 7)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].select(1, -1); }, {leaf({3, 4}, 8)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].expand({2, 3, 4}); }, {leaf({3, 1}, 9)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].expand({5}); }, {leaf({}, 10)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].squeeze(1); }, {leaf({3, 1, 2}, 11)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].unsqueeze(-1); }, {leaf({3, 2}, 12)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].flatten(1); }, {leaf({2, 3, 2}, 13)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].contiguous(); }, {leaf({3, 2}, 14)});
  // Chains of views over non-contiguous sources, and one leaf reached twice.
  CHECK_GRADIENTS(
      [](const Inputs& in) { return in[0].permute({1, 0, 2}).narrow(0, 1, 2).select(2, 0).unsqueeze(0).expand({2, 2, 2}); },
      {leaf({2, 3, 2}, 15)});
  CHECK_GRADIENTS([](const Inputs& in) { return in[0].transpose(0, 1).contiguous().view({2, 6}); },
                  {leaf({4, 3}, 16)});
  CHECK_GRADIENTS([](const Inputs& in) { return cat({in[0].narrow(0, 0, 2), in[0].select(0, 1).unsqueeze(0)}, 0); },
                  {leaf({3, 2}, 17)});
}
