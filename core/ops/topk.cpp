// topk_indices and gather_rows: the token selection of the dynamic-resolution
// connector (kernels/topk.h).
#include <algorithm>
#include <string>
#include <vector>

#include "core/cuda/deferred_check.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/topk.h"

namespace vlmc {
namespace {

// x's rows picked back into place: dx [B, N, D] from g [B, k, D].
Tensor gather_rows_backward(const Tensor& grad, const Tensor& inverse, const Shape& x_shape) {
  const Tensor g = grad.contiguous();
  Tensor dx = Tensor::empty(x_shape, g.dtype(), g.device());
  const int64_t rows = x_shape[0], n = x_shape[1], k = g.size(1);
  const int64_t row_bytes = x_shape[2] * static_cast<int64_t>(dtype_size(g.dtype()));
  if (g.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::gather_rows_backward(dx.data_ptr(), g.data_ptr(), inverse.data<int64_t>(),
                                                           rows, n, k, row_bytes, stream_of(g)));
  } else {
    kernels::cpu::gather_rows_backward(dx.data_ptr(), g.data_ptr(), inverse.data<int64_t>(), rows, n, k, row_bytes);
  }
  return dx;
}

}  // namespace

Tensor topk_indices(const Tensor& scores, int64_t k) {
  check_float("topk_indices", "scores", scores);
  VLMC_CHECK(scores.dim() == 2, "topk_indices: scores ", shape_str(scores.shape()), " must be [B, N]");
  const int64_t rows = scores.size(0), n = scores.size(1);
  VLMC_CHECK(k >= 1 && k <= n, "topk_indices: k = ", k, " is outside [1, N] for scores ", shape_str(scores.shape()));
  const Tensor s = scores.contiguous();
  Tensor out = Tensor::empty({rows, k}, DType::i64, scores.device());
  dispatch_float("topk_indices", s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    if (s.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::topk_indices<T>(out.data<int64_t>(), s.data<T>(), rows, n, k, stream_of(s)));
    } else {
      kernels::cpu::topk_indices<T>(out.data<int64_t>(), s.data<T>(), rows, n, k);
    }
  });
  return out;
}

Tensor gather_rows(const Tensor& x, const Tensor& indices) {
  check_dtype("gather_rows", "indices", indices, DType::i64);
  VLMC_CHECK(x.dim() == 3 && indices.dim() == 2 && indices.size(0) == x.size(0), "gather_rows: x ",
             shape_str(x.shape()), " and indices ", shape_str(indices.shape()), " must be [B, N, D] and [B, k]");
  VLMC_CHECK(indices.device() == x.device() || indices.device().is_cpu(), "gather_rows: indices on ",
             indices.device().str(), " but x on ", x.device().str());
  const int64_t rows = x.size(0), n = x.size(1), k = indices.size(1);
  const int64_t row_bytes = x.size(2) * static_cast<int64_t>(dtype_size(x.dtype()));
  const Tensor idx = indices.device() == x.device() ? indices.contiguous() : indices.contiguous().to(x.device());
  const Tensor xc = x.contiguous();

  // The inverse map validates the indices (range, no repeats) and is what the
  // backward gathers through.
  Tensor inverse = Tensor::empty({rows, n}, DType::i64, x.device());
  // error: {code, row, value} as kernels/topk.h writes them; "" when code is 0.
  const auto message = [n, xs = shape_str(x.shape()), is = shape_str(indices.shape())](const int64_t* error) {
    if (error[0] == kernels::kIndexOutOfRange)
      return str("gather_rows: index ", error[2], " in row ", error[1], " is outside [0, ", n, ") (x ", xs,
                 ", indices ", is, ")");
    if (error[0] == kernels::kIndexRepeated)
      return str("gather_rows: index ", error[2], " appears twice in row ", error[1],
                 "; each row's indices must be distinct (x ", xs, ", indices ", is, ")");
    return std::string();
  };
  if (x.device().is_cuda()) {
    // Checked at the next synchronisation (core/cuda/deferred_check.h), not
    // here: the op does not wait for the GPU, and gather_rows' kernel never
    // reads through a bad index meanwhile.
    [[maybe_unused]] int64_t* slots = cuda::defer_check(x.device().index, {0, 0, 0}, message);
    VLMC_CUDA_DISPATCH(kernels::cuda::invert_row_indices(inverse.data<int64_t>(), slots, idx.data<int64_t>(), rows,
                                                         n, k, stream_of(x)));
  } else {
    int64_t error[3] = {0, 0, 0};
    kernels::cpu::invert_row_indices(inverse.data<int64_t>(), error, idx.data<int64_t>(), rows, n, k);
    const std::string what = message(error);
    if (!what.empty()) throw Error(what);
  }

  Tensor y = Tensor::empty({rows, k, x.size(2)}, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::gather_rows(y.data_ptr(), xc.data_ptr(), idx.data<int64_t>(), rows, n, k,
                                                  row_bytes, stream_of(x)));
  } else {
    kernels::cpu::gather_rows(y.data_ptr(), xc.data_ptr(), idx.data<int64_t>(), rows, n, k, row_bytes);
  }
  if (any_requires_grad({x})) {
    record(y, "gather_rows", {x}, [inverse, shape = x.shape()](const Tensor& g, const GradMask&) {
      return std::vector<Tensor>{gather_rows_backward(g, inverse, shape)};
    });
  }
  return y;
}

}  // namespace vlmc
