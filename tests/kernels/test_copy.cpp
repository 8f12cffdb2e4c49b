// The CPU's strided copy (kernels/copy.h) against the definition, element by
// element through Layout::offset_of: permutations that merge dims and ones that
// cannot, size-1 dims, broadcasts over several dims, a strided destination
// whose gaps must stay untouched, dtype conversion (f32 to f64, and autocast's
// f32 <-> bf16), one element and none, and 1, 2 and 3 threads over copies big
// enough to be split, a single row among them.
#include <catch2/catch.hpp>

#include <cstdint>
#include <numeric>
#include <vector>

#include "core/threads.h"
#include "kernels/copy.h"
#include "kernels/dtype.h"

using namespace vlmc;
using kernels::Layout;

namespace {

Layout layout(std::vector<int64_t> shape, std::vector<int64_t> strides) {
  Layout l;
  l.ndim = static_cast<int>(shape.size());
  for (int d = 0; d < l.ndim; ++d) {
    l.shape[d] = shape[static_cast<size_t>(d)];
    l.strides[d] = strides[static_cast<size_t>(d)];
  }
  return l;
}

// The layout of a contiguous tensor of `shape` permuted by `order`.
Layout permuted(const std::vector<int64_t>& shape, const std::vector<int>& order) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t d = shape.size() - 1; d > 0; --d) strides[d - 1] = strides[d] * shape[d];
  std::vector<int64_t> s, st;
  for (const int o : order) {
    s.push_back(shape[static_cast<size_t>(o)]);
    st.push_back(strides[static_cast<size_t>(o)]);
  }
  return layout(s, st);
}

Layout contiguous(const std::vector<int64_t>& shape) {
  std::vector<int> order(shape.size());
  std::iota(order.begin(), order.end(), 0);
  return permuted(shape, order);
}

int64_t span(const Layout& l) {  // elements from offset 0 to the last one reached, plus one
  int64_t last = 0;
  for (int d = 0; d < l.ndim; ++d) last += (l.shape[d] - 1) * l.strides[d];
  return l.numel() == 0 ? 0 : last + 1;
}

// Copies src (values 0, 1, 2, ... at every storage slot) into a destination of
// sentinels through the kernel and through offset_of, on 1, 2 and 3 threads.
void check_copy(const Layout& dl, const Layout& sl) {
  std::vector<float> src(static_cast<size_t>(std::max<int64_t>(span(sl), 1)));
  std::iota(src.begin(), src.end(), 0.0f);
  std::vector<float> expected(static_cast<size_t>(std::max<int64_t>(span(dl), 1)), -1.0f);
  for (int64_t i = 0; i < dl.numel(); ++i)
    expected[static_cast<size_t>(dl.offset_of(i))] = src[static_cast<size_t>(sl.offset_of(i))];
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<float> dst(expected.size(), -1.0f);
    kernels::cpu::copy(dst.data(), DType::f32, dl, src.data(), DType::f32, sl);
    CHECK(dst == expected);
    // The conversion path walks the same rows.
    std::vector<double> wide(expected.size(), -1.0);
    kernels::cpu::copy(wide.data(), DType::f64, dl, src.data(), DType::f32, sl);
    CHECK(std::vector<float>(wide.begin(), wide.end()) == expected);
    // autocast's rounding of a view, and its widening back, in typed loops of their own.
    std::vector<uint16_t> bits(expected.size(), 0xffff), want_bits(expected.size(), 0xffff);
    for (int64_t i = 0; i < dl.numel(); ++i) {
      const auto at = static_cast<size_t>(dl.offset_of(i));
      want_bits[at] = float_to_bf16_bits(expected[at]);
    }
    kernels::cpu::copy(bits.data(), DType::bf16, dl, src.data(), DType::f32, sl);
    CHECK(bits == want_bits);
    std::vector<float> widened(expected.size(), -1.0f), want_widened(expected.size(), -1.0f);
    std::vector<uint16_t> src_bits(src.size());
    for (size_t j = 0; j < src.size(); ++j) src_bits[j] = float_to_bf16_bits(src[j]);
    for (int64_t i = 0; i < dl.numel(); ++i)
      want_widened[static_cast<size_t>(dl.offset_of(i))] =
          bf16_bits_to_float(src_bits[static_cast<size_t>(sl.offset_of(i))]);
    kernels::cpu::copy(widened.data(), DType::f32, dl, src_bits.data(), DType::bf16, sl);
    CHECK(widened == want_widened);
  }
  set_num_threads(saved);
}

}  // namespace

TEST_CASE("copy: permutations, small and split across threads", "[copy][threads]") {
  // CLIP's patches: [B, C, gy, i, gx, j] read as [B, gy, gx, C, i, j] (C = 1 drops out).
  const std::vector<int64_t> patches = {64, 1, 4, 14, 4, 14};
  check_copy(contiguous({64, 4, 4, 1, 14, 14}), permuted(patches, {0, 2, 4, 1, 3, 5}));
  check_copy(contiguous({3, 4, 4, 2, 5, 5}), permuted({3, 2, 4, 5, 4, 5}, {0, 2, 4, 1, 3, 5}));
  // A transpose (rows of one element's stride apart) and heads split out of rows.
  check_copy(contiguous({300, 257}), permuted({257, 300}, {1, 0}));
  check_copy(contiguous({8, 4, 17, 32}), permuted({8, 17, 4, 32}, {0, 2, 1, 3}));
  // Every dim merges: the same order on both sides, with size-1 dims between.
  check_copy(contiguous({2, 1, 3, 1, 4}), contiguous({2, 1, 3, 1, 4}));
  check_copy(contiguous({50, 1, 700}), permuted({700, 1, 50}, {2, 1, 0}));
  // Contiguous on both sides: one memcpy, in a share per thread above 256 KiB.
  check_copy(contiguous({301, 307}), contiguous({301, 307}));
}

TEST_CASE("copy: broadcasts, strided destinations, one element and none", "[copy][threads]") {
  // A bias broadcast over two leading dims (strides 0 that merge) and a column broadcast.
  check_copy(contiguous({16, 40, 96}), layout({16, 40, 96}, {0, 0, 1}));
  check_copy(contiguous({300, 130}), layout({300, 130}, {1, 0}));
  // A destination with gaps: every third column of a [200, 390] buffer; the gaps keep their sentinels.
  check_copy(layout({200, 130}, {390, 3}), permuted({130, 200}, {1, 0}));
  check_copy(layout({3, 200, 64}, {64, 192 * 2, 1}), contiguous({3, 200, 64}));
  check_copy(layout({}, {}), layout({}, {}));
  check_copy(layout({1, 1}, {7, 9}), layout({1, 1}, {3, 5}));
  check_copy(contiguous({4, 0, 3}), permuted({3, 0, 4}, {2, 1, 0}));
  // A scalar expanded to a whole tensor (sum's gradient) coalesces to one row,
  // which the threads must split between them, at odd places.
  check_copy(contiguous({3, 7, 1001}), layout({3, 7, 1001}, {0, 0, 0}));
  check_copy(contiguous({37, 1001}), layout({37, 1001}, {1, 0}));
}
