// Strided copy with dtype conversion, fill, and seeded random fills: the
// kernels behind contiguous(), to(), copy_(), fill_() and the random factories.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"

namespace vlmc::kernels {

namespace cpu {
// dst[i] = convert(src[i]) for every index i of the (equal) shapes of both layouts.
void copy(void* dst, DType dst_dtype, const Layout& dst_layout, const void* src, DType src_dtype,
          const Layout& src_layout);
void fill(void* dst, DType dtype, const Layout& layout, double value);
// dst[i] = src[i] rounded to bf16 (nearest even) and kept as f32, for n
// contiguous elements; dst may be src. autocast's operands where the product
// runs the f32 GEMM (core/autocast.h).
void round_to_bf16_precision(float* dst, const float* src, int64_t n);
// Contiguous n elements; see kernels/philox.h for how element i is drawn.
void fill_normal(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double mean,
                 double std);
void fill_uniform(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double low,
                  double high);
}  // namespace cpu

namespace cuda {
void copy(void* dst, DType dst_dtype, const Layout& dst_layout, const void* src, DType src_dtype,
          const Layout& src_layout, cudaStream_t stream);
void fill(void* dst, DType dtype, const Layout& layout, double value, cudaStream_t stream);
void fill_normal(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double mean,
                 double std, cudaStream_t stream);
void fill_uniform(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double low,
                  double high, cudaStream_t stream);
}  // namespace cuda

}  // namespace vlmc::kernels
