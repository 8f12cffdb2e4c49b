// bf16 mixed precision for the matrix work, as torch.autocast(dtype=bfloat16)
// does for matmuls.
//
// Inside an AutocastGuard(true), every f32 matrix product done by matmul,
// linear and linear_gelu, forward and the backward's products, takes its two
// operands rounded to bf16 (round to nearest even) and accumulates in f32
// (kernels/gemm.h gemm_bf16). Outputs and gradients stay f32, so everything
// else (softmax, norms, the loss, the optimizer and its master weights) is
// untouched f32. f64 is never affected. conv2d and conv2d_batchnorm round
// their GEMMs' operands on the CPU (kernels/conv_bn.h) and stay f32 on CUDA
// (no bf16 conv kernel there yet). Attention runs as
// two products under autocast (core/ops/attention.cpp), rounded like the rest.
//
// The mode is thread-local, and an op captures it when it runs its forward:
// its backward rounds the same way even if backward() runs outside the guard.
//
// Where the CPU has no bf16 kernel the rounded operands are kept as f32 values
// (autocast_operand below): the same numbers and the same f32 GEMM that
// widened bf16 bits would reach, one pass sooner.
//
// Weight cache: the rounded copy of a leaf that requires grad (a parameter) is
// made once and kept until the outermost guard exits, so repeated uses of a
// weight inside one step (a shared weight, several micro-batches) cast it once.
// The trainer steps the optimizer outside the guard, and the cache is empty
// by then, so no stale copy outlives an update.
#pragma once

#include <cstddef>

#include "core/tensor.h"

namespace vlmc {

// Sets the mode for its scope; guards nest and each restores the mode it found.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool bf16_enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_;
};

// The current mode on this thread: true inside an AutocastGuard(true).
bool autocast_bf16();

// Whether this CPU's bf16 products run on a bf16 kernel (oneDNN's, where
// kernels/cpu/onednn_matmul.h chooses it: AMX, or AVX512-BF16 on an AMD CPU).
// Where they do not, --precision bf16 still rounds as bf16 does, but its
// operands are widened to f32 for the product and the run is no faster than
// f32 (on an AVX2-only AMD EPYC 2-46 % slower; docs/perf.md).
bool cpu_bf16_products_native();

// x (f32) as a contiguous bf16 copy with x's shape and no autograd history, for
// use as a product operand. Taken from (or added to) the weight cache when x is
// a leaf that requires grad and a guard is active; a bf16 x is returned
// detached as it is.
Tensor autocast_bf16_copy(const Tensor& x);

// The form in which autocast hands a product on `device` its rounded
// operands: bf16 bits where the product runs a bf16 kernel (CUDA's cuBLAS; a
// CPU where cpu_bf16_products_native()), and elsewhere f32 values rounded to
// bf16's precision: the same numbers, which the f32 GEMM multiplies as they
// are, where bf16 bits would be widened back to f32 by every product that
// reads them (a third pass over each operand: with oneDNN held to AVX2 the
// linear connector ran 3-12 % slower in bf16 than in f32 so; docs/perf.md).
DType autocast_operand_dtype(const Device& device);

// x (f32) rounded to bf16 as a product's operand, in autocast_operand_dtype's
// form for x's device: contiguous, x's shape, no autograd history; cached as
// autocast_bf16_copy caches. A bf16 x is returned detached as it is.
Tensor autocast_operand(const Tensor& x);

// A biased product's backward under autocast on the CPU, in one pass over its
// output gradient g [rows, cols] (f32, contiguous): returns g rounded as
// autocast_operand rounds it (not cached), and writes col_sums [cols] (f32,
// the bias gradient) = Σ_rows g with sum(g, {0})'s bits
// (kernels/reduce.h round_bf16_with_column_sums): one read of g instead of two.
Tensor autocast_operand_with_column_sums(const Tensor& g, const Tensor& col_sums);

// Entries in this thread's weight cache (for tests).
size_t autocast_cache_size();

}  // namespace vlmc
