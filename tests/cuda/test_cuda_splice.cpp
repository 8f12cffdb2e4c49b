// CUDA against CPU for splice_image_embeddings: random batches (several or no
// placeholders per sample, left and right padding, both text-only modes,
// truncation), the seed's sizes and odd ones; the kernels run into poisoned
// buffers so unwritten rows fail the comparison.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "kernels/splice.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const Device kGpu = Device::cuda(0);

struct Case {
  int64_t batch, text_len, vocab, width, image_tokens, max_per_sample;
  bool prepend;
  int64_t max_length;
  DType dtype;
};

struct Batch {
  std::vector<int64_t> ids, labels;
  std::vector<uint8_t> keep;
  int64_t images = 0;
};

// Each sample: a random run of padding on the left or right (id -1, never
// looked at), 0..max_per_sample placeholders at random kept positions, random
// ids elsewhere (with repeats).
Batch random_batch(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  const int64_t n = c.batch * c.text_len;
  b.ids.assign(static_cast<size_t>(n), 0);
  b.labels.assign(static_cast<size_t>(n), 0);
  b.keep.assign(static_cast<size_t>(n), 1);
  for (int64_t s = 0; s < c.batch; ++s) {
    const int64_t pad = static_cast<int64_t>(rng() % static_cast<uint64_t>(c.text_len / 3 + 1));
    const bool left = rng() % 2 == 0;
    std::vector<int64_t> kept;
    for (int64_t t = 0; t < c.text_len; ++t) {
      const size_t i = static_cast<size_t>(s * c.text_len + t);
      const bool padding = left ? t < pad : t >= c.text_len - pad;
      b.keep[i] = padding ? 0 : 1;
      b.ids[i] = padding ? -1 : static_cast<int64_t>(rng() % static_cast<uint64_t>(c.vocab));
      b.labels[i] = static_cast<int64_t>(rng() % 100) - 50;
      if (!padding) kept.push_back(static_cast<int64_t>(i));
    }
    std::shuffle(kept.begin(), kept.end(), rng);
    const int64_t places =
        std::min<int64_t>(static_cast<int64_t>(kept.size()), static_cast<int64_t>(rng() % static_cast<uint64_t>(c.max_per_sample + 1)));
    for (int64_t p = 0; p < places; ++p) b.ids[static_cast<size_t>(kept[static_cast<size_t>(p)])] = -200;
    b.images += places > 0 ? places : (c.prepend ? 1 : 0);
  }
  return b;
}

void check_equal_rows(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  CHECK_REL(got.to(Device::cpu()), want, 1e-5);
  // A copy is exact: no element may differ (NaN poison included).
  const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  size_t differ = 0;
  for (size_t i = 0; i < g.size(); ++i) differ += !(g[i] == w[i]);
  CHECK(differ == 0);
}

}  // namespace

TEST_CASE("cuda splice_image_embeddings matches the CPU", "[cuda][splice]") {
  uint64_t seed = 900;
  for (const Case& c : std::vector<Case>{{4, 64, 1000, 4096, 576, 1, false, 0, DType::f32},
                                         {16, 64, 500, 64, 144, 2, true, 0, DType::f32},
                                         {3, 17, 50, 33, 5, 3, false, 40, DType::f32},
                                         {1, 1, 1, 1, 1, 1, true, 0, DType::f32},
                                         {5, 30, 7, 3, 2, 2, false, 12, DType::f64},
                                         {2, 9, 20, 5, 300, 1, true, 0, DType::f32}}) {
    INFO("B=" << c.batch << " T=" << c.text_len << " V=" << c.vocab << " D=" << c.width << " Nv=" << c.image_tokens
              << " prepend=" << c.prepend << " max_length=" << c.max_length << " " << dtype_name(c.dtype));
    const Batch b = random_batch(c, seed++);
    Generator gen(seed++);
    const Tensor table = Tensor::randn({c.vocab, c.width}, gen, c.dtype);
    const Tensor visual = Tensor::randn({b.images, c.image_tokens, c.width}, gen, c.dtype);
    const Tensor ids = Tensor::from_vector(b.ids, {c.batch, c.text_len});
    const Tensor labels = Tensor::from_vector(b.labels, {c.batch, c.text_len});
    const Tensor mask = Tensor::from_vector(b.keep, {c.batch, c.text_len});
    SpliceOptions o;
    o.prepend_image_if_missing = c.prepend;
    o.max_length = c.max_length;

    Tensor table_c = table.clone(), visual_c = visual.clone();
    Tensor table_g = table.to(kGpu), visual_g = visual.to(kGpu);
    for (Tensor* t : {&table_c, &visual_c, &table_g, &visual_g}) t->set_requires_grad(true);
    const SpliceResult rc = splice_image_embeddings(ids, table_c, visual_c, labels, mask, o);
    // The index tensors on the device this time.
    const SpliceResult rg = splice_image_embeddings(ids.to(kGpu), table_g, visual_g, labels.to(kGpu), mask.to(kGpu), o);
    REQUIRE(rg.inputs_embeds.device() == kGpu);
    check_equal_rows(rg.inputs_embeds, rc.inputs_embeds);
    CHECK(rg.attention_mask.to_vector<int64_t>() == rc.attention_mask.to_vector<int64_t>());
    CHECK(rg.labels.to_vector<int64_t>() == rc.labels.to_vector<int64_t>());
    CHECK(rg.position_ids.to_vector<int64_t>() == rc.position_ids.to_vector<int64_t>());
    CHECK(rg.truncated == rc.truncated);
    const Tensor g = Tensor::randn(rc.inputs_embeds.shape(), gen, c.dtype);
    rc.inputs_embeds.backward(g);
    rg.inputs_embeds.backward(g.to(kGpu));
    CHECK_REL(table_g.grad().to(Device::cpu()), table_c.grad(), 1e-5);
    CHECK_REL(visual_g.grad().to(Device::cpu()), visual_c.grad(), 1e-5);

#if VLMC_WITH_CUDA  // the kernels exist only in a CUDA build
    // Kernel level, from the host plan, into poisoned buffers.
    kernels::SpliceRequest q;
    q.input_ids = b.ids.data();
    q.labels = b.labels.data();
    q.keep = b.keep.data();
    q.batch = c.batch;
    q.text_len = c.text_len;
    q.vocab = c.vocab;
    q.num_images = b.images;
    q.image_tokens = c.image_tokens;
    q.prepend_image_if_missing = c.prepend;
    q.max_length = c.max_length;
    kernels::SplicePlan plan;
    REQUIRE(kernels::plan_splice(plan, q).empty());
    const int64_t rows = c.batch * plan.length, row_bytes = c.width * static_cast<int64_t>(dtype_size(c.dtype));
    const Tensor source = Tensor::from_vector(plan.row_source, {rows}).to(kGpu);
    const Tensor table_d = table.to(kGpu), visual_d = visual.to(kGpu), g_d = g.to(kGpu);
    Tensor out = Tensor::full({c.batch, plan.length, c.width}, NAN, c.dtype, kGpu);
    kernels::cuda::splice_rows(out.data_ptr(), table_d.data_ptr(), visual_d.data_ptr(), source.data<int64_t>(), rows,
                               c.vocab, row_bytes, cuda::stream(0));
    check_equal_rows(out, rc.inputs_embeds.detach());

    const int64_t visual_rows = b.images * c.image_tokens;
    const Tensor dest = Tensor::from_vector(plan.visual_dest, {visual_rows}).to(kGpu);
    Tensor dvisual = Tensor::full(visual.shape(), NAN, c.dtype, kGpu);
    kernels::cuda::rows_from_map(dvisual.data_ptr(), g_d.data_ptr(), dest.data<int64_t>(), visual_rows, row_bytes,
                                 cuda::stream(0));
    check_equal_rows(dvisual, visual_c.grad());

    const int64_t groups = static_cast<int64_t>(plan.table_ids.size());
    const Tensor ids_d = Tensor::from_vector(plan.table_ids, {groups}).to(kGpu);
    const Tensor offsets_d =
        Tensor::from_vector(plan.group_offsets, {static_cast<int64_t>(plan.group_offsets.size())}).to(kGpu);
    const Tensor rows_d = Tensor::from_vector(plan.group_rows, {static_cast<int64_t>(plan.group_rows.size())}).to(kGpu);
    Tensor dtable = Tensor::full(table.shape(), NAN, c.dtype, kGpu);
    if (c.dtype == DType::f32) {
      kernels::cuda::splice_table_backward<float>(dtable.data<float>(), g_d.data<float>(), ids_d.data<int64_t>(),
                                                  offsets_d.data<int64_t>(), rows_d.data<int64_t>(), groups, c.vocab,
                                                  c.width, cuda::stream(0));
    } else {
      kernels::cuda::splice_table_backward<double>(dtable.data<double>(), g_d.data<double>(), ids_d.data<int64_t>(),
                                                   offsets_d.data<int64_t>(), rows_d.data<int64_t>(), groups, c.vocab,
                                                   c.width, cuda::stream(0));
    }
    // Same summation order on both devices: equal, not just close.
    check_equal_rows(dtable, table_c.grad());
#endif
  }
}

TEST_CASE("cuda splice_image_embeddings reports bad ids and image counts", "[cuda][splice]") {
  const Tensor table = Tensor::zeros({6, 2}, DType::f32, kGpu), visual = Tensor::zeros({1, 3, 2}, DType::f32, kGpu);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{-200, 1, 9, 2}, {2, 2}).to(kGpu);
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids, table, visual),
                      Catch::Contains("input_ids[1, 0] = 9 is neither a row of the embedding table [0, 6)"));
  const Tensor two = Tensor::from_vector(std::vector<int64_t>{-200, 1, -200, 2}, {2, 2}).to(kGpu);
  REQUIRE_THROWS_WITH(splice_image_embeddings(two, table, visual),
                      Catch::Contains("2 image slots (2 placeholders with id -200) but visual_tokens holds 1 image(s)"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(two, table.to(Device::cpu()), visual),
                      Catch::Contains("splice_image_embeddings: tensors on cpu and cuda:0"));
}
