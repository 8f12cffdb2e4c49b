// Main of the native-bf16 suite: lists tests anywhere (ctest discovers them at
// build time), but runs them only in a build with oneDNN on a CPU with a bf16
// dot-product instruction (AVX512-BF16 or AMX-BF16, read from cpuid).
// Elsewhere it exits with 77, registered in ctest as SKIP_RETURN_CODE, so each
// test shows as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cpuid.h>

#include <cstdio>
#include <cstring>

namespace {

bool cpu_has_bf16_dot() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool amx_bf16 = (edx >> 22) & 1;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  const bool avx512_bf16 = (eax >> 5) & 1;
  return amx_bf16 || avx512_bf16;
}

}  // namespace

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0) listing = true;
  if (!listing && !VLMC_WITH_ONEDNN) {
    std::printf("skipped: this build has no oneDNN (-DVLMC_ONEDNN=OFF, or libdnnl-dev not found)\n");
    return 77;
  }
  if (!listing && !cpu_has_bf16_dot()) {
    std::printf("skipped: this CPU has neither AVX512-BF16 nor AMX-BF16\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
