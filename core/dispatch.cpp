#include "core/dispatch.h"

namespace vlmc {

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
