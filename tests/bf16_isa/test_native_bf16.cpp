// On a CPU with AVX512-BF16 or AMX-BF16 (tests/bf16_isa_main.cpp skips the
// suite elsewhere), oneDNN has a native bf16 kernel for autocast's products,
// and it gives the widened f32 path's values. (Whether it is used by default
// is kernels/cpu/onednn_matmul.h's Bf16Path::automatic: on AMX, and on AMD
// CPUs with AVX512-BF16.)
#include <catch2/catch.hpp>

#include <string>

#include "core/autocast.h"
#include "core/ops.h"
#include "kernels/cpu/onednn_matmul.h"
#include "tests/support/backend_compare.h"
#include "tests/support/check.h"

using namespace vlmc;
namespace onednn = vlmc::kernels::cpu::onednn;

TEST_CASE("native bf16: oneDNN picks a bf16 kernel on this CPU", "[bf16_isa]") {
  onednn::set_bf16_path(onednn::Bf16Path::native);
  const std::string backend = onednn::describe(onednn::Operands::bf16);
  const bool enabled = onednn::enabled(onednn::Operands::bf16);
  onednn::set_bf16_path(onednn::Bf16Path::automatic);
  INFO("bf16 backend: " << backend);
  CHECK(enabled);
  CHECK(backend.rfind("oneDNN", 0) == 0);
  // brg:avx512_core_bf16, brg:avx512_core_amx, ...: not the emulated avx512_core one.
  CHECK((backend.find("bf16") != std::string::npos || backend.find("amx") != std::string::npos));
}

namespace {

// linear(x [rows, in], W [out, in], b) under autocast, forward and backward,
// with oneDNN's native bf16 kernel and with the widened OpenBLAS product; each
// of y, dx, dW and db agrees per element within 1e-5 of |expected| + RMS: the
// two sum the same exact bf16 products in f32, in different orders.
void check_linear_on_both_backends(int64_t rows, int64_t in, int64_t out, uint64_t seed) {
  std::vector<std::vector<Tensor>> results;  // per backend: y, dx, dw, db
  for (bool use_onednn : {true, false}) {
    onednn::set_enabled(use_onednn);
    onednn::set_bf16_path(onednn::Bf16Path::native);
    const Tensor x = test::random_leaf({rows, in}, seed), w = test::random_leaf({out, in}, seed + 1);
    const Tensor b = test::random_leaf({out}, seed + 2);
    Tensor y;
    {
      const AutocastGuard bf16(true);
      y = linear(x, w, b);
    }
    // A fixed output gradient: one that depends on y (y*y) would round to
    // bf16 differently wherever the two y differ by a last bit.
    sum(mul(y, test::random_leaf({rows, out}, seed + 3).detach())).backward();
    results.push_back({y.detach(), x.grad(), w.grad(), b.grad()});
  }
  onednn::set_enabled(true);
  onednn::set_bf16_path(onednn::Bf16Path::automatic);
  for (size_t i = 0; i < results[0].size(); ++i) {
    const test::ElementError e = test::element_error(results[0][i], results[1][i]);
    INFO("output " << i << ": " << e.str());
    CHECK(e.error <= 1e-5);
  }
}

}  // namespace

TEST_CASE("native bf16: linear under autocast gives the widened product's values", "[bf16_isa]") {
  check_linear_on_both_backends(96, 320, 200, 1);
}

TEST_CASE("native bf16: products at heights run as two parts give the widened product's values", "[bf16_isa]") {
  // 464 rows: on AMX onednn::amx_head_rows runs each product as 448 rows and
  // 16. linear's three products all have 464 rows: y = x·Wᵀ (with the bias),
  // dx = g·W, and dW = gᵀ·x, whose A is transposed.
  REQUIRE(onednn::amx_head_rows(464) == 448);
  check_linear_on_both_backends(464, 96, 464, 5);
}
