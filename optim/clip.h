// Gradient clipping by global norm: torch.nn.utils.clip_grad_norm_ (norm_type 2).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace vlmc::optim {

// total = sqrt(sum over the tensors' gradients of sum(g^2)); tensors without a
// gradient are ignored. Then, as PyTorch, coef = max_norm / (total + 1e-6) and,
// when coef < 1, every gradient is scaled by coef in place. Returns total (0 when
// no tensor has a gradient). A non-finite total is returned and the gradients
// scaled by the resulting NaN or 0 coefficient, as PyTorch's error_if_nonfinite=False.
// Gradients are summed in their own dtype on their own device; the norm costs
// one host sync.
// max_norm must be > 0.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

// The clipping decision without a host sync and without touching the gradients.
struct GradClip {
  Tensor total_norm;  // sqrt(sum over the gradients of sum(g^2)), f32, one element
  Tensor coef;        // min(1, max_norm / (total_norm + 1e-6)), f32, one element
};

// Computes GradClip on the parameters' device with the multi-tensor norm kernels
// (kernels/adamw.h): double accumulation, deterministic, nothing read on the
// host. Pass coef to AdamW::step(coef), which scales each gradient as it reads
// it; read total_norm whenever it is wanted (logging), which is when the host
// waits. Tensors without a gradient are ignored (none at all: norm 0, coef 1).
// The gradients must be f32 and on one device (else vlmc::Error naming the
// parameter); non-contiguous ones are copied. max_norm must be > 0.
// coef equals clip_grad_norm_'s scale: scaling by it is the same f32 product.
GradClip clip_coefficient(const std::vector<Tensor>& params, double max_norm);

// Gradient accumulation needs no helper: backward() adds into .grad, so K
// micro-batches whose losses are each divided by K leave the gradient of the
// mean loss over the K micro-batches (the big batch's gradient when the loss is
// a mean over equal-sized micro-batches); clip and step once after the K-th.

}  // namespace vlmc::optim
