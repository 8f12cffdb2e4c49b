// The op table's CUDA driver (bench/op_cases.h): every case on cuda:0 against
// the CPU, output and every input gradient, in norm and per element
// (test::compare_cpu_cuda). Untested on a GPU so far.
#include <catch2/catch.hpp>

#include "bench/op_cases.h"
#include "tests/support/backend_compare.h"

using namespace vlmc;

TEST_CASE("cuda op table: every case matches the CPU", "[cuda][op_cases]") {
  uint64_t seed = 100;
  for (const bench::OpCase& c : bench::op_cases()) {
    ++seed;
    SECTION(c.name) { test::compare_cpu_cuda(c.fn, bench::make_inputs(c, DType::f32, seed), c.cuda_tol); }
  }
}
