// One thread pool for OpenMP and OpenBLAS.
#include <catch2/catch.hpp>

#include <omp.h>

#include "core/threads.h"

extern "C" int openblas_get_parallel();     // 0 sequential, 1 pthreads, 2 OpenMP
extern "C" int openblas_get_num_threads();

TEST_CASE("OpenBLAS runs on vlmc's OpenMP pool and follows set_num_threads", "[threads]") {
  CHECK(openblas_get_parallel() == 2);  // the OpenMP build: no second pool to oversubscribe with
  const int saved = vlmc::num_threads();
  vlmc::set_num_threads(1);
  CHECK(vlmc::num_threads() == 1);
  CHECK(omp_get_max_threads() == 1);
  CHECK(openblas_get_num_threads() == 1);
  vlmc::set_num_threads(saved);
  CHECK(omp_get_max_threads() == saved);
  REQUIRE_THROWS_WITH(vlmc::set_num_threads(0), Catch::Contains("expected n >= 1, got 0"));
}
