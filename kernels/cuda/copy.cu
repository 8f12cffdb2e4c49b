// CUDA copy, fill and random-fill kernels (see kernels/copy.h). Grid-stride
// loops; the random fills draw element i exactly as the CPU version does.
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[index],[runtime]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include "kernels/copy.h"

#include "kernels/cuda/check.h"
#include "kernels/load_store.h"
#include "kernels/philox.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

__global__ void copy_kernel(void* dst, DType dst_dtype, Layout dl, const void* src, DType src_dtype,
                            Layout sl, int64_t n, bool contiguous) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t di = contiguous ? i : dl.offset_of(i);
    const int64_t si = contiguous ? i : sl.offset_of(i);
    if (dst_dtype == src_dtype) {
      switch (dtype_size(dst_dtype)) {
        case 8: static_cast<uint64_t*>(dst)[di] = static_cast<const uint64_t*>(src)[si]; break;
        case 4: static_cast<uint32_t*>(dst)[di] = static_cast<const uint32_t*>(src)[si]; break;
        case 2: static_cast<uint16_t*>(dst)[di] = static_cast<const uint16_t*>(src)[si]; break;
        default: static_cast<uint8_t*>(dst)[di] = static_cast<const uint8_t*>(src)[si]; break;
      }
    } else {
      store_from_double(dst, dst_dtype, di, load_as_double(src, src_dtype, si));
    }
  }
}

// The casts autocast makes for every product operand, contiguous: four elements
// a thread through 16-byte loads where the pointers allow (the generic kernel
// above converts one element at a time through double and a dtype switch).
// The same rounding as the generic kernel: float_to_bf16_bits, round to nearest even.
__global__ void f32_to_bf16_kernel(uint16_t* dst, const float* src, int64_t n, bool vector) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (vector) {
    for (; 4 * i + 3 < n; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(src)[i];
      const uint2 packed{float_to_bf16_bits(v.x) | (uint32_t(float_to_bf16_bits(v.y)) << 16),
                         float_to_bf16_bits(v.z) | (uint32_t(float_to_bf16_bits(v.w)) << 16)};
      reinterpret_cast<uint2*>(dst)[i] = packed;
    }
    // The tail (n % 4 elements) by the first threads.
    const int64_t t = (n / 4) * 4 + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) dst[t] = float_to_bf16_bits(src[t]);
    return;
  }
  for (; i < n; i += stride) dst[i] = float_to_bf16_bits(src[i]);
}

__global__ void bf16_to_f32_kernel(float* dst, const uint16_t* src, int64_t n, bool vector) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (vector) {
    for (; 4 * i + 3 < n; i += stride) {
      const uint2 packed = reinterpret_cast<const uint2*>(src)[i];
      reinterpret_cast<float4*>(dst)[i] =
          float4{bf16_bits_to_float(uint16_t(packed.x & 0xffffu)), bf16_bits_to_float(uint16_t(packed.x >> 16)),
                 bf16_bits_to_float(uint16_t(packed.y & 0xffffu)), bf16_bits_to_float(uint16_t(packed.y >> 16))};
    }
    const int64_t t = (n / 4) * 4 + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) dst[t] = bf16_bits_to_float(src[t]);
    return;
  }
  for (; i < n; i += stride) dst[i] = bf16_bits_to_float(src[i]);
}

__global__ void fill_kernel(void* dst, DType dtype, Layout l, double value, int64_t n) {
  const bool contiguous = l.is_contiguous();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_from_double(dst, dtype, contiguous ? i : l.offset_of(i), value);
}

__global__ void normal_kernel(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset,
                              double mean, double std) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_from_double(dst, dtype, i, mean + std * normal_at(seed, offset, i));
}

__global__ void uniform_kernel(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset,
                               double low, double high) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_from_double(dst, dtype, i, low + (high - low) * uniform_at(seed, offset, i));
}

}  // namespace

void copy(void* dst, DType dst_dtype, const Layout& dst_layout, const void* src, DType src_dtype,
          const Layout& src_layout, cudaStream_t stream) {
  const int64_t n = dst_layout.numel();
  if (n == 0) return;
  const bool contiguous = dst_layout.is_contiguous() && src_layout.is_contiguous();
  if (contiguous && dst_dtype == src_dtype) {
    VLMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * dtype_size(dst_dtype),
                                    cudaMemcpyDeviceToDevice, stream));
    return;
  }
  if (contiguous && src_dtype == DType::f32 && dst_dtype == DType::bf16) {
    const bool vector = reinterpret_cast<uintptr_t>(dst) % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
    f32_to_bf16_kernel<<<grid_for(vector ? (n + 3) / 4 : n, kBlock), kBlock, 0, stream>>>(
        static_cast<uint16_t*>(dst), static_cast<const float*>(src), n, vector);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  if (contiguous && src_dtype == DType::bf16 && dst_dtype == DType::f32) {
    const bool vector = reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 8 == 0;
    bf16_to_f32_kernel<<<grid_for(vector ? (n + 3) / 4 : n, kBlock), kBlock, 0, stream>>>(
        static_cast<float*>(dst), static_cast<const uint16_t*>(src), n, vector);
    VLMC_CUDA_CHECK_LAUNCH();
    return;
  }
  copy_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dst, dst_dtype, dst_layout, src, src_dtype,
                                                         src_layout, n, contiguous);
  VLMC_CUDA_CHECK_LAUNCH();
}

void fill(void* dst, DType dtype, const Layout& layout, double value, cudaStream_t stream) {
  const int64_t n = layout.numel();
  if (n == 0) return;
  fill_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dst, dtype, layout, value, n);
  VLMC_CUDA_CHECK_LAUNCH();
}

void fill_normal(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double mean,
                 double std, cudaStream_t stream) {
  if (n == 0) return;
  normal_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dst, dtype, n, seed, offset, mean, std);
  VLMC_CUDA_CHECK_LAUNCH();
}

void fill_uniform(void* dst, DType dtype, int64_t n, uint64_t seed, uint64_t offset, double low,
                  double high, cudaStream_t stream) {
  if (n == 0) return;
  uniform_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dst, dtype, n, seed, offset, low, high);
  VLMC_CUDA_CHECK_LAUNCH();
}

}  // namespace vlmc::kernels::cuda
