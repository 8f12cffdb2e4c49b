// CPU fused attention (see kernels/attention.h): the oracle for the CUDA kernels.
// Forward: per (b, h, query row) the scores go to a row buffer, then a two-pass softmax
// with the row maximum subtracted. Backward: per (b, KV head) one worker walks the query
// heads of its group and recomputes P from q, k and the saved logsumexp, so dk/dv rows
// have a single owner and the sums run in a fixed order. Every operand is addressed by its
// HeadStrides, so the heads of a [B, L, H·Dh] projection are read and written in place.
//
// Accumulation: f64 tensors accumulate in double, one term after another (the gradient
// check's oracle). f32 tensors accumulate in float, the dot products as vector lanes
// (`omp simd` reductions), exp in float: the main job's stage-2 step (heads of 32) took
// 30.5 ms instead of 35.3 ms on one thread of an AMD EPYC (docs/perf.md), and the golden
// tests' 1e-5 holds. The exps of a row run as one vectorised pass of fast::exp_f32
// (9e-8 relative; a libm call per score was 3 % of the stage-0 language model's step).
// Both orders are fixed for a given build, so results stay bitwise reproducible.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/parallel_errors.h"

namespace vlmc::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // multiply-adds below which one thread does it all

// Last visible key + 1 for query i under the end-aligned causal mask (S when not causal).
inline int64_t key_limit(int64_t i, bool causal, const AttentionShape& s) {
  if (!causal) return s.kv_len;
  const int64_t lim = i + s.kv_len - s.q_len + 1;
  return lim < 0 ? 0 : (lim > s.kv_len ? s.kv_len : lim);
}

inline bool visible(const int64_t* mask_row, int64_t j) { return mask_row == nullptr || mask_row[j] != 0; }

// The accumulator type: float for f32 tensors, double for f64 ones.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, float>, float, double>;

// a·b over n terms in Acc<T>.
inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}
inline double dot(const double* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

// Head-dim elements whose sums one pass of weighted_rows keeps in registers.
constexpr int64_t kDimBlock = 32;

// out[d] = Σ_j w[j]·rows[j·stride + d] over the visible j < n, in j order. The sums of a
// block of kDimBlock elements stay in registers across j (through memory, each add would
// wait for the previous one's store).
template <typename T, typename A>
void weighted_rows(A* out, const A* w, const T* rows, int64_t stride, int64_t n, int64_t D,
                   const int64_t* mrow) {
  int64_t d0 = 0;
  for (; d0 + kDimBlock <= D; d0 += kDimBlock) {
    A acc[kDimBlock] = {};
    for (int64_t j = 0; j < n; ++j) {
      if (!visible(mrow, j)) continue;
      const A wj = w[j];
      const T* r = rows + j * stride + d0;
      for (int64_t dd = 0; dd < kDimBlock; ++dd) acc[dd] += wj * r[dd];
    }
    for (int64_t dd = 0; dd < kDimBlock; ++dd) out[d0 + dd] = acc[dd];
  }
  if (d0 == D) return;
  for (int64_t d = d0; d < D; ++d) out[d] = A(0);
  for (int64_t j = 0; j < n; ++j) {
    if (!visible(mrow, j)) continue;
    const T* r = rows + j * stride;
    for (int64_t d = d0; d < D; ++d) out[d] += w[j] * r[d];
  }
}

// x[j] = exp(x[j] - shift) for j < n, in place. -inf (a masked score) gives 0.
inline void exp_shifted(float* x, float shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j)
    x[j] = fast::select(x[j] == -std::numeric_limits<float>::infinity(), 0.0f, fast::exp_f32(x[j] - shift));
}
inline void exp_shifted(double* x, double shift, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j] - shift);
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask,
                       bool causal, double scale, const AttentionShape& s, const AttentionStrides& st) {
  const int64_t B = s.batch, H = s.q_heads, Tq = s.q_len, S = s.kv_len, D = s.head_dim;
  const int64_t group = H / s.kv_heads;
  const int64_t rows = B * H * Tq;
  using A = Acc<T>;
  ParallelErrors errors;
#pragma omp parallel if (rows * S * D > kGrain)
  {
    std::vector<A> score, acc;
    const bool ready = errors.run([&] {
      score.resize(static_cast<size_t>(S));
      acc.resize(static_cast<size_t>(D));
    });
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (!ready) continue;
      const int64_t i = r % Tq, h = (r / Tq) % H, b = r / (Tq * H);
      const T* qi = q + st.q.at(b, h, i);
      const T* kh = k + st.k.at(b, h / group, 0);
      const T* vh = v + st.v.at(b, h / group, 0);
      const int64_t* mrow = key_mask ? key_mask + b * S : nullptr;
      const int64_t lim = key_limit(i, causal, s);
      A m = -std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < lim; ++j) {
        if (!visible(mrow, j)) {
          score[j] = -std::numeric_limits<A>::infinity();
          continue;
        }
        score[j] = dot(qi, kh + j * st.k.row, D) * static_cast<A>(scale);
        if (score[j] > m) m = score[j];
      }
      T* oi = out + st.o.at(b, h, i);
      if (m == -std::numeric_limits<A>::infinity()) {  // no visible key: zeros
        for (int64_t d = 0; d < D; ++d) oi[d] = T(0);
        lse[r] = static_cast<T>(m);
        continue;
      }
      exp_shifted(score.data(), m, lim);  // score[j] = P_ij·l, 0 where masked
      A l = 0;
      for (int64_t j = 0; j < lim; ++j) l += score[j];
      weighted_rows(acc.data(), score.data(), vh, st.v.row, lim, D, mrow);
      for (int64_t d = 0; d < D; ++d) oi[d] = static_cast<T>(acc[d] / l);
      lse[r] = static_cast<T>(m + std::log(l));
    }
  }
  errors.rethrow();
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale,
                        const AttentionShape& s, const AttentionStrides& st) {
  const int64_t B = s.batch, H = s.q_heads, Hk = s.kv_heads, Tq = s.q_len, S = s.kv_len, D = s.head_dim;
  const int64_t group = H / Hk;
  const int64_t heads = B * Hk;
  using A = Acc<T>;
  ParallelErrors errors;
#pragma omp parallel if (B * H * Tq * S * D > kGrain)
  {
    std::vector<A> p, dp, dqi, dk_acc, dv_acc;
    const bool ready = errors.run([&] {
      p.resize(static_cast<size_t>(S));
      dp.resize(static_cast<size_t>(S));
      dqi.resize(static_cast<size_t>(D));
      dk_acc.resize(static_cast<size_t>(S * D));
      dv_acc.resize(static_cast<size_t>(S * D));
    });
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < heads; ++bh) {
      if (!ready) continue;
      const int64_t b = bh / Hk, hk = bh % Hk;
      const T* kh = k + st.k.at(b, hk, 0);
      const T* vh = v + st.v.at(b, hk, 0);
      const int64_t* mrow = key_mask ? key_mask + b * S : nullptr;
      std::fill(dk_acc.begin(), dk_acc.end(), A(0));
      std::fill(dv_acc.begin(), dv_acc.end(), A(0));
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t r = (b * H + h) * Tq + i;
          const T* qi = q + st.q.at(b, h, i);
          const T* gi = dout + st.o.at(b, h, i);
          T* dqo = dq + st.dq.at(b, h, i);
          const A L = static_cast<A>(lse[r]);
          if (std::isinf(L) && L < 0) {  // fully masked row: P = 0
            for (int64_t d = 0; d < D; ++d) dqo[d] = T(0);
            delta[r] = T(0);
            continue;
          }
          const int64_t lim = key_limit(i, causal, s);
          // P_ij = exp(s_ij - lse_i), dP_ij = dO_i·v_j, and delta_i = Σ_j P_ij dP_ij = dO_i·O_i.
          for (int64_t j = 0; j < lim; ++j) {
            if (!visible(mrow, j)) {
              p[j] = -std::numeric_limits<A>::infinity();
              continue;
            }
            p[j] = dot(qi, kh + j * st.k.row, D) * static_cast<A>(scale);
            dp[j] = dot(gi, vh + j * st.v.row, D);
          }
          exp_shifted(p.data(), L, lim);
          A dl = 0;
          for (int64_t j = 0; j < lim; ++j)
            if (visible(mrow, j)) dl += p[j] * dp[j];
          delta[r] = static_cast<T>(dl);
          A* ds = dp.data();  // dS_ij·scale, in place of dP
          for (int64_t j = 0; j < lim; ++j) ds[j] = p[j] * (dp[j] - dl) * static_cast<A>(scale);
          weighted_rows(dqi.data(), ds, kh, st.k.row, lim, D, mrow);
          for (int64_t d = 0; d < D; ++d) dqo[d] = static_cast<T>(dqi[d]);
          for (int64_t j = 0; j < lim; ++j) {
            if (!visible(mrow, j)) continue;
            A* dkj = dk_acc.data() + j * D;
            A* dvj = dv_acc.data() + j * D;
            for (int64_t d = 0; d < D; ++d) {
              dkj[d] += ds[j] * qi[d];
              dvj[d] += p[j] * gi[d];
            }
          }
        }
      }
      for (int64_t j = 0; j < S; ++j) {
        T* dkj = dk + st.dk.at(b, hk, j);
        T* dvj = dv + st.dv.at(b, hk, j);
        for (int64_t d = 0; d < D; ++d) {
          dkj[d] = static_cast<T>(dk_acc[j * D + d]);
          dvj[d] = static_cast<T>(dv_acc[j * D + d]);
        }
      }
    }
  }
  errors.rethrow();
}

#define VLMC_INSTANTIATE(T)                                                                             \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const int64_t*, bool, double, \
                                     const AttentionShape&, const AttentionStrides&);                   \
  template void attention_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,  \
                                      const int64_t*, bool, double, const AttentionShape&,               \
                                      const AttentionStrides&);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cpu
