// CUDA indexing kernels (see kernels/index.h). Grid-stride loops, one thread
// per output element, consecutive threads on consecutive output elements so
// that writes (and the contiguous reads) coalesce. Forward kernels move
// elements as unsigned integers of the dtype's width; the accumulating
// backward kernels use atomicAdd, so repeated indices sum in an unspecified
// order (bit-level run-to-run differences; the CPU version is deterministic).
//
// Iterate on this file (on a GPU machine; docs/cuda.md):
//   cmake --build build --target vlmc_cuda_tests bench_ops
//   build/tests/vlmc_cuda_tests "[index]"          # this family against the CPU; also "[op_cases]"
//   build/bench/bench_ops --cuda-only [--quick]   # validates each version, then times it
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/load_store.h"
#include "kernels/index.h"
#include "kernels/type_dispatch.h"

namespace vlmc::kernels::cuda {
namespace {

constexpr int kBlock = 256;

#define VLMC_GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// first_bad holds all ones (-1) on entry; atomicMin keeps the lowest bad position.
__global__ void out_of_range_kernel(unsigned long long* first_bad, const int64_t* index, Layout l,
                                    int64_t n, int64_t bound, bool contiguous) {
  VLMC_GRID_STRIDE(i, n) {
    const int64_t v = index[contiguous ? i : l.offset_of(i)];
    if (v < 0 || v >= bound) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// After out_of_range_kernel: the index at the lowest bad position, so the
// error can name the value (one thread, after the scan on the same stream).
__global__ void bad_value_kernel(int64_t* first_bad, const int64_t* index, Layout l, bool contiguous) {
  const int64_t i = first_bad[0];
  if (i >= 0) first_bad[1] = index[contiguous ? i : l.offset_of(i)];
}

// out: [outer, n, inner], x: [outer, size, inner].
template <typename T>
__global__ void index_select_kernel(T* out, const T* x, const int64_t* index, int64_t size,
                                    int64_t inner, int64_t n, int64_t total) {
  VLMC_GRID_STRIDE(t, total) {
    const int64_t k = t % inner, r = t / inner;
    const int64_t j = r % n, o = r / n;
    const int64_t v = index[j];
    out[t] = (v >= 0 && v < size) ? x[(o * size + v) * inner + k] : T(0);  // a bad index is reported, not read
  }
}

// dst: [outer, size, inner] += src: [outer, n, inner] scattered along dim 1.
template <typename T>
__global__ void index_add_kernel(T* dst, const T* src, const int64_t* index, int64_t size,
                                 int64_t inner, int64_t n, int64_t total) {
  VLMC_GRID_STRIDE(t, total) {
    const int64_t k = t % inner, r = t / inner;
    const int64_t j = r % n, o = r / n;
    const int64_t v = index[j];
    if (v >= 0 && v < size) atomicAdd(dst + (o * size + v) * inner + k, src[t]);
  }
}

template <typename T>
__global__ void gather_kernel(T* out, const T* x, const int64_t* index, GatherGeometry g, int64_t total) {
  VLMC_GRID_STRIDE(i, total) {
    const int64_t v = index[i];
    out[i] = (v >= 0 && v < g.x_dim_size) ? x[g.x.offset_of(i) + v * g.x_dim_stride] : T(0);
  }
}

template <typename T>
__global__ void scatter_add_kernel(T* dst, const T* src, const int64_t* index, GatherGeometry g,
                                   int64_t total) {
  VLMC_GRID_STRIDE(i, total) {
    const int64_t v = index[i];
    if (v >= 0 && v < g.x_dim_size) atomicAdd(dst + g.x.offset_of(i) + v * g.x_dim_stride, src[i]);
  }
}

template <typename T>
__global__ void where_kernel(T* out, const uint8_t* cond, Layout cl, const T* a, Layout al, const T* b,
                             Layout bl, int64_t total, bool contiguous) {
  VLMC_GRID_STRIDE(i, total) {
    if (contiguous) {
      out[i] = cond[i] ? a[i] : b[i];
    } else {
      out[i] = cond[cl.offset_of(i)] ? a[al.offset_of(i)] : b[bl.offset_of(i)];
    }
  }
}

template <typename T>
__global__ void masked_fill_kernel(T* out, const T* x, Layout xl, const uint8_t* mask, Layout ml,
                                   T fill, int64_t total, bool contiguous) {
  VLMC_GRID_STRIDE(i, total) {
    if (contiguous) {
      out[i] = mask[i] ? fill : x[i];
    } else {
      out[i] = mask[ml.offset_of(i)] ? fill : x[xl.offset_of(i)];
    }
  }
}

#undef VLMC_GRID_STRIDE

}  // namespace

void find_out_of_range(int64_t* first_bad, const int64_t* index, const Layout& layout, int64_t bound,
                       cudaStream_t stream) {
  const int64_t n = layout.numel();
  if (n == 0) return;
  out_of_range_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(
      reinterpret_cast<unsigned long long*>(first_bad), index, layout, n, bound, layout.is_contiguous());
  VLMC_CUDA_CHECK_LAUNCH();
  bad_value_kernel<<<1, 1, 0, stream>>>(first_bad, index, layout, layout.is_contiguous());
  VLMC_CUDA_CHECK_LAUNCH();
}

void index_select(void* out, DType dtype, const void* x, const int64_t* index, int64_t outer,
                  int64_t size, int64_t inner, int64_t n, cudaStream_t stream) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    index_select_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), index, size, inner, n, total);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void index_add(void* dst, DType dtype, const void* src, const int64_t* index, int64_t outer,
               int64_t size, int64_t inner, int64_t n, cudaStream_t stream) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  by_float("index_add", dtype, [&](auto tag) {
    using T = decltype(tag);
    index_add_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(dst), static_cast<const T*>(src), index, size, inner, n, total);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void gather(void* out, DType dtype, const void* x, const int64_t* index, const GatherGeometry& geometry,
            cudaStream_t stream) {
  const int64_t total = geometry.x.numel();
  if (total == 0) return;
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    gather_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), index, geometry, total);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void scatter_add(void* dst, DType dtype, const void* src, const int64_t* index,
                 const GatherGeometry& geometry, cudaStream_t stream) {
  const int64_t total = geometry.x.numel();
  if (total == 0) return;
  by_float("scatter_add", dtype, [&](auto tag) {
    using T = decltype(tag);
    scatter_add_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(dst), static_cast<const T*>(src), index, geometry, total);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void where(void* out, DType dtype, const uint8_t* cond, const Layout& cond_layout, const void* a,
           const Layout& a_layout, const void* b, const Layout& b_layout, cudaStream_t stream) {
  const int64_t total = cond_layout.numel();
  if (total == 0) return;
  const bool contiguous =
      cond_layout.is_contiguous() && a_layout.is_contiguous() && b_layout.is_contiguous();
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    where_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(out), cond, cond_layout, static_cast<const T*>(a), a_layout,
        static_cast<const T*>(b), b_layout, total, contiguous);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

void masked_fill(void* out, DType dtype, const void* x, const Layout& x_layout, const uint8_t* mask,
                 const Layout& mask_layout, double value, cudaStream_t stream) {
  const int64_t total = x_layout.numel();
  if (total == 0) return;
  const bool contiguous = x_layout.is_contiguous() && mask_layout.is_contiguous();
  by_width(dtype, [&](auto tag) {
    using T = decltype(tag);
    // The fill value converted once on the host to dtype, passed as raw bits.
    alignas(8) unsigned char bytes[8] = {};
    store_from_double(bytes, dtype, 0, value);
    T fill;
    std::memcpy(&fill, bytes, sizeof(T));
    masked_fill_kernel<T><<<grid_for(total, kBlock), kBlock, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x), x_layout, mask, mask_layout, fill, total,
        contiguous);
  });
  VLMC_CUDA_CHECK_LAUNCH();
}

}  // namespace vlmc::kernels::cuda
