// swiglu (silu(gate) * up, fused on the CPU): the same values as the composed
// ops, forward bit for bit and gradients to rounding, in f32 and f64; f64
// gradients against central differences; one input frozen; views (the composed
// form); thread counts; error messages.
#include <catch2/catch.hpp>

#include <vector>

#include "core/ops.h"
#include "core/random.h"
#include "core/threads.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

// Values over silu's whole range: both tails (where the sigmoid saturates or
// its exp would overflow), around 0, and the bulk. [rows, cols], more elements
// than the kernel's parallel grain.
Tensor spread(uint64_t seed, DType dtype, int64_t rows = 96, int64_t cols = 130) {
  Generator gen(seed);
  Tensor t = Tensor::randn({rows, cols}, gen, DType::f64);
  std::vector<double> v = t.to_vector<double>();
  for (size_t i = 0; i < v.size(); i += 7) v[i] *= 12.0;
  const double edges[] = {0.0, -0.0, 88.0, -88.0, 89.5, -89.5, 1e-30, -1e-30, 17.0, -17.0, 200.0, -200.0};
  for (size_t i = 0; i < std::size(edges) && i * 11 < v.size(); ++i) v[i * 11] = edges[i];
  return Tensor::from_vector(v, {rows, cols}).to(dtype);
}

struct Grads {
  Tensor y, dgate, dup;
};

// y, d(gate) and d(up) of sum(f(gate, up) * w).
template <typename F>
Grads run(F f, const Tensor& gate_in, const Tensor& up_in, const Tensor& w, bool gate_grad = true,
          bool up_grad = true) {
  Tensor gate = gate_in.detach().set_requires_grad(gate_grad);
  Tensor up = up_in.detach().set_requires_grad(up_grad);
  const Tensor y = f(gate, up);
  sum(y * w).backward();
  return {y.detach(), gate_grad ? gate.grad() : Tensor(), up_grad ? up.grad() : Tensor()};
}

Tensor composed(const Tensor& gate, const Tensor& up) { return silu(gate) * up; }

}  // namespace

TEST_CASE("swiglu: f32 forward has the composed ops' bits, and gradients agree to rounding", "[swiglu]") {
  const Tensor gate = spread(1, DType::f32), up = spread(2, DType::f32), w = spread(3, DType::f32);
  const Grads fused = run(swiglu, gate, up, w);
  const Grads ref = run(composed, gate, up, w);
  CHECK(fused.y.to_vector<float>() == ref.y.to_vector<float>());
  const test::ElementError dg = test::element_error(fused.dgate, ref.dgate);
  const test::ElementError du = test::element_error(fused.dup, ref.dup);
  INFO("d(gate) " << dg.str() << "; d(up) " << du.str());
  CHECK(dg.error <= 1e-6);
  CHECK(du.error == 0.0);  // dy * silu(g): the same two products in the same order
}

TEST_CASE("swiglu: f64 against the composed ops and central differences", "[swiglu]") {
  const Tensor gate = spread(4, DType::f64, 9, 11), up = spread(5, DType::f64, 9, 11), w = spread(6, DType::f64, 9, 11);
  const Grads fused = run(swiglu, gate, up, w);
  const Grads ref = run(composed, gate, up, w);
  CHECK(fused.y.to_vector<double>() == ref.y.to_vector<double>());
  CHECK(test::element_error(fused.dgate, ref.dgate).error <= 1e-14);
  CHECK(test::element_error(fused.dup, ref.dup).error <= 1e-14);
  CHECK_GRADIENTS([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); },
                  {test::leaf({3, 4, 5}, 7), test::leaf({3, 4, 5}, 8)});
}

TEST_CASE("swiglu: a frozen input gets no gradient and the other the same one", "[swiglu]") {
  const Tensor gate = spread(9, DType::f32), up = spread(10, DType::f32), w = spread(11, DType::f32);
  const Grads both = run(swiglu, gate, up, w);
  const Grads gate_only = run(swiglu, gate, up, w, true, false);
  const Grads up_only = run(swiglu, gate, up, w, false, true);
  CHECK(gate_only.dgate.to_vector<float>() == both.dgate.to_vector<float>());
  CHECK(up_only.dup.to_vector<float>() == both.dup.to_vector<float>());
}

TEST_CASE("swiglu: views take the composed form and give the same values", "[swiglu]") {
  const Tensor gate = spread(12, DType::f64, 14, 10), up = spread(13, DType::f64, 10, 14);
  const Tensor gate_view = gate.transpose(0, 1);  // [10, 14], not contiguous
  CHECK(swiglu(gate_view, up).to_vector<double>() == composed(gate_view, up).to_vector<double>());
  CHECK_GRADIENTS([](const std::vector<Tensor>& in) { return swiglu(in[0].transpose(0, 1), in[1]); },
                  {test::leaf({5, 4}, 14), test::leaf({4, 5}, 15)});
}

TEST_CASE("swiglu: the bits do not depend on the thread count", "[swiglu][threads]") {
  const Tensor gate = spread(16, DType::f32, 200, 130), up = spread(17, DType::f32, 200, 130);
  const Tensor w = spread(18, DType::f32, 200, 130);
  const int saved = num_threads();
  set_num_threads(1);
  const Grads one = run(swiglu, gate, up, w);
  set_num_threads(2);
  const Grads two = run(swiglu, gate, up, w);
  set_num_threads(saved);
  CHECK(one.y.to_vector<float>() == two.y.to_vector<float>());
  CHECK(one.dgate.to_vector<float>() == two.dgate.to_vector<float>());
  CHECK(one.dup.to_vector<float>() == two.dup.to_vector<float>());
}

TEST_CASE("swiglu: operands of different shapes are refused by name", "[swiglu][errors]") {
  const Tensor gate = Tensor::zeros({2, 8}), up = Tensor::zeros({2, 6});
  REQUIRE_THROWS_WITH(swiglu(gate, up), Catch::Contains("swiglu: gate f32 [2,8]") &&
                                            Catch::Contains("up f32 [2,6]") &&
                                            Catch::Contains("must have the same shape"));
  REQUIRE_THROWS_WITH(swiglu(Tensor(), up), Catch::Contains("swiglu: gate and up must be defined"));
}
