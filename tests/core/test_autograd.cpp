// The autograd engine: accumulation, topological order, graph freeing, no_grad.
#include <catch2/catch.hpp>

#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;

TEST_CASE("gradients accumulate across backward calls and over shared uses", "[autograd]") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  x.set_requires_grad(true);
  // y = x*x + x: x is used three times; dy/dx = 2x + 1.
  Tensor y = sum(add(mul(x, x), x));
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3, 5, 7});
  Tensor y2 = sum(mul(x, 2.0));
  y2.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("diamond graphs run each node once, after all its consumers", "[autograd]") {
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, -1.0}, {2});
  x.set_requires_grad(true);
  Tensor a = mul(x, 3.0);   // a = 3x
  Tensor b = exp(a);        // b = e^{3x}
  Tensor c = mul(a, a);     // c = 9x^2
  Tensor out = sum(add(b, c));
  out.backward();
  const std::vector<double> g = x.grad().to_vector<double>();
  CHECK(g[0] == Approx(3 * std::exp(1.5) + 18 * 0.5));
  CHECK(g[1] == Approx(3 * std::exp(-3.0) + 18 * -1.0));
}

TEST_CASE("backward from a non-scalar needs a gradient of its shape", "[autograd]") {
  Tensor x = test::leaf({2, 3}, 1);
  Tensor y = mul(x, 2.0);
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("only for one-element outputs"));
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones({3}, DType::f64)),
                      Catch::Contains("gradient [3] does not match output [2,3]"));
  y.backward(Tensor::full({2, 3}, 0.5, DType::f64));
  CHECK(x.grad().to_vector<double>() == std::vector<double>(6, 1.0));
}

TEST_CASE("the graph is freed after backward unless retained", "[autograd]") {
  Tensor x = test::leaf({4}, 2);
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  const std::vector<double> once = x.grad().to_vector<double>();
  y.backward();
  const std::vector<double> twice = x.grad().to_vector<double>();
  for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == Approx(2 * once[i]));
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("was freed by an earlier backward()"));
}

TEST_CASE("no_grad records nothing and detach cuts history", "[autograd]") {
  Tensor x = test::leaf({3}, 3);
  {
    NoGradGuard no_grad;
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(grad_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = sum(mul(d, x));  // gradient flows only through the second factor
  y.backward();
  CHECK(test::rel_error(x.grad(), d) == 0.0);
}

TEST_CASE("leaves that do not require grad get none and frozen inputs are skipped", "[autograd]") {
  Tensor w = test::leaf({3}, 4);
  Tensor frozen = Tensor::randn({3}, DType::f64);
  Tensor y = sum(mul(w, frozen));
  y.backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(frozen.grad().defined());
  Tensor c = Tensor::ones({2});
  REQUIRE_THROWS_WITH(sum(c).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("gradients flow through views and dtype conversion", "[autograd]") {
  CHECK_GRADIENTS(
      [](const std::vector<Tensor>& in) {
        return mul(in[0].transpose(0, 1).reshape({6}).narrow(0, 1, 4), 3.0);
      },
      {test::leaf({2, 3}, 5)});
  Tensor x = test::leaf({3}, 6);
  Tensor y = sum(x.to(DType::f32));
  y.backward();
  CHECK(x.grad().dtype() == DType::f64);
  CHECK(x.grad().to_vector<double>() == std::vector<double>(3, 1.0));
}

TEST_CASE("a leaf's first gradient is its own memory: taken when unshared, copied when it aliases", "[autograd]") {
  // add's backward hands the same gradient to both inputs: one leaf may take
  // it, the other must copy, and neither may be the caller's gradient.
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  Tensor b = Tensor::from_vector(std::vector<double>{4, 5, 6}, {3});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  const Tensor g = Tensor::from_vector(std::vector<double>{1, 1, 1}, {3});
  add(a, b).backward(g);
  CHECK(a.grad().data_ptr() != b.grad().data_ptr());
  CHECK(a.grad().data_ptr() != g.data_ptr());
  CHECK(b.grad().data_ptr() != g.data_ptr());
  {
    NoGradGuard no_grad;
    Tensor ga = a.grad();
    add_(ga, a.grad());  // in place, as clipping and accumulation do
  }
  CHECK(a.grad().to_vector<double>() == std::vector<double>{2, 2, 2});
  CHECK(b.grad().to_vector<double>() == std::vector<double>{1, 1, 1});
  CHECK(g.to_vector<double>() == std::vector<double>{1, 1, 1});

  // sum's backward is a broadcast (stride 0): the leaf gets a dense copy.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  x.set_requires_grad(true);
  sum(x).backward();
  CHECK(x.grad().is_contiguous());
  {
    NoGradGuard no_grad;
    Tensor gx = x.grad();
    add_(gx, x.grad());
  }
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 2, 2, 2});

  // A product's weight gradient is a fresh tensor nobody else holds: taken,
  // and a second backward accumulates into it.
  Tensor w = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  w.set_requires_grad(true);
  const Tensor in = Tensor::from_vector(std::vector<double>{1, -1, 2}, {1, 3});
  sum(linear(in, w)).backward();
  CHECK(w.grad().to_vector<double>() == std::vector<double>{1, -1, 2, 1, -1, 2});
  sum(linear(in, w)).backward();
  CHECK(w.grad().to_vector<double>() == std::vector<double>{2, -2, 4, 2, -2, 4});
}

TEST_CASE("a node's gradients from several consumers are summed in place only when nothing else holds them", "[autograd]") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  x.set_requires_grad(true);
  // add's backward hands one tensor to a and to b: a's second gradient (from
  // a * a) must not be added into the tensor b's node is still to read.
  Tensor a = mul(x, 2.0), b = mul(x, 3.0);
  sum(add(add(a, b), mul(a, a))).backward();  // d/dx (2x + 3x + 4x²) = 5 + 8x
  CHECK(x.grad().to_vector<double>() == std::vector<double>{13, 21, 29});

  // The caller's gradient reaches one node twice: it is summed into a new tensor.
  Tensor y = Tensor::from_vector(std::vector<double>{1, -1}, {2});
  y.set_requires_grad(true);
  const Tensor c = mul(y, 2.0);
  const Tensor g = Tensor::from_vector(std::vector<double>{0.5, 4}, {2});
  add(c, c).backward(g);
  CHECK(y.grad().to_vector<double>() == std::vector<double>{2, 16});
  CHECK(g.to_vector<double>() == std::vector<double>{0.5, 4});

  // A residual stream, f32: the fresh gradients of three uses are summed in
  // place, and the result equals adding them by hand.
  Tensor w = Tensor::from_vector(std::vector<float>{0.5f, -1.25f, 2.0f, 0.75f}, {2, 2});
  Tensor z = Tensor::from_vector(std::vector<float>{1.0f, 3.0f, -2.0f, 0.25f}, {2, 2});
  z.set_requires_grad(true);
  const Tensor h = mul(z, 1.5);
  sum(add(add(linear(h, w), h), mul(h, h))).backward();
  // dh = 1·W summed over outputs (column sums of W) + 1 + 2h; dz = 1.5 dh
  const std::vector<float> zv = z.detach().to_vector<float>();
  const float col[2] = {0.5f + 2.0f, -1.25f + 0.75f};
  std::vector<float> expected;
  for (int i = 0; i < 4; ++i) expected.push_back(1.5f * (col[i % 2] + 1.0f + 2.0f * (1.5f * zv[i])));
  const std::vector<float> got = z.grad().to_vector<float>();
  for (int i = 0; i < 4; ++i) CHECK(got[i] == Approx(expected[i]).epsilon(1e-6));
}
