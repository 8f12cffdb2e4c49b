// conv2d and conv2d_batchnorm (conv + BatchNorm2d + optional GELU, fused) on
// channels-last grids: argument checks, dispatch to kernels/conv_bn.h, and
// the backward of each. Under autocast the CPU's products take bf16 operands
// (kernels/conv_bn.h, bf16_products); CUDA's stay f32.
#include <utility>

#include "core/autocast.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "kernels/conv_bn.h"

namespace vlmc {
namespace {

// Runs cpu(T{}, workspace) or gpu(T{}, workspace, stream) by the device of
// `like`, with T by its dtype and a scratch buffer of the size the pass needs.
// bf16: the CPU kernels' bf16_products (autocast), which need a larger workspace.
template <typename Cpu, typename Gpu>
void run(const char* op, const Tensor& like, const kernels::ConvShape& s, kernels::ConvPass pass, bool bf16,
         Cpu&& cpu, Gpu&& gpu) {
  dispatch_float(op, like.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Device device = like.device();
    if (device.is_cuda()) {
      VLMC_CUDA_DISPATCH({
        const size_t bytes = kernels::cuda::workspace_bytes(s, sizeof(T), pass);
        const Tensor ws = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, device);
        gpu(tag, bytes ? ws.data_ptr() : nullptr, stream_of(like));
      });
    } else {
      const size_t bytes = kernels::cpu::workspace_bytes(s, sizeof(T), pass, bf16);
      const Tensor ws = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, device);
      cpu(tag, bytes ? ws.data_ptr() : nullptr);
    }
  });
}

// Checks x, weight and bias of a convolution and returns its shape.
kernels::ConvShape check_conv(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                              int64_t stride, int64_t padding) {
  VLMC_CHECK(x.defined() && weight.defined(), op, ": input and weight must be defined");
  check_float(op, "input", x);
  check_float(op, "weight", weight);
  if (bias.defined()) check_float(op, "bias", bias);
  check_same_dtype(op, {x, weight, bias});
  check_same_device(op, {x, weight, bias});
  VLMC_CHECK(x.dim() == 4, op, ": input ", shape_str(x.shape()), " must be [B, H, W, C] (channels last)");
  VLMC_CHECK(weight.dim() == 4, op, ": weight ", shape_str(weight.shape()), " must be [Cout, Cin, kh, kw]");
  VLMC_CHECK(x.size(3) == weight.size(1), op, ": input ", shape_str(x.shape()), " has ", x.size(3),
             " channels but weight ", shape_str(weight.shape()), " expects ", weight.size(1));
  VLMC_CHECK(!bias.defined() || bias.shape() == Shape{weight.size(0)}, op, ": bias ",
             shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()), " (expected [",
             weight.size(0), "])");
  VLMC_CHECK(stride >= 1, op, ": stride ", stride, " must be at least 1");
  VLMC_CHECK(padding >= 0, op, ": padding ", padding, " must not be negative");
  VLMC_CHECK(x.numel() > 0 && weight.numel() > 0, op, ": input ", shape_str(x.shape()), " and weight ",
             shape_str(weight.shape()), " must not be empty");
  const int64_t kh = weight.size(2), kw = weight.size(3);
  VLMC_CHECK(x.size(1) + 2 * padding >= kh && x.size(2) + 2 * padding >= kw, op, ": input ",
             shape_str(x.shape()), " padded by ", padding, " is smaller than the ", kh, "x", kw,
             " kernel of weight ", shape_str(weight.shape()));
  return kernels::make_conv_shape(x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), kh, kw,
                                  stride, stride, padding, padding);
}

// A per-channel [Cout] tensor of conv2d_batchnorm: undefined where allowed,
// else f32/f64 of x's dtype on x's device.
void check_channel_vector(const char* what, const Tensor& t, const Tensor& x, const Tensor& weight,
                          bool required) {
  const char* op = "conv2d_batchnorm";
  if (!t.defined()) {
    VLMC_CHECK(!required, op, ": ", what, " must be defined");
    return;
  }
  VLMC_CHECK(t.shape() == Shape{weight.size(0)}, op, ": ", what, " ", shape_str(t.shape()),
             " does not match weight ", shape_str(weight.shape()), " (expected [", weight.size(0), "])");
  check_float(op, what, t);
  check_same_dtype(op, {x, t});
  check_same_device(op, {x, t});
}

// Whether the convolution's products take bf16 operands: under autocast
// (core/autocast.h), for f32 on the CPU, read once at the forward and kept
// for the backward. The CUDA kernels have no bf16 path: there the products
// stay f32 under autocast.
bool bf16_products(const Tensor& x) {
  return autocast_bf16() && x.dtype() == DType::f32 && !x.device().is_cuda();
}

// Gradient buffers for the inputs whose needs[i] is set; the others stay undefined.
Tensor grad_like(bool needed, const Shape& shape, const Tensor& like) {
  return needed ? Tensor::empty(shape, like.dtype(), like.device()) : Tensor();
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding) {
  const kernels::ConvShape s = check_conv("conv2d", x, weight, bias, stride, padding);
  const Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous(), bc = kernel_input(bias);
  Tensor z = Tensor::empty({s.batch, s.out_h, s.out_w, s.out_c}, x.dtype(), x.device());
  const bool bf16 = bf16_products(x);
  run("conv2d", x, s, kernels::ConvPass::forward, bf16,
      [&](auto t, void* ws) {
        using T = decltype(t);
        kernels::cpu::conv2d_forward<T>(data_or_null<T>(z), data_or_null<T>(xc), data_or_null<T>(wc), data_or_null<T>(bc), s, ws,
                                        bf16);
      },
      [&](auto t, void* ws, cudaStream_t stream) {
        using T = decltype(t);
        kernels::cuda::conv2d_forward<T>(data_or_null<T>(z), data_or_null<T>(xc), data_or_null<T>(wc), data_or_null<T>(bc), s, ws, stream);
      });
  if (!any_requires_grad({x, weight, bias})) return z;
  // dw reads x, dx reads the weight: keep each only when its reader runs.
  const Tensor saved_x = weight.requires_grad() ? xc : Tensor();
  const Tensor saved_w = x.requires_grad() ? wc : Tensor();
  record(z, "conv2d", {x, weight, bias}, [s, saved_x, saved_w, bf16](const Tensor& g, const GradMask& needs) {
    const Tensor gc = g.contiguous();
    std::vector<Tensor> grads{grad_like(needs[0], {s.batch, s.in_h, s.in_w, s.in_c}, gc),
                              grad_like(needs[1], {s.out_c, s.in_c, s.k_h, s.k_w}, gc),
                              grad_like(needs[2], {s.out_c}, gc)};
    run("conv2d backward", gc, s, kernels::ConvPass::backward, bf16,
        [&](auto t, void* ws) {
          using T = decltype(t);
          kernels::cpu::conv2d_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]), data_or_null<T>(gc),
                                           data_or_null<T>(saved_x), data_or_null<T>(saved_w), s, ws, bf16);
        },
        [&](auto t, void* ws, cudaStream_t stream) {
          using T = decltype(t);
          kernels::cuda::conv2d_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]),
                                            data_or_null<T>(gc), data_or_null<T>(saved_x), data_or_null<T>(saved_w), s, ws, stream);
        });
    return grads;
  });
  return z;
}

Tensor conv2d_batchnorm(const Tensor& x, const Tensor& weight, const Tensor& conv_bias, const Tensor& bn_weight,
                        const Tensor& bn_bias, Tensor& running_mean, Tensor& running_var,
                        Tensor& num_batches_tracked, bool training, double momentum, double eps,
                        bool apply_gelu, int64_t stride, int64_t padding) {
  const char* op = "conv2d_batchnorm";
  const kernels::ConvShape s = check_conv(op, x, weight, conv_bias, stride, padding);
  check_channel_vector("bn_weight", bn_weight, x, weight, false);
  check_channel_vector("bn_bias", bn_bias, x, weight, false);
  check_channel_vector("running_mean", running_mean, x, weight, true);
  check_channel_vector("running_var", running_var, x, weight, true);
  for (const Tensor* buffer : {&running_mean, &running_var}) {
    VLMC_CHECK(buffer->is_contiguous() && !buffer->requires_grad(), op, ": the running statistics ",
               describe(*buffer), " must be contiguous buffers that do not require grad (updated in place)");
  }
  if (num_batches_tracked.defined()) {
    VLMC_CHECK(num_batches_tracked.dtype() == DType::i64 && num_batches_tracked.numel() == 1, op,
               ": num_batches_tracked ", describe(num_batches_tracked), " must be one i64 element");
    check_same_device(op, {x, num_batches_tracked});
  }
  VLMC_CHECK(eps > 0, op, ": eps ", eps, " must be positive");
  VLMC_CHECK(!training || s.rows() > 1, op, ": expected more than 1 value per channel when training, got input ",
             shape_str(x.shape()), " -> output [", s.batch, ",", s.out_h, ",", s.out_w, ",", s.out_c, "]");

  const Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  const Tensor cb = kernel_input(conv_bias), gamma = kernel_input(bn_weight), beta = kernel_input(bn_bias);
  const Shape out_shape{s.batch, s.out_h, s.out_w, s.out_c};
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor z = Tensor::empty(out_shape, x.dtype(), x.device());  // pre-normalization, for the backward
  Tensor mean = Tensor::empty({s.out_c}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({s.out_c}, x.dtype(), x.device());
  kernels::BatchNormParams params;
  params.training = training;
  params.momentum = momentum;
  params.eps = eps;
  params.gelu = apply_gelu;
  int64_t* counter = (training && num_batches_tracked.defined())
                         ? static_cast<int64_t*>(num_batches_tracked.data_ptr())
                         : nullptr;
  const bool bf16 = bf16_products(x);
  run(op, x, s, kernels::ConvPass::forward, bf16,
      [&](auto t, void* ws) {
        using T = decltype(t);
        kernels::cpu::conv_bn_forward<T>(data_or_null<T>(y), data_or_null<T>(z), data_or_null<T>(mean), data_or_null<T>(rstd), data_or_null<T>(running_mean),
                                         data_or_null<T>(running_var), counter, data_or_null<T>(xc), data_or_null<T>(wc), data_or_null<T>(cb),
                                         data_or_null<T>(gamma), data_or_null<T>(beta), s, params, ws, bf16);
      },
      [&](auto t, void* ws, cudaStream_t stream) {
        using T = decltype(t);
        kernels::cuda::conv_bn_forward<T>(data_or_null<T>(y), data_or_null<T>(z), data_or_null<T>(mean), data_or_null<T>(rstd),
                                          data_or_null<T>(running_mean), data_or_null<T>(running_var), counter, data_or_null<T>(xc),
                                          data_or_null<T>(wc), data_or_null<T>(cb), data_or_null<T>(gamma), data_or_null<T>(beta), s, params, ws,
                                          stream);
      });
  if (!any_requires_grad({x, weight, conv_bias, bn_weight, bn_bias})) return y;
  const Tensor saved_x = weight.requires_grad() ? xc : Tensor();
  const Tensor saved_w = x.requires_grad() ? wc : Tensor();
  const Tensor saved_beta = apply_gelu ? beta : Tensor();  // only GELU's input needs beta
  record(y, op, {x, weight, conv_bias, bn_weight, bn_bias},
         [s, params, saved_x, saved_w, z, mean, rstd, gamma, saved_beta, bf16](const Tensor& g,
                                                                                const GradMask& needs) {
           const Tensor gc = g.contiguous();
           std::vector<Tensor> grads{grad_like(needs[0], {s.batch, s.in_h, s.in_w, s.in_c}, gc),
                                     grad_like(needs[1], {s.out_c, s.in_c, s.k_h, s.k_w}, gc),
                                     grad_like(needs[2], {s.out_c}, gc), grad_like(needs[3], {s.out_c}, gc),
                                     grad_like(needs[4], {s.out_c}, gc)};
           run("conv2d_batchnorm backward", gc, s, kernels::ConvPass::backward, bf16,
               [&](auto t, void* ws) {
                 using T = decltype(t);
                 kernels::cpu::conv_bn_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]),
                                                   data_or_null<T>(grads[3]), data_or_null<T>(grads[4]), data_or_null<T>(gc), data_or_null<T>(saved_x),
                                                   data_or_null<T>(saved_w), data_or_null<T>(z), data_or_null<T>(mean), data_or_null<T>(rstd),
                                                   data_or_null<T>(gamma), data_or_null<T>(saved_beta), s, params, ws,
                                                   bf16);
               },
               [&](auto t, void* ws, cudaStream_t stream) {
                 using T = decltype(t);
                 kernels::cuda::conv_bn_backward<T>(data_or_null<T>(grads[0]), data_or_null<T>(grads[1]), data_or_null<T>(grads[2]),
                                                    data_or_null<T>(grads[3]), data_or_null<T>(grads[4]), data_or_null<T>(gc),
                                                    data_or_null<T>(saved_x), data_or_null<T>(saved_w), data_or_null<T>(z), data_or_null<T>(mean),
                                                    data_or_null<T>(rstd), data_or_null<T>(gamma), data_or_null<T>(saved_beta), s, params,
                                                    ws, stream);
               });
           return grads;
         });
  return y;
}

}  // namespace vlmc
