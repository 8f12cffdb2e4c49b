// Neural-network functions: softmax, log_softmax, layer_norm, rms_norm,
// embedding, cross_entropy and dropout. Each checks its arguments, runs the
// kernels of kernels/nn.h on contiguous buffers, and records a backward that
// calls the matching backward kernel.
#include "kernels/nn.h"

#include <cstdint>
#include <functional>
#include <string>

#include "core/cuda/deferred_check.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/philox.h"

namespace vlmc {
namespace {

// The two i64 error slots of kernels/nn.h, zeroed, where the kernel can write
// them. On the CPU they are read as soon as the kernel returns; on CUDA they
// are a deferred-check record (core/cuda/deferred_check.h), so that the op
// does not wait for the GPU: `message(value)` is thrown at the next
// synchronisation if the kernel set them.
struct ErrorSlots {
  int64_t host[2] = {0, 0};
  int64_t* device = nullptr;  // the record's slots, on a CUDA device
  std::function<std::string(int64_t)> message;

  ErrorSlots(Device d, std::function<std::string(int64_t)> what) : message(std::move(what)) {
    if (d.is_cuda()) {
      device = cuda::defer_check(d.index, {0, 0}, [message = message](const int64_t* slots) {
        return slots[0] != 0 ? message(slots[1]) : std::string();
      });
    }
  }
  int64_t* data() { return device != nullptr ? device : host; }
  // CPU: throws now when the kernel set the slots. CUDA: the record reports later.
  void check_host() const {
    if (device == nullptr && host[0] != 0) throw Error(message(host[1]));
  }
};

Shape trailing(const Shape& shape, size_t count) {
  return Shape(shape.end() - static_cast<std::ptrdiff_t>(count), shape.end());
}

// ---- softmax -------------------------------------------------------------------

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log, const char* op) {
  VLMC_CHECK(x.defined(), op, ": undefined input");
  check_float(op, "input", x);
  const int64_t nd = x.dim();
  dim = wrap_dim(dim, nd == 0 ? 1 : nd, op);
  // The kernel works over the last dim of [rows, n]: other dims are moved last.
  const bool moved = nd >= 2 && dim != nd - 1;
  const Tensor xd = x.detach();
  const Tensor xt = nd == 0 ? xd.reshape({1}) : (moved ? xd.transpose(dim, -1) : xd).contiguous();
  const int64_t n = xt.size(-1), rows = n == 0 ? 0 : xt.numel() / n;
  Tensor yt = Tensor::empty(xt.shape(), x.dtype(), x.device());
  if (yt.numel() > 0) {
    run_float_kernel(
        op, x,
        [&](auto t) {
          using T = decltype(t);
          kernels::cpu::softmax_forward<T>(data_or_null<T>(yt), data_or_null<T>(xt), rows, n, log);
        },
        [&](auto t, cudaStream_t s) {
          using T = decltype(t);
          kernels::cuda::softmax_forward<T>(data_or_null<T>(yt), data_or_null<T>(xt), rows, n, log, s);
        });
  }
  const auto back_to_x = [nd, moved, dim, shape = x.shape()](const Tensor& t) {
    if (nd == 0) return t.reshape(shape);
    return moved ? t.transpose(dim, -1).contiguous() : t;
  };
  Tensor y = back_to_x(yt);
  // Detached: y may be yt itself, and the closure must not own its own output.
  record(y, op, {x},
         [yt = yt.detach(), back_to_x, nd, moved, dim, rows, n, log, op](const Tensor& g,
                                                                         const GradMask&) {
           const Tensor gt =
               nd == 0 ? g.reshape({1}) : (moved ? g.transpose(dim, -1) : g).contiguous();
           Tensor dxt = Tensor::empty(yt.shape(), yt.dtype(), yt.device());
           if (dxt.numel() > 0) {
             run_float_kernel(
                 op, yt,
                 [&](auto t) {
                   using T = decltype(t);
                   kernels::cpu::softmax_backward<T>(data_or_null<T>(dxt), data_or_null<T>(yt), data_or_null<T>(gt), rows, n,
                                                     log);
                 },
                 [&](auto t, cudaStream_t s) {
                   using T = decltype(t);
                   kernels::cuda::softmax_backward<T>(data_or_null<T>(dxt), data_or_null<T>(yt), data_or_null<T>(gt), rows, n,
                                                      log, s);
                 });
           }
           return std::vector<Tensor>{back_to_x(dxt)};
         });
  return y;
}

// ---- layer norm and RMS norm ------------------------------------------------------

// Checks shared by both norms; returns the number of normalised elements per row.
int64_t check_norm(const char* op, const Tensor& x, const Shape& normalized_shape,
                   const Tensor& weight, const Tensor& bias) {
  VLMC_CHECK(x.defined(), op, ": undefined input");
  VLMC_CHECK(!normalized_shape.empty(), op, ": normalized_shape must not be empty");
  VLMC_CHECK(x.dim() >= static_cast<int64_t>(normalized_shape.size()) &&
                 trailing(x.shape(), normalized_shape.size()) == normalized_shape,
             op, ": input ", shape_str(x.shape()), " does not end with normalized_shape ",
             shape_str(normalized_shape));
  VLMC_CHECK(!weight.defined() || weight.shape() == normalized_shape, op, ": weight ",
             shape_str(weight.shape()), " does not match normalized_shape ",
             shape_str(normalized_shape));
  VLMC_CHECK(!bias.defined() || bias.shape() == normalized_shape, op, ": bias ",
             shape_str(bias.shape()), " does not match normalized_shape ",
             shape_str(normalized_shape));
  check_float(op, "input", x);
  if (weight.defined()) check_float(op, "weight", weight);
  if (bias.defined()) check_float(op, "bias", bias);
  check_same_dtype(op, {x, weight, bias});
  check_same_device(op, {x, weight, bias});
  return shape_numel(normalized_shape);
}

Tensor norm_impl(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                 const Tensor& bias, double eps, bool center) {
  const char* op = center ? "layer_norm" : "rms_norm";
  const int64_t d = check_norm(op, x, normalized_shape, weight, bias);
  int64_t rows = 1;
  for (size_t i = 0; i + normalized_shape.size() < x.shape().size(); ++i) rows *= x.shape()[i];
  const Tensor xc = x.detach().contiguous(), wc = kernel_input(weight), bc = kernel_input(bias);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  // Row statistics saved for the backward (mean only when centring).
  Tensor mean = center ? Tensor::empty({rows}, x.dtype(), x.device()) : Tensor();
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (y.numel() > 0) {
    run_float_kernel(
        op, x,
        [&](auto t) {
          using T = decltype(t);
          if (center) {
            kernels::cpu::layer_norm_forward<T>(data_or_null<T>(y), data_or_null<T>(mean), data_or_null<T>(rstd), data_or_null<T>(xc),
                                                data_or_null<T>(wc), data_or_null<T>(bc), rows, d, eps);
          } else {
            kernels::cpu::rms_norm_forward<T>(data_or_null<T>(y), data_or_null<T>(rstd), data_or_null<T>(xc), data_or_null<T>(wc), rows,
                                              d, eps);
          }
        },
        [&](auto t, cudaStream_t s) {
          using T = decltype(t);
          if (center) {
            kernels::cuda::layer_norm_forward<T>(data_or_null<T>(y), data_or_null<T>(mean), data_or_null<T>(rstd), data_or_null<T>(xc),
                                                 data_or_null<T>(wc), data_or_null<T>(bc), rows, d, eps, s);
          } else {
            kernels::cuda::rms_norm_forward<T>(data_or_null<T>(y), data_or_null<T>(rstd), data_or_null<T>(xc), data_or_null<T>(wc),
                                               rows, d, eps, s);
          }
        });
  }
  if (!any_requires_grad({x, weight, bias})) return y;
  // The weight enters only dx; x and the statistics enter dx and dweight.
  const Tensor saved_w = x.requires_grad() ? wc : Tensor();
  record(y, op, {x, weight, bias},
         [xc, saved_w, mean, rstd, rows, d, center, op, nshape = normalized_shape](
             const Tensor& g, const GradMask& needs) {
           const Tensor gc = g.contiguous();
           std::vector<Tensor> grads(3);
           if (needs[0]) grads[0] = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
           for (size_t i = 1; i < 3; ++i)
             if (needs[i]) grads[i] = Tensor::zeros(nshape, xc.dtype(), xc.device());
           if (xc.numel() == 0) return grads;
           run_float_kernel(
               op, xc,
               [&](auto t) {
                 using T = decltype(t);
                 if (center) {
                   kernels::cpu::layer_norm_backward<T>(
                       data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]), data_or_null<T>(gc), data_or_null<T>(xc),
                       data_or_null<T>(mean), data_or_null<T>(rstd), data_or_null<T>(saved_w), rows, d);
                 } else {
                   kernels::cpu::rms_norm_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]),
                                                      data_or_null<T>(gc), data_or_null<T>(xc), data_or_null<T>(rstd),
                                                      data_or_null<T>(saved_w), rows, d);
                 }
               },
               [&](auto t, cudaStream_t s) {
                 using T = decltype(t);
                 if (center) {
                   kernels::cuda::layer_norm_backward<T>(
                       data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]), data_or_null<T>(gc), data_or_null<T>(xc),
                       data_or_null<T>(mean), data_or_null<T>(rstd), data_or_null<T>(saved_w), rows, d, s);
                 } else {
                   kernels::cuda::rms_norm_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]),
                                                       data_or_null<T>(gc), data_or_null<T>(xc), data_or_null<T>(rstd),
                                                       data_or_null<T>(saved_w), rows, d, s);
                 }
               });
           return grads;
         });
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false, "softmax"); }

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_impl(x, dim, true, "log_softmax");
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  return norm_impl(x, normalized_shape, weight, bias, eps, true);
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps) {
  return norm_impl(x, normalized_shape, weight, Tensor(), eps, false);
}

// ---- embedding ---------------------------------------------------------------------

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  VLMC_CHECK(weight.defined() && indices.defined(), "embedding: undefined weight or indices");
  VLMC_CHECK(weight.dim() == 2, "embedding: weight ", shape_str(weight.shape()),
             " must be 2-D [num, dim]");
  if (weight.dtype() == DType::bf16 || weight.dtype() == DType::f16) {
    // A frozen table kept in a checkpoint's dtype: its rows are gathered as
    // they are and widened to f32 (exact), so everything after computes in f32.
    VLMC_CHECK(!weight.requires_grad(), "embedding: weight ", describe(weight), " is ", dtype_name(weight.dtype()),
               " and requires grad: trained parameters are f32 masters (freeze it, or convert it to f32)");
    check_dtype("embedding", "indices", indices, DType::i64);
    check_same_device("embedding", {weight, indices});
    const int64_t num = weight.size(0);
    Shape out_shape = indices.shape();
    out_shape.push_back(weight.size(1));
    const Tensor idx = indices.contiguous().reshape({indices.numel()});
    check_index_bound(idx, num, [num, shape = shape_str(weight.shape())](int64_t bad) {
      return str("embedding: index ", bad, " is out of range for ", num, " embeddings (weight ", shape, ")");
    });
    return index_select(weight.detach(), 0, idx).to(DType::f32).view(out_shape);
  }
  check_float("embedding", "weight", weight);
  check_dtype("embedding", "indices", indices, DType::i64);
  check_same_device("embedding", {weight, indices});
  const int64_t num = weight.size(0), d = weight.size(1), n = indices.numel();
  Shape out_shape = indices.shape();
  out_shape.push_back(d);
  VLMC_CHECK(out_shape.size() <= static_cast<size_t>(kernels::kMaxDims), "embedding: indices ",
             shape_str(indices.shape()), " have too many dims");
  const Tensor idx = indices.contiguous(), wc = weight.detach().contiguous();
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  if (n > 0) {
    ErrorSlots error(weight.device(), [num, shape = shape_str(weight.shape())](int64_t bad) {
      return str("embedding: index ", bad, " is out of range for ", num, " embeddings (weight ", shape,
                 ")");
    });
    run_float_kernel(
        "embedding", weight,
        [&](auto t) {
          using T = decltype(t);
          kernels::cpu::embedding_forward<T>(data_or_null<T>(out), error.data(), data_or_null<T>(wc),
                                             data_or_null<int64_t>(idx), n, num, d);
        },
        [&](auto t, cudaStream_t s) {
          using T = decltype(t);
          kernels::cuda::embedding_forward<T>(data_or_null<T>(out), error.data(), data_or_null<T>(wc),
                                              data_or_null<int64_t>(idx), n, num, d, s);
        });
    error.check_host();
  }
  record(out, "embedding", {weight}, [idx, num, d, n](const Tensor& g, const GradMask&) {
    const Tensor gc = g.contiguous();
    Tensor dw = Tensor::empty({num, d}, g.dtype(), g.device());
    if (n == 0 || dw.numel() == 0) return std::vector<Tensor>{dw.zero_()};
    run_float_kernel(
        "embedding", gc,
        [&](auto t) {
          using T = decltype(t);
          kernels::cpu::embedding_backward<T>(data_or_null<T>(dw), data_or_null<T>(gc), data_or_null<int64_t>(idx), n, num, d);
        },
        [&](auto t, cudaStream_t s) {
          using T = decltype(t);
          kernels::cuda::embedding_backward<T>(data_or_null<T>(dw), data_or_null<T>(gc), data_or_null<int64_t>(idx), n, num, d,
                                               s);
        });
    return std::vector<Tensor>{dw};
  });
  return out;
}

// ---- cross entropy -----------------------------------------------------------------

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  VLMC_CHECK(logits.defined() && targets.defined(), "cross_entropy: undefined logits or targets");
  VLMC_CHECK(logits.dim() == 2, "cross_entropy: logits ", shape_str(logits.shape()),
             " must be 2-D [N, C]");
  VLMC_CHECK(targets.shape() == Shape{logits.size(0)}, "cross_entropy: logits ",
             shape_str(logits.shape()), " and targets ", shape_str(targets.shape()),
             ": expected targets [", logits.size(0), "]");
  VLMC_CHECK(logits.size(1) > 0, "cross_entropy: logits ", shape_str(logits.shape()),
             " have no classes");
  check_float("cross_entropy", "logits", logits);
  check_dtype("cross_entropy", "targets", targets, DType::i64);
  check_same_device("cross_entropy", {logits, targets});
  const int64_t n = logits.size(0), c = logits.size(1);
  const Tensor lc = logits.detach().contiguous(), tc = targets.contiguous();
  const Device device = logits.device();
  Tensor loss = Tensor::empty({}, logits.dtype(), device);
  Tensor count = Tensor::empty({1}, logits.dtype(), device);  // kept rows, for the backward
  Tensor lse = Tensor::empty({n}, logits.dtype(), device);
  Tensor nll = Tensor::empty({n}, logits.dtype(), device);  // per-row losses, forward only
  ErrorSlots error(device, [c, ignore_index, shape = shape_str(logits.shape())](int64_t bad) {
    return str("cross_entropy: target ", bad, " is out of range for ", c, " classes (logits ", shape,
               ", ignore_index ", ignore_index, ")");
  });
  run_float_kernel(
      "cross_entropy", logits,
      [&](auto t) {
        using T = decltype(t);
        kernels::cpu::cross_entropy_forward<T>(data_or_null<T>(loss), data_or_null<T>(count), data_or_null<T>(lse),
                                               data_or_null<T>(nll), error.data(), data_or_null<T>(lc),
                                               data_or_null<int64_t>(tc), n, c, ignore_index);
      },
      [&](auto t, cudaStream_t s) {
        using T = decltype(t);
        kernels::cuda::cross_entropy_forward<T>(data_or_null<T>(loss), data_or_null<T>(count), data_or_null<T>(lse),
                                                data_or_null<T>(nll), error.data(), data_or_null<T>(lc),
                                                data_or_null<int64_t>(tc), n, c, ignore_index, s);
      });
  error.check_host();
  record(loss, "cross_entropy", {logits},
         [lc, tc, lse, count, n, c, ignore_index](const Tensor& g, const GradMask&) {
           const Tensor gc = g.contiguous();
           Tensor dl = Tensor::empty({n, c}, lc.dtype(), lc.device());
           if (dl.numel() == 0) return std::vector<Tensor>{dl};
           run_float_kernel(
               "cross_entropy", lc,
               [&](auto t) {
                 using T = decltype(t);
                 kernels::cpu::cross_entropy_backward<T>(data_or_null<T>(dl), data_or_null<T>(gc), data_or_null<T>(count),
                                                         data_or_null<T>(lc), data_or_null<T>(lse), data_or_null<int64_t>(tc),
                                                         n, c, ignore_index);
               },
               [&](auto t, cudaStream_t s) {
                 using T = decltype(t);
                 kernels::cuda::cross_entropy_backward<T>(data_or_null<T>(dl), data_or_null<T>(gc), data_or_null<T>(count),
                                                          data_or_null<T>(lc), data_or_null<T>(lse), data_or_null<int64_t>(tc),
                                                          n, c, ignore_index, s);
               });
           return std::vector<Tensor>{dl};
         });
  return loss;
}

// ---- dropout ----------------------------------------------------------------------------

namespace {

// y = x * mask / (1 - p) with the mask drawn from (seed, offset); also the backward.
Tensor apply_dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = y.numel();
  if (n == 0) return y;
  run_float_kernel(
      "dropout", x,
      [&](auto t) {
        using T = decltype(t);
        kernels::cpu::dropout<T>(data_or_null<T>(y), data_or_null<T>(xc), n, p, seed, offset);
      },
      [&](auto t, cudaStream_t s) {
        using T = decltype(t);
        kernels::cuda::dropout<T>(data_or_null<T>(y), data_or_null<T>(xc), n, p, seed, offset, s);
      });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  VLMC_CHECK(x.defined(), "dropout: undefined input");
  VLMC_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got ", p);
  check_float("dropout", "input", x);
  if (!training || p == 0.0) return x;
  // Reserve this draw's counters; the backward redraws the same mask from them.
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.advance(kernels::uniform_counters(x.numel()));
  Tensor y = apply_dropout(x.detach(), p, seed, offset);
  record(y, "dropout", {x}, [p, seed, offset](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{apply_dropout(g, p, seed, offset)};
  });
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training) {
  return dropout(x, p, training, default_generator());
}

}  // namespace vlmc
