// The CPU GEMMs' fast path: oneDNN's matmul primitive (Debian's libdnnl, the
// library PyTorch's CPU matmuls use), internal to kernels/cpu/gemm*.cpp.
//
// Why oneDNN and not only OpenBLAS:
//   - bf16: oneDNN multiplies bf16 operands directly (AVX512-BF16's vdpbf16ps,
//     AMX's tiles) with f32 accumulation. OpenBLAS has no bf16 GEMM here, so
//     the alternative widens both operands to f32 first and runs sgemm.
//   - f32: OpenBLAS picks its kernels by CPU model; on a CPU model it does
//     not know (a virtual "Intel Xeon Processor" with AVX-512), Debian's
//     0.3.21 runs its generic Prescott (SSE3) kernels at a fifth of the
//     speed. oneDNN picks by the ISA flags it reads from cpuid.
// docs/perf.md has the measurements (bench_gemm prints both backends).
//
// matmul() returns false, having written nothing, whenever oneDNN is not the
// way: the build has no oneDNN, VLMC_GEMM=openblas (or set_enabled(false))
// asks for OpenBLAS, the
// call has a shape oneDNN cannot express (both operands broadcast over a
// batch), or oneDNN offers only its reference (scalar) implementation for it
// on this CPU (bf16 on an AVX2-only CPU). The caller then runs its OpenBLAS
// path, so every call has an answer on every machine.
//
// Determinism: a primitive is created for the shape and the current thread
// count and cached; for a given thread count and CPU it sums in a fixed
// order, so results repeat bit for bit from run to run.
#pragma once

#include <cstdint>
#include <string>

namespace vlmc::kernels::cpu::onednn {

enum class Operands { f32, bf16 };  // C and the accumulation are always f32

// The strided-batched GEMM of kernels/gemm.h, row-major: for i < batch,
//   C_i [m, n] = alpha * op(A_i) [m, k] * op(B_i) [k, n] + beta * C_i (+ bias),
// A_i at a + i * stride_a elements (stride 0: one matrix for the batch).
// bf16 operands are their 16-bit patterns (uint16_t). A bias (f32 [n], added
// to every row in the kernel's epilogue, as linear's) is taken with batch 1
// and alpha 1 only. Runs the product and returns true, or returns false
// without touching C.
bool matmul(Operands operands, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            const void* a, int64_t lda, int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, float beta,
            float* c, int64_t ldc, int64_t stride_c, int64_t batch, const float* bias = nullptr);

// Whether this build and CPU would send typical products of these operands
// to oneDNN (the build has it, it is not switched off, oneDNN's
// implementation for a plain product is not the reference one, and for bf16
// the path above says native).
bool enabled(Operands operands);

// Process-wide switch, on unless VLMC_GEMM=openblas: off sends every product
// to OpenBLAS (benchmarks and tests compare the two backends in one run).
void set_enabled(bool on);

// Which bf16 products oneDNN multiplies natively (the rest are widened to f32
// by the caller, then run as f32 products, on oneDNN too):
//   automatic  natively where oneDNN's kernel is AMX's, or where it is
//              avx512_core_bf16 on an AMD CPU; widened elsewhere. Measured
//              with bench_gemm on 2 threads (docs/perf.md): on an Intel Xeon
//              with AVX512-BF16 and no AMX oneDNN's bf16 kernel ran at 170
//              GFLOP/s and its f32 one at 300, so there widening wins; on an
//              AMD EPYC with AVX512-BF16 the bf16 kernel ran at 355-411 and
//              the f32 one at 163-216, so there native wins (1.97-2.57x).
//              On an Intel Xeon exposing AMX, oneDNN's AMX kernel ran at
//              1006-1458 GFLOP/s and its f32 one at 260-310 (3.9-5.3x). The
//              choice is fixed per CPU, never timed at run time, so a run's
//              numbers do not depend on a measurement's noise.
//   native     wherever oneDNN has a non-reference bf16 kernel;
//   widened    never.
// VLMC_GEMM_BF16=automatic|native|widened sets it at start.
enum class Bf16Path { automatic, native, widened };
void set_bf16_path(Bf16Path path);

// The rows a bf16 product of m rows runs as its first part on AMX, the rest
// as a second product; 0: one product. oneDNN 2.6.3's AMX matmul takes the
// largest divisor of m between 32 and 64 as its block of rows when there is
// one, and at some of those (58 for m = 464, 59 for 472, 61 for 488) ran
// 1.4-4.3x slower than at the heights around them: every such block was over
// 48 rows (below, blocks of 48 are weighed too) and its largest divisor up to
// 16 was 1, 2 or 3, as if its tiles held that many rows. The
// first part is then m rounded down to 64 rows (docs/perf.md, seventeenth
// session: [m, 2048] x [2048, 5632] at every m that is a multiple of 8 from
// 256 to 1024). A rule of m alone: the same call splits the same way on
// every run.
int64_t amx_head_rows(int64_t m);

// For logs and benchmarks, e.g. "oneDNN 2.6.3 brg:avx512_core_bf16", or
// "OpenBLAS (oneDNN switched off)" / "OpenBLAS (built without oneDNN)".
std::string describe(Operands operands);

}  // namespace vlmc::kernels::cpu::onednn
