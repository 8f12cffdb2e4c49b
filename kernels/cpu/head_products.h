// The small products inside one attention head on the CPU (kernels/cpu/attention.cpp):
// scores against keys laid out by columns, and weighted sums of rows. At the main
// job's sizes (26 query rows, 32 head dims) these are matrices of a few hundred
// elements, too small for a GEMM call, and the loops that computed them one
// output at a time waited on a single chain of FMAs (4 cycles each) or ended
// every dot product in a horizontal sum of its lanes.
//
// Both kernels keep a tile of independent sums in registers: 4 rows x 16 keys for
// the scores (8 rows x 8 keys for a head's last, half block), 2 outputs x 32 head
// dims for the weighted sums, eight 8-lane vectors of f32 either way, enough to
// cover the FMA latency. Each sum still runs over its
// terms in order (d for a score, the term index for a weighted sum), one term
// after another, so results are bitwise reproducible and independent of the
// thread count; f64 (the gradient check's oracle) sums in the same order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace vlmc::kernels::cpu::heads {

// Keys of a score tile.
constexpr int64_t kKeyBlock = 16;
// Query rows of a score tile.
constexpr int64_t kRowTile = 4;
// Keys and rows of the tile that takes a head's last 8 keys when they do not
// fill a whole block. The stride (ld) of a transposed head is a multiple of
// kKeyTail: the encoder's 17 keys take 24 columns, not 32 (a third of the
// scores were padding), and 8 rows keep eight sums in flight as the 4 x 16 tile
// does (4 rows x 8 keys would wait on the FMA latency).
constexpr int64_t kKeyTail = 8;
constexpr int64_t kTailRows = 8;
// Outputs and head dims of a weighted-sum tile.
constexpr int64_t kOutTile = 2;
constexpr int64_t kDimBlock = 32;

inline int64_t padded_keys(int64_t n) { return (n + kKeyTail - 1) / kKeyTail * kKeyTail; }

namespace detail {

// 32 bytes of T (8 floats or 4 doubles): a tile's accumulators are arrays of these,
// which GCC keeps in registers (with plain arrays it shuffled the sums across lanes).
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  using type [[gnu::vector_size(32)]] = float;
};
template <>
struct VecOf<double> {
  using type [[gnu::vector_size(32)]] = double;
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// dst[c·lds + r] = src[r·srcs + c] for an 8 x 8 block of floats: eight loads, the
// unpack / shuffle / 128-bit-swap sequence, eight stores (one scalar store per
// element to rows ld apart cost a fifth of the forward kernel's time).
inline void transpose8x8(float* dst, int64_t lds, const float* src, int64_t srcs) {
  using V = Vec<float>;
  V r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load(src + i * srcs);
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int c = 0; c < 4; ++c) {  // u[c]: columns c | c + 4 of rows 0-3; u[c + 4]: of rows 4-7
    store(dst + c * lds, __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    store(dst + (c + 4) * lds, __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}

}  // namespace detail

// kt[d·ld + j] = k[j·stride + d] for j < n, d < D; columns n..ld-1 are zero.
template <typename T>
void transpose_keys(T* kt, const T* k, int64_t stride, int64_t n, int64_t D, int64_t ld) {
  // The padding first: a row's last kKeyTail columns hold all of it (ld rounds n up
  // to kKeyTail), zeroed whole in vector stores and then partly overwritten below
  // (a short zeroing loop per row became a libc memset call per row, 3 % of the
  // encoder's attention).
  if (n < ld) {
    for (int64_t d = 0; d < D; ++d)
      for (int64_t c = 0; c < kKeyTail; c += detail::kLanes<T>)
        detail::store(kt + d * ld + ld - kKeyTail + c, detail::Vec<T>{});
  }
  int64_t j0 = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; j0 + 8 <= n; j0 += 8) {
      int64_t d0 = 0;
      for (; d0 + 8 <= D; d0 += 8) detail::transpose8x8(kt + d0 * ld + j0, ld, k + j0 * stride + d0, stride);
      for (int64_t d = d0; d < D; ++d)
        for (int64_t j = j0; j < j0 + 8; ++j) kt[d * ld + j] = k[j * stride + d];
    }
  }
  for (int64_t j = j0; j < n; ++j)
    for (int64_t d = 0; d < D; ++d) kt[d * ld + j] = k[j * stride + d];
}

namespace detail {

// R rows of s (stride ld), Keys keys from j0: s[r·ld + j0 + jj] = Σ_d x_r[d]·kt[d·ld + j0 + jj].
template <int64_t R, int64_t Keys, typename T>
inline void score_tile(T* s, int64_t ld, const T* x, int64_t xs, const T* kt, int64_t j0, int64_t D) {
  constexpr int64_t V = Keys / kLanes<T>;
  Vec<T> acc[R][V];  // zeroed element by element: `= {}` became a rep stos through the stack
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < V; ++c) acc[r][c] = Vec<T>{};
  for (int64_t d = 0; d < D; ++d) {
    Vec<T> col[V];
    for (int64_t c = 0; c < V; ++c) col[c] = load(kt + d * ld + j0 + c * kLanes<T>);
    for (int64_t r = 0; r < R; ++r) {
      const T xd = x[r * xs + d];
      for (int64_t c = 0; c < V; ++c) acc[r][c] += xd * col[c];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < V; ++c) store(s + r * ld + j0 + c * kLanes<T>, acc[r][c]);
}

// The key blocks j0 < n of R rows from row r: whole blocks while more than
// kKeyTail keys are left, then one tail tile if any are (ld, a multiple of
// kKeyTail, holds a whole block wherever more than kKeyTail keys are left).
template <int64_t R, typename T>
inline void row_tile_scores(T* s, int64_t ld, const T* x, int64_t xs, const T* kt, int64_t n, int64_t D) {
  int64_t j0 = 0;
  for (; j0 + kKeyTail < n; j0 += kKeyBlock) score_tile<R, kKeyBlock>(s, ld, x, xs, kt, j0, D);
  if (j0 < n) score_tile<R, kKeyTail>(s, ld, x, xs, kt, j0, D);
}

}  // namespace detail

// Scores of `rows` query rows x_r = x + r·xs against a transposed head kt (D x ld):
// s[r·ld + j] = Σ_d x_r[d]·kt[d·ld + j], for j below keys[r] rounded up to
// kKeyTail (s has ld columns). keys[] gives each row's visible prefix; a tile of
// rows computes up to its largest. Rows go 8 at a time: their whole key blocks
// as two 4-row tiles, their tail as one 8-row tile. Each score sums over d in
// order whatever tile computes it, so the tiling never changes a bit.
template <typename T>
void scores_by_columns(T* s, int64_t ld, const T* x, int64_t xs, int64_t rows, const int64_t* keys, const T* kt,
                       int64_t D) {
  static_assert(kTailRows == 2 * kRowTile, "an 8-row group is two 4-row tiles");
  int64_t r = 0;
  for (; r + kTailRows <= rows; r += kTailRows) {
    const int64_t n = *std::max_element(keys + r, keys + r + kTailRows);
    int64_t j0 = 0;
    for (; j0 + kKeyTail < n; j0 += kKeyBlock)
      for (int64_t half = 0; half < kTailRows; half += kRowTile)
        detail::score_tile<kRowTile, kKeyBlock>(s + (r + half) * ld, ld, x + (r + half) * xs, xs, kt, j0, D);
    if (j0 < n) detail::score_tile<kTailRows, kKeyTail>(s + r * ld, ld, x + r * xs, xs, kt, j0, D);
  }
  for (; r + kRowTile <= rows; r += kRowTile)
    detail::row_tile_scores<kRowTile>(s + r * ld, ld, x + r * xs, xs, kt,
                                      *std::max_element(keys + r, keys + r + kRowTile), D);
  for (; r < rows; ++r) detail::row_tile_scores<1>(s + r * ld, ld, x + r * xs, xs, kt, keys[r], D);
}

namespace detail {

// Outputs o0..o0+R-1, head dims d0..d0+kDimBlock-1 of weighted_sums, terms t0..t1-1.
template <int64_t R, typename A, typename T>
inline void sum_tile(A* out, int64_t ldo, const A* w, int64_t wo, int64_t wt, const T* x, int64_t xs, int64_t t0,
                     int64_t t1, int64_t d0, const int64_t* term_mask, bool accumulate) {
  static_assert(std::is_same_v<A, T>, "the tiles load x in the accumulator's type");
  constexpr int64_t V = kDimBlock / kLanes<T>;
  Vec<A> acc[R][V];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < V; ++c) acc[r][c] = accumulate ? load(out + r * ldo + d0 + c * kLanes<T>) : Vec<A>{};
  for (int64_t t = t0; t < t1; ++t) {
    if (term_mask != nullptr && term_mask[t] == 0) continue;
    // The term's row is loaded once into registers for all R outputs. Without
    // the empty asm GCC folded the loads into the FMAs as memory operands, one
    // load per output: ten loads a term for the pair's eight FMAs, and the
    // attention kernels 4-12 % slower (AMD EPYC, the stage-0 shapes; docs/perf.md).
    Vec<T> xr[V];
    for (int64_t c = 0; c < V; ++c) {
      xr[c] = load(x + t * xs + d0 + c * kLanes<T>);
#if defined(__x86_64__)
      asm("" : "+x"(xr[c]));  // "x": an SSE/AVX register (x86 only)
#endif
    }
    for (int64_t r = 0; r < R; ++r) {
      const A wr = w[r * wo + t * wt];
      for (int64_t c = 0; c < V; ++c) acc[r][c] += wr * xr[c];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < V; ++c) store(out + r * ldo + d0 + c * kLanes<T>, acc[r][c]);
}

// The same sums for one head dim d (the tail of D beyond whole blocks), one output.
template <typename A, typename T>
inline void sum_scalar(A* out, const A* w, int64_t wt, const T* x, int64_t xs, int64_t t0, int64_t t1, int64_t d,
                       const int64_t* term_mask, bool accumulate) {
  A acc = accumulate ? out[d] : A(0);
  for (int64_t t = t0; t < t1; ++t) {
    if (term_mask != nullptr && term_mask[t] == 0) continue;
    // fma spelled out: GCC contracted a*b + c only where no mask test sat between
    // them, and a mask of ones gave other bits than no mask.
    acc = std::fma(w[t * wt], static_cast<A>(x[t * xs + d]), acc);
  }
  out[d] = acc;
}

template <int64_t R, typename A, typename T>
inline void sum_rows(A* out, int64_t ldo, const A* w, int64_t wo, int64_t wt, const T* x, int64_t xs, int64_t t0,
                     int64_t t1, int64_t D, const int64_t* term_mask, bool accumulate) {
  int64_t d0 = 0;
  for (; d0 + kDimBlock <= D; d0 += kDimBlock)
    sum_tile<R>(out, ldo, w, wo, wt, x, xs, t0, t1, d0, term_mask, accumulate);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t d = d0; d < D; ++d)
      sum_scalar(out + r * ldo, w + r * wo, wt, x, xs, t0, t1, d, term_mask, accumulate);
}

}  // namespace detail

// Which terms each output of weighted_sums takes: [begin[o], end[o]) where given,
// else all. The causal mask's zeros: a query row's P and dS are 0 past its last
// visible key, and a key's column is 0 above the first row that sees it, so
// P·V and dS·K stop at end = the row's key limit, and dSᵀ·Q and Pᵀ·dO start at
// begin = the key's first row: half the causal language model's weighted sums
// were terms w = 0. A pair of outputs takes the union of its two ranges (the
// terms outside an output's own range are its zeros). Leaving out a term 0·x
// changes no sum (but the sign of an exact zero), and never reads x there.
struct TermRanges {
  const int64_t* begin = nullptr;
  const int64_t* end = nullptr;
};

// out_o[d] (+)= Σ_t w[o·wo + t·wt]·x[t·xs + d] for outputs o < outs (rows of out,
// stride ldo), terms t < terms in order (within ranges), d < D. Terms whose
// term_mask[t] is 0 and outputs whose out_mask[o] is 0 are left out (a masked
// key's value is never read, even where it is not finite). With accumulate, the
// sums start from out. P·V and dS·K are outputs = query rows, terms = keys (wo =
// ld, wt = 1); dSᵀ·Q and Pᵀ·dO are outputs = keys, terms = query rows (wo = 1, wt
// = ld).
template <typename A, typename T>
void weighted_sums(A* out, int64_t ldo, const A* w, int64_t wo, int64_t wt, const T* x, int64_t xs, int64_t outs,
                   int64_t terms, int64_t D, const int64_t* term_mask, const int64_t* out_mask, bool accumulate,
                   TermRanges ranges = {}) {
  static_assert(kOutTile == 2, "the loop below takes outputs in pairs");
  const auto first = [&](int64_t o) { return ranges.begin != nullptr ? ranges.begin[o] : int64_t(0); };
  const auto last = [&](int64_t o) { return ranges.end != nullptr ? std::min(ranges.end[o], terms) : terms; };
  int64_t o = 0;
  while (o < outs) {
    if (out_mask != nullptr && out_mask[o] == 0) {
      ++o;
      continue;
    }
    const bool pair = o + 1 < outs && (out_mask == nullptr || out_mask[o + 1] != 0);
    if (pair) {
      const int64_t t0 = std::min(first(o), first(o + 1)), t1 = std::max(last(o), last(o + 1));
      detail::sum_rows<kOutTile>(out + o * ldo, ldo, w + o * wo, wo, wt, x, xs, t0, t1, D, term_mask, accumulate);
      o += kOutTile;
    } else {
      detail::sum_rows<1>(out + o * ldo, ldo, w + o * wo, wo, wt, x, xs, first(o), last(o), D, term_mask,
                          accumulate);
      ++o;
    }
  }
}

}  // namespace vlmc::kernels::cpu::heads
