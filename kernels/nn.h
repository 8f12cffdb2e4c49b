// Neural-network kernels: softmax, layer/RMS norm, embedding, cross entropy
// and dropout, forward and backward, on contiguous row-major buffers.
//
// Conventions: destination first; T is float or double; "rows" count the
// independent vectors a kernel normalises (all leading dims flattened) and
// "n"/"d"/"c" is each vector's length. Every CPU function is the oracle for
// the CUDA one of the same name, and both are designed to give results that do
// not depend on the thread count (per-row or per-column work, fixed summation
// order; the CUDA side not checked for it on a GPU), except the CUDA embedding backward,
// whose atomicAdd order is unspecified.
//
// Out-of-range indices (embedding, cross_entropy) are never read through.
// Those kernels take `error`, two i64 that the caller zeroes beforehand, in
// host memory for cpu:: and device memory for cuda::; a bad index sets
// error[0] = 1 and error[1] = the offending value, for the op to report.
#pragma once

#include <cstdint>

#include "kernels/cuda_stream.h"

namespace vlmc::kernels {

namespace cpu {

// y = softmax(x) (or log_softmax when log) over each row of x [rows, n].
template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t n, bool log);
// Given the forward's output y: dx = y * (dy - sum(dy * y)), or for
// log_softmax dx = dy - exp(y) * sum(dy).
template <typename T>
void softmax_backward(T* dx, const T* y, const T* dy, int64_t rows, int64_t n, bool log);

// y = (x - mean) * rstd * weight + bias over rows of x [rows, d], with the
// biased variance and rstd = 1/sqrt(var + eps); weight/bias may be null.
// mean and rstd [rows] are saved for the backward.
template <typename T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                        int64_t rows, int64_t d, double eps);
// Any of dx [rows, d], dweight [d], dbias [d] may be null (not wanted).
template <typename T>
void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* weight, int64_t rows, int64_t d);

// y = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps); weight may be null.
template <typename T>
void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, int64_t rows, int64_t d,
                      double eps);
template <typename T>
void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight,
                       int64_t rows, int64_t d);

// out [n, d] = weight [num, d] rows at indices [n]; rows of bad indices are zero.
template <typename T>
void embedding_forward(T* out, int64_t* error, const T* weight, const int64_t* indices, int64_t n,
                       int64_t num, int64_t d);
// dweight [num, d] (overwritten) = sum over i of dout[i] added into row indices[i].
template <typename T>
void embedding_backward(T* dweight, const T* dout, const int64_t* indices, int64_t n, int64_t num,
                        int64_t d);

// logits [n, c], targets [n]. loss[0] = mean over kept rows (target !=
// ignore_index) of nll = (max - logits[target]) + log(sum exp(logits - max))
// (NaN when none is kept, as 0/0); count[0] = the number of kept rows;
// lse [n] = logsumexp of each row (for the backward); nll [n] = each row's
// loss (0 where not kept).
template <typename T>
void cross_entropy_forward(T* loss, T* count, T* lse, T* nll, int64_t* error, const T* logits,
                           const int64_t* targets, int64_t n, int64_t c, int64_t ignore_index);
// dlogits = grad[0] * (softmax - onehot(target)) / count[0]; zero rows where ignored.
// grad and count are one-element buffers on the kernel's device.
template <typename T>
void cross_entropy_backward(T* dlogits, const T* grad, const T* count, const T* logits,
                            const T* lse, const int64_t* targets, int64_t n, int64_t c,
                            int64_t ignore_index);

// y[i] = x[i] / (1 - p) where uniform_at(seed, offset, i) >= p, else 0
// (kernels/philox.h). The backward is the same call on the gradient.
template <typename T>
void dropout(T* y, const T* x, int64_t n, double p, uint64_t seed, uint64_t offset);

}  // namespace cpu

namespace cuda {

template <typename T>
void softmax_forward(T* y, const T* x, int64_t rows, int64_t n, bool log, cudaStream_t stream);
template <typename T>
void softmax_backward(T* dx, const T* y, const T* dy, int64_t rows, int64_t n, bool log,
                      cudaStream_t stream);

template <typename T>
void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
                        int64_t rows, int64_t d, double eps, cudaStream_t stream);
template <typename T>
void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* weight, int64_t rows, int64_t d,
                         cudaStream_t stream);
template <typename T>
void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, int64_t rows, int64_t d,
                      double eps, cudaStream_t stream);
template <typename T>
void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight,
                       int64_t rows, int64_t d, cudaStream_t stream);

template <typename T>
void embedding_forward(T* out, int64_t* error, const T* weight, const int64_t* indices, int64_t n,
                       int64_t num, int64_t d, cudaStream_t stream);
template <typename T>
void embedding_backward(T* dweight, const T* dout, const int64_t* indices, int64_t n, int64_t num,
                        int64_t d, cudaStream_t stream);

template <typename T>
void cross_entropy_forward(T* loss, T* count, T* lse, T* nll, int64_t* error, const T* logits,
                           const int64_t* targets, int64_t n, int64_t c, int64_t ignore_index,
                           cudaStream_t stream);
template <typename T>
void cross_entropy_backward(T* dlogits, const T* grad, const T* count, const T* logits,
                            const T* lse, const int64_t* targets, int64_t n, int64_t c,
                            int64_t ignore_index, cudaStream_t stream);

template <typename T>
void dropout(T* y, const T* x, int64_t n, double p, uint64_t seed, uint64_t offset,
             cudaStream_t stream);

}  // namespace cuda

}  // namespace vlmc::kernels
