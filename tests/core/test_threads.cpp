// One thread pool for OpenMP and OpenBLAS.
#include <catch2/catch.hpp>

#include <omp.h>

#include <atomic>
#include <stdexcept>

#include "core/threads.h"
#include "kernels/cpu/parallel_errors.h"
#include "kernels/topk.h"

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

TEST_CASE("an exception in an OpenMP region's setup reaches the caller, not std::terminate", "[threads]") {
  // kernels/cpu/parallel_errors.h: every thread still meets the worksharing
  // loop; the first exception is rethrown after the region.
  vlmc::kernels::cpu::ParallelErrors errors;
  std::atomic<int64_t> done{0};
#pragma omp parallel num_threads(2)
  {
    const bool ready = errors.run([&] {
      if (omp_get_thread_num() == 1 || omp_get_num_threads() == 1) throw std::runtime_error("setup failed");
    });
#pragma omp for
    for (int i = 0; i < 64; ++i)
      if (ready) ++done;
  }
  CHECK_THROWS_WITH(errors.rethrow(), "setup failed");
  CHECK(done < 64);
  vlmc::kernels::cpu::ParallelErrors fine;
  fine.run([] {});
  CHECK_NOTHROW(fine.rethrow());
}

TEST_CASE("topk_indices over no rows takes no scratch, however long the rows", "[threads]") {
  // Rows of 2^40 scores and no rows: nothing to select and nothing to allocate
  // (it once allocated 2^40 positions per thread inside an OpenMP region).
  vlmc::kernels::cpu::topk_indices<float>(nullptr, nullptr, 0, int64_t(1) << 40, 4);
  SUCCEED();
}
