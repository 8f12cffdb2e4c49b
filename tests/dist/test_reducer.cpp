// The Reducer (dist/reducer.h) in one process: with the single group the sums
// are the identity, so after finish() every gradient holds exactly what the
// backward left there. Buckets, the ready hook and the index order are the
// same code as with several ranks (those run in tests/dist/mpi_selftest.cpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "dist/process_group.h"
#include "dist/reducer.h"

using namespace vlmc;
using namespace vlmc::dist;

namespace {

Tensor param(int64_t n, double scale) {
  Tensor t = Tensor::empty({n}, DType::f32);
  float* p = static_cast<float*>(t.data_ptr());
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(std::sin(static_cast<double>(i) * scale));
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("the reducer over the single group leaves the backward's gradients as they are", "[dist][reducer]") {
  auto group = init_process_group(Device::cpu(), 5.0);
  REQUIRE(group->backend() == "single");
  // Four used parameters and one the loss never reaches, over buckets of 64 floats.
  std::vector<Tensor> params = {param(50, 0.1), param(130, 0.2), param(7, 0.3), param(40, 0.4), param(9, 0.5)};
  Reducer reducer(*group, params, 64 * sizeof(float));
  CHECK(reducer.stats().buckets == 4);  // 236 floats

  for (int step = 0; step < 2; ++step) {
    for (Tensor& p : params) p.set_grad(Tensor());
    // A loss that mixes every used parameter nonlinearly.
    auto loss = [&] {
      Tensor l = sum(mul(params[0], params[0]));
      l = add(l, sum(exp(mul(params[1], 0.5))));
      l = add(l, mul(sum(params[2]), sum(params[3])));
      return mul(l, step + 1.0);
    };
    loss().backward();  // the reference, without the reducer
    std::vector<std::vector<float>> want;
    for (size_t i = 0; i < 4; ++i) want.push_back(params[i].grad().to_vector<float>());
    for (Tensor& p : params) p.set_grad(Tensor());

    reducer.prepare("test step");
    {
      GradReadyGuard hook([&](const Tensor& leaf) { reducer.on_ready(leaf); });
      loss().backward();
    }
    // Bucket 0 (parameters 4, 3, 2 and the first floats of 1) never
    // completes: parameter 4 gets no gradient. So nothing starts early.
    CHECK(reducer.stats().started_in_backward == 0);
    reducer.finish();
    CHECK(reducer.stats().started_in_finish == 4);
    for (size_t i = 0; i < 4; ++i) CHECK(params[i].grad().to_vector<float>() == want[i]);
    CHECK_FALSE(params[4].grad().defined());
  }
}

TEST_CASE("the reducer starts buckets during the backward in index order", "[dist][reducer]") {
  auto group = init_process_group(Device::cpu(), 5.0);
  std::vector<Tensor> params = {param(10, 0.1), param(10, 0.2), param(10, 0.3)};
  Reducer reducer(*group, params, 10 * sizeof(float));  // one parameter per bucket, bucket 0 = parameter 2
  reducer.prepare("test step");
  for (Tensor& p : params) p.set_grad(Tensor::ones({10}));
  reducer.on_ready(params[0]);  // bucket 2: ready, but buckets 0 and 1 are not started
  CHECK(reducer.stats().started_in_backward == 0);
  reducer.on_ready(params[2]);  // bucket 0
  CHECK(reducer.stats().started_in_backward == 1);
  reducer.on_ready(Tensor::ones({3}));  // not a parameter: ignored
  reducer.on_ready(params[1]);          // bucket 1, then the waiting bucket 2
  CHECK(reducer.stats().started_in_backward == 3);
  reducer.finish();
  CHECK(reducer.stats().started_in_finish == 0);
  CHECK(params[1].grad().to_vector<float>() == std::vector<float>(10, 1.0f));
}

TEST_CASE("the reducer refuses parameters it cannot sum", "[dist][reducer]") {
  auto group = init_process_group(Device::cpu(), 5.0);
  const Tensor a = param(4, 0.1);
  REQUIRE_THROWS_WITH(Reducer(*group, {a, Tensor::zeros({2}, DType::f64)}),
                      Catch::Contains("parameter 1 is f64, expected f32"));
  REQUIRE_THROWS_WITH(Reducer(*group, {a, a}), Catch::Contains("parameter 1 is listed twice"));
  REQUIRE_THROWS_WITH(Reducer(*group, {a}, 2), Catch::Contains("holds no f32 element"));
}
