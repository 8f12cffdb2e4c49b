// The gradient-ready hook (GradReadyGuard): what data-parallel training relies
// on to start summing gradients during the backward (dist/reducer.h).
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

using namespace vlmc;

namespace {

Tensor leaf(std::vector<double> values) {
  Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("the grad-ready hook fires once per leaf after its gradient is summed", "[grad_hook]") {
  Tensor x = leaf({1, 2, 3});
  Tensor w = leaf({0.5, 0.5, 0.5});
  Tensor frozen = Tensor::from_vector(std::vector<double>{4, 4, 4}, {3});  // requires no grad
  std::vector<const TensorImpl*> seen;
  std::vector<std::vector<double>> grads_seen;
  {
    GradReadyGuard guard([&](const Tensor& ready) {
      seen.push_back(&ready.impl());
      grads_seen.push_back(ready.grad().to_vector<double>());
    });
    // x is used twice (x*x and x*w): its hook must see 2x + w, not a part of it.
    Tensor y = sum(add(add(mul(x, x), mul(x, w)), frozen));
    y.backward();
  }
  REQUIRE(seen.size() == 2);
  CHECK(std::count(seen.begin(), seen.end(), &x.impl()) == 1);
  CHECK(std::count(seen.begin(), seen.end(), &w.impl()) == 1);
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i] == &x.impl()) CHECK(grads_seen[i] == std::vector<double>{2.5, 4.5, 6.5});
    if (seen[i] == &w.impl()) CHECK(grads_seen[i] == std::vector<double>{1, 2, 3});
  }

  // Outside the guard nothing is called.
  seen.clear();
  sum(mul(x, 2.0)).backward();
  CHECK(seen.empty());
}

TEST_CASE("the grad-ready hook sees the gradient accumulated over earlier backwards", "[grad_hook]") {
  Tensor x = leaf({1, 2});
  sum(mul(x, 3.0)).backward();  // an earlier micro-batch, no hook
  std::vector<double> got;
  GradReadyGuard guard([&](const Tensor& ready) { got = ready.grad().to_vector<double>(); });
  sum(x).backward();
  CHECK(got == std::vector<double>{4, 4});
}

TEST_CASE("nested grad-ready guards restore the outer hook", "[grad_hook]") {
  Tensor x = leaf({1});
  int outer = 0;
  int inner = 0;
  {
    GradReadyGuard a([&](const Tensor&) { ++outer; });
    {
      GradReadyGuard b([&](const Tensor&) { ++inner; });
      sum(x).backward();
    }
    CHECK(inner == 1);
    CHECK(outer == 0);
    sum(x).backward();
    CHECK(outer == 1);
    {
      GradReadyGuard none(nullptr);  // an empty callback turns the hook off
      sum(x).backward();
    }
    CHECK(outer == 1);
  }
  sum(x).backward();
  CHECK(outer == 1);
  CHECK(inner == 1);
}
