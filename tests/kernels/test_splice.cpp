// splice_image_embeddings: a hand-checked batch, both text-only modes,
// padding, truncation, the plan's reverse maps, PyTorch golden values
// (LLaVA's logic), f64 gradients and error messages.
#include <catch2/catch.hpp>
#include <numeric>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/splice.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;

namespace {

constexpr int64_t IMG = -200;

// table row i = (i, 10 + i); image m token j = (100 m + 2 j, 100 m + 2 j + 1), m from 1.
Tensor hand_table() {
  std::vector<double> v;
  for (int i = 0; i < 6; ++i) {
    v.push_back(i);
    v.push_back(10.0 + i);
  }
  return Tensor::from_vector(v, {6, 2});
}
Tensor hand_visual(int64_t images) {
  std::vector<double> v;
  for (int64_t m = 1; m <= images; ++m)
    for (int j = 0; j < 2; ++j) {
      v.push_back(100.0 * m + 2 * j);
      v.push_back(100.0 * m + 2 * j + 1);
    }
  return Tensor::from_vector(v, {images, 2, 2});
}
Tensor ids(const std::vector<int64_t>& v, int64_t b, int64_t t) { return Tensor::from_vector(v, {b, t}); }

}  // namespace

TEST_CASE("splice_image_embeddings replaces placeholders and pads on the right", "[splice]") {
  const Tensor input_ids = ids({1, IMG, 2, 5, 3, IMG, 0, 0}, 2, 4);
  const Tensor labels = ids({11, 12, 13, 14, 15, 16, 17, 18}, 2, 4);
  const Tensor mask = Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 0, 0}, {2, 4});
  const SpliceResult r = splice_image_embeddings(input_ids, hand_table(), hand_visual(2), labels, mask);
  REQUIRE(r.inputs_embeds.shape() == Shape{2, 5, 2});
  CHECK(r.inputs_embeds.to_vector<double>() == std::vector<double>{1, 11, 100, 101, 102, 103, 2, 12, 5, 15,  //
                                                                   3, 13, 200, 201, 202, 203, 0, 0, 0, 0});
  CHECK(r.labels.to_vector<int64_t>() == std::vector<int64_t>{11, -100, -100, 13, 14, 15, -100, -100, -100, -100});
  CHECK(r.attention_mask.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0});
  CHECK(r.position_ids.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2, 0, 0});
  CHECK(r.truncated == 0);
  CHECK(r.tokens == 8);
  CHECK(r.targets == 2);  // 13 and 14; 11 and 15 stand at their sample's position 0, which nothing predicts
  CHECK(r.attention_mask.dtype() == DType::i64);

  // No labels: IGNORE everywhere. An i64 mask works like a u8 one.
  const SpliceResult u = splice_image_embeddings(input_ids, hand_table(), hand_visual(2), Tensor(), mask.to(DType::i64));
  CHECK(u.labels.to_vector<int64_t>() == std::vector<int64_t>(10, -100));
  CHECK(u.inputs_embeds.to_vector<double>() == r.inputs_embeds.to_vector<double>());

  // A cap of 3 cuts two tokens of sample 0 and none of sample 1.
  SpliceOptions cap;
  cap.max_length = 3;
  const SpliceResult t = splice_image_embeddings(input_ids, hand_table(), hand_visual(2), labels, mask, cap);
  CHECK(t.truncated == 2);
  REQUIRE(t.inputs_embeds.shape() == Shape{2, 3, 2});
  CHECK(t.labels.to_vector<int64_t>() == std::vector<int64_t>{11, -100, -100, 15, -100, -100});
  CHECK(t.position_ids.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 0, 1, 2});
}

TEST_CASE("splice_image_embeddings: text-only samples carry no image, or get one prepended", "[splice]") {
  const Tensor input_ids = ids({1, 2, IMG, 3}, 2, 2);
  // LLaVA: sample 0 is text only and consumes no image.
  const SpliceResult llava = splice_image_embeddings(input_ids, hand_table(), hand_visual(1));
  REQUIRE(llava.inputs_embeds.shape() == Shape{2, 3, 2});
  CHECK(llava.inputs_embeds.to_vector<double>() == std::vector<double>{1, 11, 2, 12, 0, 0, 100, 101, 102, 103, 3, 13});
  CHECK(llava.attention_mask.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 1, 1, 1});
  // The seed: sample 0 gets image 1 in front; sample 1's placeholder takes image 2.
  SpliceOptions seed;
  seed.prepend_image_if_missing = true;
  const SpliceResult prepended = splice_image_embeddings(input_ids, hand_table(), hand_visual(2), Tensor(), Tensor(), seed);
  REQUIRE(prepended.inputs_embeds.shape() == Shape{2, 4, 2});
  CHECK(prepended.inputs_embeds.to_vector<double>() ==
        std::vector<double>{100, 101, 102, 103, 1, 11, 2, 12, 200, 201, 202, 203, 3, 13, 0, 0});
  CHECK(prepended.position_ids.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 0});
  // A custom placeholder id, inside the vocabulary.
  SpliceOptions custom;
  custom.image_token_id = 4;
  const SpliceResult c = splice_image_embeddings(ids({4, 1}, 1, 2), hand_table(), hand_visual(1), Tensor(), Tensor(), custom);
  CHECK(c.inputs_embeds.to_vector<double>() == std::vector<double>{100, 101, 102, 103, 1, 11});
}

TEST_CASE("splice_image_embeddings: empty samples and an empty batch", "[splice]") {
  // Sample 0 is all padding (its ids are not looked at): length 0.
  const Tensor mask = Tensor::from_vector(std::vector<uint8_t>{0, 0, 1, 1}, {2, 2});
  const SpliceResult r = splice_image_embeddings(ids({-7, 99, IMG, 1}, 2, 2), hand_table(), hand_visual(1), Tensor(), mask);
  REQUIRE(r.inputs_embeds.shape() == Shape{2, 3, 2});
  CHECK(r.attention_mask.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 1, 1, 1});
  CHECK(r.inputs_embeds.to_vector<double>() == std::vector<double>{0, 0, 0, 0, 0, 0, 100, 101, 102, 103, 1, 11});
  // Nothing real at all and no images: L = 0.
  const SpliceResult none = splice_image_embeddings(ids({0, 0}, 1, 2), hand_table(), Tensor::zeros({0, 2, 2}, DType::f64),
                                                    Tensor(), Tensor::zeros({1, 2}, DType::u8));
  CHECK(none.inputs_embeds.shape() == Shape{1, 0, 2});
  CHECK(none.labels.shape() == Shape{1, 0});
}

TEST_CASE("splice backward: visual rows gather, table rows sum per token id", "[splice]") {
  Tensor table = hand_table();
  table.set_requires_grad(true);
  Tensor visual = hand_visual(2);
  visual.set_requires_grad(true);
  SpliceOptions cap;
  cap.max_length = 4;
  // Sample 0: 1 1 [img 1] 1 -> cut after the image; sample 1: [img 2] 2 2.
  const SpliceResult r = splice_image_embeddings(ids({1, 1, IMG, 1, IMG, 2, 2, 0}, 2, 4), table, visual, Tensor(),
                                                 Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 0}, {2, 4}),
                                                 cap);
  CHECK(r.truncated == 1);
  // Gradient row value = 1 + the output row's index, in both columns.
  std::vector<double> g;
  for (int row = 0; row < 16; ++row) g.push_back(1.0 + row / 2);
  r.inputs_embeds.backward(Tensor::from_vector(g, {2, 4, 2}));
  // Output rows: sample 0 = t1 t1 v0 v1 (its last t1 cut), sample 1 = v2 v3 t2 t2.
  // id 1 sums rows 0, 1 (1 + 2); id 2 sums rows 6, 7 (7 + 8).
  CHECK(table.grad().to_vector<double>() == std::vector<double>{0, 0, 3, 3, 15, 15, 0, 0, 0, 0, 0, 0});
  CHECK(visual.grad().to_vector<double>() == std::vector<double>{3, 3, 4, 4, 5, 5, 6, 6});

  // The plan's reverse maps, directly.
  const std::vector<int64_t> id_values{1, 1, IMG, 1, IMG, 2, 2, 0};
  const std::vector<uint8_t> keep{1, 1, 1, 1, 1, 1, 1, 0};
  kernels::SpliceRequest q;
  q.input_ids = id_values.data();
  q.keep = keep.data();
  q.batch = 2;
  q.text_len = 4;
  q.vocab = 6;
  q.num_images = 2;
  q.image_tokens = 2;
  q.max_length = 4;
  kernels::SplicePlan plan;
  REQUIRE(kernels::plan_splice(plan, q).empty());
  CHECK(plan.row_source == std::vector<int64_t>{1, 1, 6, 7, 8, 9, 2, 2});
  CHECK(plan.visual_dest == std::vector<int64_t>{2, 3, 4, 5});
  CHECK(plan.table_ids == std::vector<int64_t>{1, 2});
  CHECK(plan.group_offsets == std::vector<int64_t>{0, 2, 4});
  CHECK(plan.group_rows == std::vector<int64_t>{0, 1, 6, 7});
  CHECK(plan.truncated == 1);
}

TEST_CASE("splice_image_embeddings gradients (f64 finite differences)", "[splice]") {
  const Tensor input_ids = ids({2, IMG, 2, 3, 0, 1, 1, IMG, 4, IMG, 0, 0}, 2, 6);
  const Tensor mask = Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0}, {2, 6});
  const Tensor labels = ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 2, 6);
  for (const int64_t cap : {0, 5}) {
    INFO("max_length " << cap);
    SpliceOptions o;
    o.max_length = cap;
    CHECK_GRADIENTS(
        [&](const std::vector<Tensor>& in) {
          return splice_image_embeddings(input_ids, in[0], in[1], labels, mask, o).inputs_embeds;
        },
        {test::leaf({5, 3}, 21), test::leaf({3, 2, 3}, 22)});
  }
  // Non-contiguous inputs: a narrowed table and a transposed image stack; and
  // the seed's mode, with a text-only sample given an image.
  SpliceOptions seed;
  seed.prepend_image_if_missing = true;
  const Tensor seed_ids = ids({1, 2, 3, IMG, 4, 0}, 2, 3);
  CHECK_GRADIENTS(
      [&](const std::vector<Tensor>& in) {
        return splice_image_embeddings(seed_ids, in[0].narrow(0, 1, 5), in[1].transpose(0, 1), Tensor(), Tensor(), seed)
            .inputs_embeds;
      },
      {test::leaf({7, 4}, 23), test::leaf({3, 2, 4}, 24)});
}

TEST_CASE("splice_image_embeddings matches the PyTorch reference (LLaVA's logic)", "[splice][golden]") {
  const test::GoldenFile golden = test::load_golden("topk_splice");
  const auto& file = golden.tensors;
  int cases = 0;
  for (const auto& [name, args] : golden.cases) {
    if (args.value("op", "") != "splice") continue;
    DYNAMIC_SECTION(name) {
      const auto optional = [&](const std::string& what) {
        const auto it = file.find(name + ".in." + what);
        return it == file.end() ? Tensor() : it->second;
      };
      Tensor table = file.at(name + ".in.embed_table").clone();
      Tensor visual = file.at(name + ".in.visual_tokens").clone();
      table.set_requires_grad(true);
      visual.set_requires_grad(true);
      SpliceOptions o;
      o.image_token_id = args.at("image_token_id").get<int64_t>();
      o.prepend_image_if_missing = args.at("prepend").get<bool>();
      o.max_length = args.at("max_length").get<int64_t>();
      const SpliceResult r = splice_image_embeddings(file.at(name + ".in.input_ids"), table, visual,
                                                     optional("labels"), optional("text_mask"), o);
      CHECK_REL(r.inputs_embeds, file.at(name + ".out.inputs_embeds"), 1e-5);
      CHECK(r.attention_mask.to_vector<int64_t>() == file.at(name + ".out.attention_mask").to_vector<int64_t>());
      CHECK(r.labels.to_vector<int64_t>() == file.at(name + ".out.labels").to_vector<int64_t>());
      CHECK(r.position_ids.to_vector<int64_t>() == file.at(name + ".out.position_ids").to_vector<int64_t>());
      CHECK(r.labels.shape() == file.at(name + ".out.labels").shape());
      CHECK(r.truncated == file.at(name + ".out.truncated").to_vector<int64_t>()[0]);
      const std::vector<int64_t> mask = r.attention_mask.to_vector<int64_t>();
      CHECK(r.tokens == std::accumulate(mask.begin(), mask.end(), int64_t{0}));
      const std::vector<int64_t> out_labels = r.labels.to_vector<int64_t>();
      const int64_t L = r.labels.size(1);
      int64_t targets = 0;
      for (size_t i = 0; i < out_labels.size(); ++i) targets += i % L != 0 && out_labels[i] != -100;
      CHECK(r.targets == targets);
      r.inputs_embeds.backward(file.at(name + ".proj.inputs_embeds"));
      CHECK_REL(table.grad(), file.at(name + ".grad.embed_table"), 1e-5);
      CHECK_REL(visual.grad(), file.at(name + ".grad.visual_tokens"), 1e-5);
    }
    ++cases;
  }
  CHECK(cases == 9);
}

TEST_CASE("splice_image_embeddings rejects bad arguments by name", "[splice]") {
  const Tensor table = Tensor::zeros({6, 2}), visual = Tensor::zeros({1, 3, 2});
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1, IMG, 2}, 2, 2), table, visual),
                      Catch::Contains("splice_image_embeddings: input_ids hold 2 image slots (2 placeholders with id "
                                      "-200) but visual_tokens holds 1 image(s) (input_ids [2,2], visual_tokens [1,3,2])"));
  SpliceOptions seed;
  seed.prepend_image_if_missing = true;
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1, 3, 2}, 2, 2), table, visual, Tensor(), Tensor(), seed),
                      Catch::Contains("2 image slots (1 placeholders with id -200 + 1 text-only samples given a "
                                      "prepended image) but visual_tokens holds 1 image(s)"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1, 6, 2}, 2, 2), table, visual),
                      Catch::Contains("splice_image_embeddings: input_ids[1, 0] = 6 is neither a row of the embedding "
                                      "table [0, 6) nor the image token id -200"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, -1}, 1, 2), table, visual),
                      Catch::Contains("input_ids[0, 1] = -1 is neither"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, Tensor::zeros({1, 3, 4})),
                      Catch::Contains("visual_tokens [1,3,4] and embed_table [6,2] differ in width (4 vs 2)"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, visual.to(DType::f64)),
                      Catch::Contains("splice_image_embeddings: dtypes f32 and f64 differ"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, Tensor::zeros({3, 2})),
                      Catch::Contains("visual_tokens [3,2] must be [num_images, Nv, D]"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, Tensor()),
                      Catch::Contains("visual_tokens (undefined) must be [num_images, Nv, D]"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), Tensor::zeros({6, 2}, DType::i64), visual),
                      Catch::Contains("embed_table i64 [6,2] on cpu must be f32 or f64"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(Tensor::zeros({1, 2}), table, visual),
                      Catch::Contains("input_ids f32 [1,2] on cpu must be i64"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1, 2}, 1, 3).view({3}), table, visual),
                      Catch::Contains("input_ids [3] must be [B, T]"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, visual, ids({1, 2, 3}, 1, 3)),
                      Catch::Contains("labels [1,3] must match input_ids [1,2]"));
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, visual, Tensor(), Tensor::ones({1, 2})),
                      Catch::Contains("text_mask f32 [1,2] on cpu must be u8 or i64"));
  SpliceOptions bad_cap;
  bad_cap.max_length = -1;
  REQUIRE_THROWS_WITH(splice_image_embeddings(ids({IMG, 1}, 1, 2), table, visual, Tensor(), Tensor(), bad_cap),
                      Catch::Contains("max_length -1 must be >= 0"));
}
