// The op table's gradient driver (bench/op_cases.h): every case with a
// gradient, in f64 on the CPU, against central differences.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "bench/op_cases.h"
#include "tests/support/check.h"

using namespace vlmc;

TEST_CASE("op table: every case's f64 gradients match central differences", "[op_cases]") {
  uint64_t seed = 100;
  for (const bench::OpCase& c : bench::op_cases()) {
    ++seed;
    if (!c.gradient) continue;
    SECTION(c.name) { CHECK_GRADIENTS(c.fn, bench::make_inputs(c, DType::f64, seed), 1e-6, c.grad_atol, c.grad_rtol); }
  }
}

TEST_CASE("op table: case names are unique and each case has inputs", "[op_cases]") {
  std::set<std::string> names;
  for (const bench::OpCase& c : bench::op_cases()) {
    INFO(c.name);
    CHECK(names.insert(c.name).second);
    CHECK(!c.inputs.empty());
  }
  CHECK(names.size() >= 40);
}
