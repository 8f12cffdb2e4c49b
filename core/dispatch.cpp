#include "core/dispatch.h"

#include "core/cuda/deferred_check.h"
#include "kernels/index.h"

namespace vlmc {

void check_index_bound(const Tensor& index, int64_t bound, std::function<std::string(int64_t value)> message) {
  const kernels::Layout layout = make_layout(index.shape(), index.strides());
  if (index.device().is_cuda()) {
    // Slot 0: the first bad position (-1: none); slot 1: the index there.
    [[maybe_unused]] int64_t* slots =
        cuda::defer_check(index.device().index, {-1, 0}, [message = std::move(message)](const int64_t* s) {
          return s[0] >= 0 ? message(s[1]) : std::string();
        });
    VLMC_CUDA_DISPATCH(kernels::cuda::find_out_of_range(slots, index.data<int64_t>(), layout, bound,
                                                        stream_of(index)));
    return;
  }
  int64_t bad = -1;
  kernels::cpu::find_out_of_range(&bad, index.data<int64_t>(), layout, bound);
  if (bad >= 0) throw Error(message(index.data<int64_t>()[layout.offset_of(bad)]));
}

void check_same_device(const char* op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    VLMC_CHECK(t.device() == first->device(), op, ": tensors on ", first->device().str(), " and ",
               t.device().str(), " (", describe(*first), ", ", describe(t), ")");
  }
}

void check_same_dtype(const char* op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    VLMC_CHECK(t.dtype() == first->dtype(), op, ": dtypes ", dtype_name(first->dtype()), " and ",
               dtype_name(t.dtype()), " differ (", describe(*first), ", ", describe(t), ")");
  }
}

void check_float(const char* op, const char* what, const Tensor& t) {
  VLMC_CHECK(t.defined(), op, ": ", what, " is undefined");
  VLMC_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ", what, " ", describe(t),
             " must be f32 or f64");
}

void check_dtype(const char* op, const char* what, const Tensor& t, DType dtype) {
  VLMC_CHECK(t.defined(), op, ": ", what, " is undefined");
  VLMC_CHECK(t.dtype() == dtype, op, ": ", what, " ", describe(t), " must be ", dtype_name(dtype));
}

}  // namespace vlmc
