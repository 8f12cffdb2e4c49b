// CPU fused attention (see kernels/attention.h): the oracle for the CUDA kernels.
// Forward: per (b, h, block of up to kRowBlock query rows) the block's scores go to a
// [rows, keys] buffer, each row gets a two-pass softmax with its maximum subtracted, and
// P·V runs for the block at once. Backward: per (b, KV head) one worker walks the query
// heads of its group in the same row blocks and recomputes P from q, k and the saved
// logsumexp (or, for short rows, reads the P the forward saved with those very bits),
// so dk/dv rows have a single owner and the sums run in a fixed order. Every
// operand is addressed by its HeadStrides, so the heads of a [B, L, H·Dh] projection are
// read and written in place.
//
// The products inside a head (QKᵀ, dO·Vᵀ, P·V, dS·K, dSᵀ·Q, Pᵀ·dO) are register tiles
// (kernels/cpu/head_products.h): the keys and values of a head are transposed once per
// work item so that scores run across keys in vector lanes. A block of fewer than
// kMinRowsToTranspose rows (decoding: one query row) takes dot products instead, which
// read the keys where they lie.
//
// Accumulation: f64 tensors accumulate in double, one term after another (the gradient
// check's oracle). f32 tensors accumulate in float: the products' sums one term after
// another (the few-row dot products as vector lanes, `omp simd`), a row's softmax sum
// and the backward's Σ P·dP in 8 lanes (sum_in_lanes below), exp in float; the golden
// tests' 1e-5 holds. The exps of a row run as one vectorised pass of fast::exp_f32 (9e-8
// relative; a libm call per score was 3 % of the stage-0 language model's step). Every
// order is fixed for a given build, so results stay bitwise reproducible.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/head_products.h"
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

// Query rows of batch b that are computed: all of them, or, when the caller reads
// none after the last visible key (AttentionShape::trailing_queries_unread), those
// up to the query aligned with it.
inline int64_t computed_rows(const int64_t* mask_row, const AttentionShape& s) {
  if (!s.trailing_queries_unread || mask_row == nullptr) return s.q_len;
  int64_t last = s.kv_len - 1;
  while (last >= 0 && mask_row[last] == 0) --last;
  const int64_t rows = last + 1 - (s.kv_len - s.q_len);  // query i sees key i + S - T
  return rows < 0 ? 0 : (rows > s.q_len ? s.q_len : rows);
}

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

// y[j] = exp(x[j] - shift) for j < n (y may be x). -inf (a masked score) gives 0.
inline void exp_shifted(float* y, const float* x, float shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j)
    y[j] = fast::select(x[j] == -std::numeric_limits<float>::infinity(), 0.0f, fast::exp_f32(x[j] - shift));
}
inline void exp_shifted(double* y, const double* x, double shift, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = std::exp(x[j] - shift);
}

// ---- a row's softmax pieces in f32 lanes ---------------------------------------------------
// At the main job's sizes (17-40 keys, 32 head dims) the score tiles and weighted sums
// are register tiles, and what was left was the loops over a row's keys, one key after
// another: scaling and masking with the running maximum, the softmax's sum and the
// backward's dO·O took about half of the forward's own time (perf annotate, the
// encoder's [64, 4, 17, 32]). These run 8 keys at a time. The maximum is exact in any
// order; the sums take 8 lanes (key j in lane j % 8), then the lanes in order, then the
// tail in order, a fixed order for a given row length. f64 (the gradient check's
// oracle) keeps one term after another.
using Lanes = heads::detail::Vec<float>;
using MaskLanes [[gnu::vector_size(32)]] = int32_t;
constexpr int64_t kLanes = heads::detail::kLanes<float>;

// The visible keys of a batch's mask row as lane masks: keep[j] is 1 or 0.
inline void lane_masks(int32_t* keep, const int64_t* mask_row, int64_t n) {
  for (int64_t j = 0; j < n; ++j) keep[j] = mask_row[j] != 0 ? 1 : 0;
}

// x where keys j..j+7 are visible (keep null: all are), `otherwise` elsewhere.
inline Lanes visible_or(const int32_t* keep, int64_t j, Lanes x, Lanes otherwise) {
  if (keep == nullptr) return x;
  MaskLanes on;
  std::memcpy(&on, keep + j, sizeof on);
  return on != 0 ? x : otherwise;
}

inline bool visible(const int32_t* keep, int64_t j) { return keep == nullptr || keep[j] != 0; }

// x[0..n) = 0 in vector stores. A row of a head is 32-128 elements, and GCC turns
// any plain zeroing loop into a libc memset call per row (call and size dispatch:
// 2 % of the encoder's backward); the empty asm keeps the loop a loop.
template <typename T>
inline void zero_row(T* x, int64_t n) {
  constexpr int64_t lanes = heads::detail::kLanes<T>;
  int64_t d = 0;
  for (; d + lanes <= n; d += lanes) {
    heads::detail::store(x + d, heads::detail::Vec<T>{});
    asm volatile("" ::: "memory");
  }
  for (; d < n; ++d) x[d] = T(0);
}

// p[j] = p[j]·scale where key j is visible (keep null: every key), -inf elsewhere, for
// j < n; returns the largest (-inf when none is visible; a NaN is passed over, as
// std::max(m, x) passes it).
inline float scale_mask_max(float* p, const int32_t* keep, float scale, int64_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const Lanes neg_inf = Lanes{} + kNegInf;
  Lanes top = neg_inf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const Lanes x = visible_or(keep, j, heads::detail::load(p + j) * scale, neg_inf);
    heads::detail::store(p + j, x);
    top = x > top ? x : top;
  }
  float m = kNegInf;
  for (int64_t l = 0; l < kLanes; ++l) m = std::max(m, top[l]);
  for (; j < n; ++j) {
    p[j] = visible(keep, j) ? p[j] * scale : kNegInf;
    m = std::max(m, p[j]);
  }
  return m;
}

// Σ_j x[j] for j < n: 8 lanes, the lanes in order, the tail in order.
inline float sum_in_lanes(const float* x, int64_t n) {
  Lanes acc{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) acc += heads::detail::load(x + j);
  float sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
  for (; j < n; ++j) sum += x[j];
  return sum;
}

// Σ_j p[j]·d[j] over the visible keys j < n (a masked key's d is left out: its value
// row may not be finite), in 8 lanes as sum_in_lanes.
inline float masked_dot(const float* p, const float* d, const int32_t* keep, int64_t n) {
  Lanes acc{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    // One expression in both cases, so a mask of ones gives the bits of no mask (the
    // compiler fuses the multiply-add alike).
    const Lanes sum = acc + heads::detail::load(p + j) * heads::detail::load(d + j);
    acc = visible_or(keep, j, sum, acc);
  }
  float sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
  for (; j < n; ++j)
    if (visible(keep, j)) sum = std::fma(p[j], d[j], sum);
  return sum;
}

}  // namespace

// Query rows of one head in a work item: they share its transposed keys, and P·V
// (or the backward's products) runs for the block at once.
constexpr int64_t kRowBlock = 32;
// Blocks with fewer rows keep dot products (transposing the keys would cost as much
// as the scores themselves).
constexpr int64_t kMinRowsToTranspose = 4;

// Whether the forward saves P for a block of `rows` computed rows (probs given): the
// backward's scores come from the transposed keys, so a block whose forward takes
// dot products (other bits) is left to the backward to recompute.
inline bool saves_block(const void* probs, int64_t rows) { return probs != nullptr && rows >= kMinRowsToTranspose; }

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int64_t* key_mask,
                       bool causal, double scale, const AttentionShape& s, const AttentionStrides& st,
                       T* probs) {
  const int64_t B = s.batch, H = s.q_heads, Tq = s.q_len, S = s.kv_len, D = s.head_dim;
  const int64_t group = H / s.kv_heads;
  const int64_t row_blocks = (Tq + kRowBlock - 1) / kRowBlock;
  const int64_t items = B * H * row_blocks;  // (b, h, block of query rows)
  const int64_t ld_max = heads::padded_keys(S);
  using A = Acc<T>;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  ParallelErrors errors;
#pragma omp parallel if (B * H * Tq * S * D > kGrain)
  {
    std::vector<A> p, o, l;  // P of a block [rows, ld], P·V [rows, D], each row's Σ exp
    std::vector<A> scores;   // with probs: the block's scaled scores [rows, ld], kept for the saved P
    std::vector<T> kt;       // the head's keys by columns [D, ld]
    std::vector<int64_t> keys;
    std::vector<int32_t> keep;  // f32: the key mask of batch keep_b as lane masks
    int64_t keep_b = -1;
    const bool ready = errors.run([&] {
      const int64_t rows = std::min(Tq, kRowBlock);
      if (key_mask != nullptr) keep.resize(static_cast<size_t>(S));
      p.resize(static_cast<size_t>(rows * ld_max));
      if (probs != nullptr) scores.resize(static_cast<size_t>(rows * ld_max));
      o.resize(static_cast<size_t>(rows * D));
      l.resize(static_cast<size_t>(rows));
      keys.resize(static_cast<size_t>(rows));
      if (rows >= kMinRowsToTranspose) kt.resize(static_cast<size_t>(D * ld_max));
    });
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      if (!ready) continue;
      const int64_t blk = item % row_blocks, h = (item / row_blocks) % H, b = item / (row_blocks * H);
      const int64_t* mrow = key_mask ? key_mask + b * S : nullptr;
      const int64_t i0 = blk * kRowBlock, block_rows = std::min(Tq - i0, kRowBlock);
      const int64_t rows = std::clamp<int64_t>(computed_rows(mrow, s) - i0, 0, block_rows);
      for (int64_t r = rows; r < block_rows; ++r) {  // unread rows: those of a fully masked query
        if (!st.o.packed()) std::fill_n(out + st.o.at(b, h, i0 + r), D, T(0));  // (packed: not in memory)
        lse[(b * H + h) * Tq + i0 + r] = static_cast<T>(kNegInf);
      }
      if (rows == 0) continue;
      const T* qb = q + st.q.at(b, h, i0);
      const T* kh = k + st.k.at(b, h / group, 0);
      const T* vh = v + st.v.at(b, h / group, 0);
      for (int64_t r = 0; r < rows; ++r) keys[r] = key_limit(i0 + r, causal, s);
      const int64_t n = keys[rows - 1];  // the limit grows with the row
      const int64_t ld = heads::padded_keys(n);
      // With P saved, the scores stay in `scores` and the exps go to p; else p holds both in turn.
      A* const sp = saves_block(probs, rows) ? scores.data() : p.data();
      if (rows >= kMinRowsToTranspose) {
        heads::transpose_keys(kt.data(), kh, st.k.row, n, D, ld);
        heads::scores_by_columns(sp, ld, qb, st.q.row, rows, keys.data(), kt.data(), D);
      } else {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < keys[r]; ++j) sp[r * ld + j] = dot(qb + r * st.q.row, kh + j * st.k.row, D);
      }
      if (mrow != nullptr && keep_b != b) {
        lane_masks(keep.data(), mrow, S);
        keep_b = b;
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = (b * H + h) * Tq + i0 + r;  // in lse, and in probs by S
        A* sr = sp + r * ld;
        A* pr = p.data() + r * ld;
        const int64_t lim = keys[r];
        A m = kNegInf;
        if constexpr (std::is_same_v<A, float>) {
          m = scale_mask_max(sr, mrow != nullptr ? keep.data() : nullptr, static_cast<A>(scale), lim);
        } else {
          for (int64_t j = 0; j < lim; ++j) {
            sr[j] = visible(mrow, j) ? sr[j] * static_cast<A>(scale) : kNegInf;
            m = std::max(m, sr[j]);
          }
        }
        // P's row [S], saved where its scores are the backward's bits: by the transposed keys.
        T* saved = saves_block(probs, rows) ? probs + row * S : nullptr;
        if (m == kNegInf) {  // no visible key: P = 0, the output zeros
          std::fill(pr, pr + n, A(0));
          l[r] = 0;
          lse[row] = static_cast<T>(m);
          if (saved != nullptr) std::fill_n(saved, S, T(0));
          continue;
        }
        exp_shifted(pr, sr, m, lim);  // pr[j] = P_ij·l, 0 where masked
        A sum = 0;
        if constexpr (std::is_same_v<A, float>) {
          sum = sum_in_lanes(pr, lim);
        } else {
          for (int64_t j = 0; j < lim; ++j) sum += pr[j];
        }
        if (lim < n) std::fill(pr + lim, pr + n, A(0));  // keys after the causal limit
        l[r] = sum;
        lse[row] = static_cast<T>(m + std::log(sum));
        if (saved != nullptr) {  // P_ij = exp(s_ij - lse_i), as attention_backward computes it
          exp_shifted(saved, sr, static_cast<A>(lse[row]), lim);
          if (lim < S) std::fill(saved + lim, saved + S, T(0));
        }
      }
      heads::weighted_sums(o.data(), D, p.data(), ld, 1, vh, st.v.row, rows, n, D, mrow, nullptr, false,
                           {nullptr, keys.data()});  // row r's terms: its keys[r] visible keys
      for (int64_t r = 0; r < rows; ++r) {
        T* oi = out + st.o.at(b, h, i0 + r);
        const A* orow = o.data() + r * D;
        for (int64_t d = 0; d < D; ++d) oi[d] = l[r] == 0 ? T(0) : static_cast<T>(orow[d] / l[r]);
      }
    }
  }
  errors.rethrow();
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, T* delta, const T* dout, const T* q, const T* k, const T* v,
                        const T* lse, const int64_t* key_mask, bool causal, double scale,
                        const AttentionShape& s, const AttentionStrides& st, const T* probs) {
  const int64_t B = s.batch, H = s.q_heads, Hk = s.kv_heads, Tq = s.q_len, S = s.kv_len, D = s.head_dim;
  const int64_t group = H / Hk;
  const int64_t heads = B * Hk;
  const int64_t ld_max = heads::padded_keys(S);
  const int64_t block = std::min(Tq, kRowBlock);
  using A = Acc<T>;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  ParallelErrors errors;
#pragma omp parallel if (B * H * Tq * S * D > kGrain)
  {
    std::vector<A> p, ds;   // P and dP (then dS) of a block [rows, ld]
    std::vector<T> kt, vt;  // the head's keys and values by columns [D, ld]
    std::vector<int64_t> keys, first_row;  // a block's rows' key limits; each key's first row seeing it
    std::vector<int32_t> keep;             // f32: the key mask of the item's batch as lane masks
    const bool ready = errors.run([&] {
      if (key_mask != nullptr) keep.resize(static_cast<size_t>(S));
      first_row.resize(static_cast<size_t>(S));
      p.resize(static_cast<size_t>(block * ld_max));
      ds.resize(static_cast<size_t>(block * ld_max));
      kt.resize(static_cast<size_t>(D * ld_max));
      vt.resize(static_cast<size_t>(D * ld_max));
      keys.resize(static_cast<size_t>(block));
    });
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < heads; ++bh) {
      if (!ready) continue;
      const int64_t b = bh / Hk, hk = bh % Hk;
      const T* kh = k + st.k.at(b, hk, 0);
      const T* vh = v + st.v.at(b, hk, 0);
      const int64_t* mrow = key_mask ? key_mask + b * S : nullptr;
      if (mrow != nullptr) lane_masks(keep.data(), mrow, S);
      const int32_t* keep_row = mrow != nullptr ? keep.data() : nullptr;
      const int64_t tq = computed_rows(mrow, s);  // rows after it: zero dq, no part in dk, dv
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = tq; i < Tq; ++i) {
          if (!st.dq.packed()) std::fill_n(dq + st.dq.at(b, h, i), D, T(0));  // (packed: not in memory)
          delta[(b * H + h) * Tq + i] = T(0);
        }
      const int64_t n_all = tq > 0 ? key_limit(tq - 1, causal, s) : 0;  // keys any computed row sees
      const int64_t ld = heads::padded_keys(n_all);
      // The keys by columns, for the scores of blocks whose P was not saved.
      const int64_t last_rows = tq - ((tq - 1) / kRowBlock) * kRowBlock;  // the last block's (tq > 0)
      if (tq > 0 && !(saves_block(probs, kRowBlock) && saves_block(probs, last_rows)))
        heads::transpose_keys(kt.data(), kh, st.k.row, n_all, D, ld);
      heads::transpose_keys(vt.data(), vh, st.v.row, n_all, D, ld);
      // dk and dv accumulate where they lie, over the group's heads and row blocks.
      T* dkh = dk + st.dk.at(b, hk, 0);
      T* dvh = dv + st.dv.at(b, hk, 0);
      // Packed: keys past the computed rows are masked and not in memory.
      for (int64_t j = 0, keys_held = st.dk.packed() ? tq : S; j < keys_held; ++j) zero_row(dkh + j * st.dk.row, D);
      for (int64_t j = 0, keys_held = st.dv.packed() ? tq : S; j < keys_held; ++j) zero_row(dvh + j * st.dv.row, D);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i0 = 0; i0 < tq; i0 += kRowBlock) {
          const int64_t rows = std::min(tq - i0, kRowBlock);
          const T* qb = q + st.q.at(b, h, i0);
          const T* gb = dout + st.o.at(b, h, i0);
          for (int64_t r = 0; r < rows; ++r) keys[r] = key_limit(i0 + r, causal, s);
          const int64_t n = keys[rows - 1];
          // P_ij = exp(s_ij - lse_i) (saved by the forward, or recomputed), dP_ij = dO_i·v_j,
          // delta_i = Σ_j P_ij dP_ij = dO_i·O_i, dS_ij·scale = P_ij (dP_ij - delta_i)·scale.
          // P [rows, ldp]: the forward's rows where it saved them (zero past each row's
          // keys), else recomputed into p.
          const T* saved = saves_block(probs, rows) ? probs + ((b * H + h) * Tq + i0) * S : nullptr;
          const A* P = saved != nullptr ? saved : p.data();
          const int64_t ldp = saved != nullptr ? S : ld;
          if (saved == nullptr) heads::scores_by_columns(p.data(), ld, qb, st.q.row, rows, keys.data(), kt.data(), D);
          heads::scores_by_columns(ds.data(), ld, gb, st.o.row, rows, keys.data(), vt.data(), D);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t row = (b * H + h) * Tq + i0 + r;
            A* pw = p.data() + r * ld;  // the recomputed row
            const A* pr = P + r * ldp;
            A* dsr = ds.data() + r * ld;
            const A L = static_cast<A>(lse[row]);
            const int64_t lim = std::isinf(L) && L < 0 ? 0 : keys[r];  // fully masked row: P = 0
            A dl = 0;
            if constexpr (std::is_same_v<A, float>) {
              if (saved == nullptr) {
                scale_mask_max(pw, keep_row, static_cast<A>(scale), lim);  // the maximum is not needed
                exp_shifted(pw, pw, L, lim);
              }
              dl = masked_dot(pr, dsr, keep_row, lim);
            } else {
              if (saved == nullptr) {
                for (int64_t j = 0; j < lim; ++j) pw[j] = visible(mrow, j) ? pw[j] * static_cast<A>(scale) : kNegInf;
                exp_shifted(pw, pw, L, lim);
              }
              for (int64_t j = 0; j < lim; ++j)  // fma spelled out, as in head_products.h's tail
                if (visible(mrow, j)) dl = std::fma(pr[j], dsr[j], dl);
            }
            delta[row] = static_cast<T>(dl);
            for (int64_t j = 0; j < lim; ++j) dsr[j] = pr[j] * (dsr[j] - dl) * static_cast<A>(scale);
            if (lim < n) {  // (an empty std::fill is still a memset call)
              if (saved == nullptr) std::fill(pw + lim, pw + n, A(0));
              std::fill(dsr + lim, dsr + n, A(0));
            }
          }
          // dQ = dS·K (rows x keys), dK += dSᵀ·Q and dV += Pᵀ·dO (keys x rows).
          // Written where they lie: a row copy from a scratch block was a libc memcpy call
          // per row, 7 % of the encoder's backward.
          heads::weighted_sums(dq + st.dq.at(b, h, i0), st.dq.row, ds.data(), ld, 1, kh, st.k.row, rows, n, D, mrow,
                               nullptr, false, {nullptr, keys.data()});
          // Key j's terms start at the block's first row that sees it (keys[] grows with the row).
          heads::TermRanges by_key;
          if (causal) {
            for (int64_t j = 0, r = 0; j < n; ++j) {
              while (r < rows && keys[r] <= j) ++r;
              first_row[j] = r;
            }
            by_key.begin = first_row.data();
          }
          heads::weighted_sums(dkh, st.dk.row, ds.data(), 1, ld, qb, st.q.row, n, rows, D, nullptr, mrow, true, by_key);
          heads::weighted_sums(dvh, st.dv.row, P, 1, ldp, gb, st.o.row, n, rows, D, nullptr, mrow, true, by_key);
        }
      }
    }
  }
  errors.rethrow();
}

#define VLMC_INSTANTIATE(T)                                                                             \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const int64_t*, bool, double, \
                                     const AttentionShape&, const AttentionStrides&, T*);               \
  template void attention_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,  \
                                      const int64_t*, bool, double, const AttentionShape&,               \
                                      const AttentionStrides&, const T*);
VLMC_INSTANTIATE(float)
VLMC_INSTANTIATE(double)
#undef VLMC_INSTANTIATE

}  // namespace vlmc::kernels::cpu
