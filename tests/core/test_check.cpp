// The numerical checks of tests/support/check.h themselves: the per-element
// check (element_error, CHECK_ELEMENTWISE, CHECK_SCALED) catches what the
// norm check (rel_error, CHECK_REL) lets through, names the element, and
// fails on every non-finite value.
#include <cmath>
#include <vector>

#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

constexpr int64_t kLarge = 1200000;  // the size of a real layer's output

// N(0,1) values for a [1200, 1000] tensor, twice.
struct Pair {
  std::vector<double> expected, actual;
};

Pair large_pair() {
  Generator gen(7);
  const std::vector<double> e = Tensor::randn({kLarge}, gen, DType::f64).to_vector<double>();
  return {e, e};
}

Tensor tensor(const std::vector<double>& v) { return Tensor::from_vector(v, {1200, 1000}); }

}  // namespace

TEST_CASE("test support: one wrong element in a large tensor passes the norm check but not the element check",
          "[support]") {
  Pair p = large_pair();
  const int64_t bad = 777777;
  p.actual[bad] += 0.05;  // ~5% of a typical element: a real fault
  const Tensor actual = tensor(p.actual), expected = tensor(p.expected);

  // In norm the fault is 0.05 / sqrt(1.2e6) ~ 5e-5 of the tensor: inside a 1e-4 tolerance.
  CHECK(test::rel_error(actual, expected) < 1e-4);

  const test::ElementError e = test::element_error(actual, expected);
  CHECK(e.index == bad);
  CHECK(e.actual == p.actual[bad]);
  CHECK(e.expected == p.expected[bad]);
  CHECK(e.error > 1e-2);  // 0.05 / (|expected| + RMS ~ 1)
  CHECK_THAT(e.str(), Catch::Contains("element 777777"));

  // Without the fault both checks pass.
  CHECK_REL(expected, expected, 1e-12);
  CHECK_ELEMENTWISE(expected, expected, 1e-12);
}

TEST_CASE("test support: the element check scales by |expected| + RMS, so near-zero elements are not over-penalised",
          "[support]") {
  Pair p = large_pair();
  p.expected[10] = 1e-9;
  p.actual[10] = 1e-9 + 1e-7;  // 100 times its own size, but 1e-7 of the tensor's
  p.actual[20] = p.expected[20] * (1 + 1e-7);
  CHECK_ELEMENTWISE(tensor(p.actual), tensor(p.expected), 1e-6);
  CHECK(test::element_error(tensor(p.actual), tensor(p.expected)).index == 10);

  // A large element is judged against itself: 1e-3 of 1000 is 1e-3, not 1.
  const Tensor big = Tensor::from_vector(std::vector<double>{1000.0, 0.5}, {2});
  const Tensor off = Tensor::from_vector(std::vector<double>{1001.0, 0.5}, {2});
  const test::ElementError e = test::element_error(off, big);
  CHECK(e.error == Approx(1.0 / (1000.0 + std::sqrt((1000.0 * 1000.0 + 0.25) / 2))));
  // An explicit scale replaces the RMS.
  CHECK(test::element_error(off, big, 0.0).error == Approx(1e-3));
}

TEST_CASE("test support: non-finite values always fail the element check", "[support]") {
  for (double bad : {NAN, INFINITY, -INFINITY}) {
    INFO("bad value " << bad);
    Pair p = large_pair();
    p.actual[123] = bad;
    test::ElementError e = test::element_error(tensor(p.actual), tensor(p.expected));
    CHECK(std::isinf(e.error));
    CHECK(e.index == 123);
    // In expected too, even where actual agrees (inf == inf is not a pass).
    p.expected[123] = bad;
    e = test::element_error(tensor(p.actual), tensor(p.expected));
    CHECK(std::isinf(e.error));
    CHECK(e.index == 123);
  }
}

TEST_CASE("test support: CHECK_SCALED divides by a magnitude per element", "[support]") {
  const Tensor expected = Tensor::from_vector(std::vector<double>{0.0, 2.0, -3.0}, {3});
  const Tensor actual = Tensor::from_vector(std::vector<double>{0.01, 2.0, -3.3}, {3});
  const Tensor magnitude = Tensor::from_vector(std::vector<double>{10.0, 1.0, 30.0}, {3});
  const test::ElementError e = test::element_error(actual, expected, magnitude);
  CHECK(e.index == 2);
  CHECK(e.error == Approx(0.3 / 30.0));
  CHECK(e.magnitude == 30.0);
  CHECK_SCALED(actual, expected, magnitude, 0.011);
  REQUIRE_THROWS_WITH(test::element_error(actual, expected, Tensor::ones({2}, DType::f64)),
                      Catch::Contains("differ"));
}
