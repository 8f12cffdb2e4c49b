// CUDA copy, fill and random-fill kernels (see kernels/copy.h). Grid-stride
// loops; the random fills draw element i exactly as the CPU version does.
#include "kernels/copy.h"

#include "kernels/cuda/check.h"
#include "kernels/element.h"
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
