// Activation checkpointing (torch.utils.checkpoint, the reentrant variant):
// a block's forward runs without recording, so none of its intermediate
// tensors outlive it; only its input is kept. The backward runs the block's
// forward again, this time recording, and back-propagates through that graph
// at once: the parameters inside receive their gradients there (as leaves,
// with the gradient-ready hook firing as usual), and the input's gradient goes
// on into the outer graph.
//
//   h = checkpoint([layer, rotary, mask](const Tensor& x) { return layer->forward(x, rotary, mask); }, h);
//
// Memory: per block, its input instead of every activation; at most one
// block's activations live during the backward. Time: one more forward per block.
//
// The recomputation must compute what the first forward did: `fn` must be a
// pure function of its input and of what it captures (by value: the backward
// runs after the caller's frame is gone), with no randomness (dropout) and no
// state it changes. The autocast mode of the forward is restored for it; on
// the CPU and with the deterministic kernels it gives the same bits, so the
// gradients equal those of the plain backward (tests/core/test_checkpoint.cpp).
//
// When grad mode is off, or `input` does not require grad, fn runs as it
// would without checkpointing (a block whose input needs no gradient has
// nothing to recompute for; its parameters' graph is then recorded normally).
#pragma once

#include <functional>

#include "core/tensor.h"

namespace vlmc {

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& input);

}  // namespace vlmc
