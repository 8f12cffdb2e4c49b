// The trainer's batching (train/batches.h): token layout, labels and mask of
// text batches built from hand-made samples; determinism, independence and
// uniformity of the sample order; the stage-0 slot words of every grid slot;
// and the normalised pixels the vision encoder reads.
//
// Expected token ids are spelled word by word through Tokenizer::id, never
// through encode, so a tokenizer split bug cannot hide in both sides.
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "train/batches.h"
#include "train/idx.h"
#include "train/mosaic.h"
#include "train/tokenizer.h"

using namespace vlmc;
using namespace vlmc::train;

namespace {

// Ids of a list of words; every word must be in the vocabulary.
std::vector<int64_t> words(const Tokenizer& tok, std::initializer_list<const char*> list) {
  std::vector<int64_t> out;
  for (const char* w : list) {
    const int64_t id = tok.id(w);
    REQUIRE(id != -1);
    out.push_back(id);
  }
  return out;
}

std::vector<int64_t> concat(std::initializer_list<std::vector<int64_t>> parts) {
  std::vector<int64_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Three samples of different lengths: a "what" question (the image after the
// question, as the generator writes them), a stage-1 caption (prompt "<image>"
// alone) and a yes/no question.
std::vector<Sample> hand_samples() {
  return {
      {"what is at the top left? <image>", "bag", 5, QuestionKind::what},
      {"<image>", "top left: bag, top right: sneaker, bottom left: coat, bottom right: ankle-boot", 2,
       QuestionKind::caption},
      {"is there a coat? <image>", "no", 0, QuestionKind::exists},
  };
}

// prompt part (with <bos> and <image>) and answer part (with <eos>) of each
// hand sample, as the batch must lay them out.
struct Expected {
  std::vector<int64_t> prompt, answer;
};

std::vector<Expected> hand_expected(const Tokenizer& tok) {
  const std::vector<int64_t> head = {kBosId, kImageTokenId};
  const std::vector<int64_t> bos = {kBosId}, image = {kImageTokenId};
  return {
      {concat({bos, words(tok, {"what", "is", "at", "the", "top", "left", "?"}), image}),
       concat({words(tok, {"bag"}), {kEosId}})},
      {head, concat({words(tok, {"top", "left", ":", "bag", ",", "top", "right", ":", "sneaker", ",", "bottom",
                                 "left", ":", "coat", ",", "bottom", "right", ":", "ankle-boot"}),
                     {kEosId}})},
      {concat({bos, words(tok, {"is", "there", "a", "coat", "?"}), image}), concat({words(tok, {"no"}), {kEosId}})},
  };
}

// Checks one batch built from hand_samples() rows against hand_expected().
void check_batch(const TextBatch& batch, const std::vector<int64_t>& rows) {
  const Tokenizer tok;
  const auto samples = hand_samples();
  const auto expected = hand_expected(tok);
  size_t longest = 0;
  int64_t text = 0;
  for (int64_t r : rows) {
    const Expected& e = expected[static_cast<size_t>(r)];
    longest = std::max(longest, e.prompt.size() + e.answer.size());
    text += static_cast<int64_t>(e.prompt.size() + e.answer.size()) - 1;  // minus <image>
  }
  const int64_t B = static_cast<int64_t>(rows.size()), T = static_cast<int64_t>(longest);
  REQUIRE(batch.input_ids.shape() == Shape{B, T});
  REQUIRE(batch.labels.shape() == Shape{B, T});
  REQUIRE(batch.text_mask.shape() == Shape{B, T});
  CHECK(batch.input_ids.dtype() == DType::i64);
  CHECK(batch.labels.dtype() == DType::i64);
  CHECK(batch.text_mask.dtype() == DType::i64);
  CHECK(batch.text_tokens == text);
  REQUIRE(batch.images.size() == rows.size());

  const auto ids = batch.input_ids.to_vector<int64_t>();
  const auto labels = batch.labels.to_vector<int64_t>();
  const auto mask = batch.text_mask.to_vector<int64_t>();
  for (size_t b = 0; b < rows.size(); ++b) {
    const Expected& e = expected[static_cast<size_t>(rows[b])];
    CHECK(batch.images[b] == samples[static_cast<size_t>(rows[b])].image);
    const std::vector<int64_t> full = concat({e.prompt, e.answer});
    std::vector<int64_t> want_ids(longest, kPadId), want_labels(longest, -100), want_mask(longest, 0);
    for (size_t t = 0; t < full.size(); ++t) {
      want_ids[t] = full[t];
      want_mask[t] = 1;
      if (t >= e.prompt.size()) want_labels[t] = full[t];  // the answer and <eos>, in place
    }
    const auto row = [&](const std::vector<int64_t>& v) {
      return std::vector<int64_t>(v.begin() + static_cast<ptrdiff_t>(b * longest),
                                  v.begin() + static_cast<ptrdiff_t>((b + 1) * longest));
    };
    INFO("batch row " << b << " (sample " << rows[b] << ")");
    CHECK(row(ids) == want_ids);
    CHECK(row(labels) == want_labels);
    CHECK(row(mask) == want_mask);
  }
}

// A fake split whose pixels differ per item and per position, so a misplaced
// or transposed quadrant shows.
FashionMnist patterned_split(int64_t n) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * 784));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[static_cast<size_t>(i)] = (3 * i + 1) % 10;
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x)
        pixels[static_cast<size_t>((i * 28 + y) * 28 + x)] = static_cast<uint8_t>((37 * i + 7 * y + x) % 256);
  }
  return {Split::train, Tensor::from_vector(pixels, {n, 28, 28}), Tensor::from_vector(labels, {n})};
}

}  // namespace

// ---- make_text_batch ----------------------------------------------------------------------

TEST_CASE("batches: text batch lays out bos, prompt with image, answer, eos, then pad", "[batches]") {
  const Tokenizer tok;
  const auto samples = hand_samples();
  SECTION("all three samples, in order") {
    const std::vector<int64_t> rows = {0, 1, 2};
    check_batch(make_text_batch(tok, samples, rows), rows);
  }
  SECTION("reordered and repeated rows") {
    const std::vector<int64_t> rows = {2, 0, 2};
    check_batch(make_text_batch(tok, samples, rows), rows);
  }
  SECTION("one sample: no padding at all") {
    const std::vector<int64_t> rows = {0};
    const TextBatch batch = make_text_batch(tok, samples, rows);
    check_batch(batch, rows);
    for (int64_t m : batch.text_mask.to_vector<int64_t>()) CHECK(m == 1);
  }
}

TEST_CASE("batches: text batch literal ids of the what question", "[batches]") {
  // Spelled out once with the vocabulary's fixed ids, so a reordered
  // vocabulary (which would break every checkpoint) shows here too.
  const Tokenizer tok;
  const TextBatch batch = make_text_batch(tok, hand_samples(), {0});
  // <bos> what is at the top left ? <image> bag <eos>
  CHECK(batch.input_ids.to_vector<int64_t>() ==
        std::vector<int64_t>{1, 11, 12, 13, 14, 7, 9, 6, -200, 37, 2});
  CHECK(batch.labels.to_vector<int64_t>() ==
        std::vector<int64_t>{-100, -100, -100, -100, -100, -100, -100, -100, -100, 37, 2});
  CHECK(batch.text_tokens == 10);
  CHECK(batch.images == std::vector<int64_t>{5});
}

TEST_CASE("batches: text batch rejects bad prompts, unknown words and bad rows", "[batches]") {
  const Tokenizer tok;
  const auto one = [&](const std::string& prompt, const std::string& answer) {
    return make_text_batch(tok, {Sample{prompt, answer, 0, QuestionKind::what}}, {0});
  };
  REQUIRE_THROWS_WITH(one("what is at the top left?", "bag"),
                      Catch::Contains("'what is at the top left?'") && Catch::Contains("<image>"));
  CHECK_NOTHROW(one("what is at the top left? <image>", "bag"));  // anywhere, once
  CHECK_NOTHROW(one("<image> what is at the top left?", "bag"));
  REQUIRE_THROWS_WITH(one("<image> <image> what is at the top left?", "bag"),
                      Catch::Contains("'<image> <image> what is at the top left?'") &&
                          Catch::Contains("exactly one"));
  REQUIRE_THROWS_WITH(one("<image> what is at the middle?", "bag"), Catch::Contains("\"middle\""));
  REQUIRE_THROWS_WITH(one("<image> what is at the top left?", "purse"), Catch::Contains("\"purse\""));
  REQUIRE_THROWS_WITH(one("", "bag"), Catch::Contains("<image>"));

  const auto samples = hand_samples();
  REQUIRE_THROWS_WITH(make_text_batch(tok, samples, {0, 3}), Catch::Contains("sample 3 outside a set of 3"));
  REQUIRE_THROWS_WITH(make_text_batch(tok, samples, {-1}), Catch::Contains("sample -1"));
  REQUIRE_THROWS_WITH(make_text_batch(tok, samples, {}), Catch::Contains("no samples"));
  REQUIRE_THROWS_AS(make_text_batch(tok, {}, {0}), Error);
}

// ---- batch_indices ------------------------------------------------------------------------

TEST_CASE("batches: batch indices are a pure function of their arguments", "[batches]") {
  const auto a = batch_indices(7, 1, 12, 32, 8000);
  CHECK(a.size() == 32);
  CHECK(a == batch_indices(7, 1, 12, 32, 8000));
  for (int64_t count : {int64_t{2}, int64_t{7}, int64_t{1000}, int64_t{1} << 40}) {
    for (int64_t step : {0, 1, 999}) {
      for (int64_t v : batch_indices(3, 2, step, 64, count)) {
        CHECK(v >= 0);
        CHECK(v < count);
      }
    }
  }
  // Any change of step, stream or seed gives another sequence.
  CHECK(a != batch_indices(7, 1, 13, 32, 8000));
  CHECK(a != batch_indices(7, 2, 12, 32, 8000));
  CHECK(a != batch_indices(8, 1, 12, 32, 8000));
  CHECK(batch_indices(0, 0, 0, 32, 8000) != batch_indices(0, 1, 0, 32, 8000));
  CHECK(batch_indices(0, 0, 0, 32, 8000) != batch_indices(1, 0, 0, 32, 8000));
  // Seed and stream are not interchangeable.
  CHECK(batch_indices(1, 2, 0, 32, 8000) != batch_indices(2, 1, 0, 32, 8000));
  // Within a batch the draws are not all the same.
  CHECK(std::set<int64_t>(a.begin(), a.end()).size() > 20);
}

TEST_CASE("batches: batch indices are roughly uniform", "[batches]") {
  // 100k draws into 10 bins: expected 10k each, standard deviation ~95, so a
  // 5 % band is five deviations wide.
  std::array<int64_t, 10> bins{};
  for (int64_t step = 0; step < 100; ++step)
    for (int64_t v : batch_indices(42, 3, step, 1000, 10)) ++bins[static_cast<size_t>(v)];
  for (size_t k = 0; k < bins.size(); ++k) {
    INFO("bin " << k);
    CHECK(bins[k] >= 9500);
    CHECK(bins[k] <= 10500);
  }
  // The low and high halves of a large count are both reached evenly too.
  int64_t low = 0;
  for (int64_t step = 0; step < 10; ++step)
    for (int64_t v : batch_indices(42, 4, step, 1000, int64_t{1} << 40)) low += v < (int64_t{1} << 39);
  CHECK(low > 4700);
  CHECK(low < 5300);
}

TEST_CASE("batches: batch indices of a one-sample set and bad arguments", "[batches]") {
  for (int64_t v : batch_indices(5, 0, 3, 16, 1)) CHECK(v == 0);
  CHECK(batch_indices(5, 0, 3, 16, 1).size() == 16);
  REQUIRE_THROWS_WITH(batch_indices(0, 0, 0, 4, 0), Catch::Contains("count 0"));
  REQUIRE_THROWS_WITH(batch_indices(0, 0, 0, 4, -3), Catch::Contains("count -3"));
  REQUIRE_THROWS_WITH(batch_indices(0, 0, 0, 0, 10), Catch::Contains("batch 0"));
  REQUIRE_THROWS_WITH(batch_indices(0, 0, -1, 4, 10), Catch::Contains("step -1"));
}

// ---- slot_word_ids ------------------------------------------------------------------------

TEST_CASE("batches: slot words are the quadrant's place words and its class", "[batches]") {
  const Tokenizer tok;
  const std::array<std::array<int64_t, 2>, 4> place = {
      std::array<int64_t, 2>{tok.id("top"), tok.id("left")}, {tok.id("top"), tok.id("right")},
      {tok.id("bottom"), tok.id("left")}, {tok.id("bottom"), tok.id("right")}};
  const std::vector<std::vector<int64_t>> classes = {{8, 7, 4, 9}, {0, 1, 2, 3}, {5, 5, 6, 5}};
  for (int64_t g : {2, 4}) {
    INFO("grid " << g);
    const Tensor ids = slot_word_ids(tok, classes, 2, g);
    REQUIRE(ids.shape() == Shape{3, g * g, 3});
    CHECK(ids.dtype() == DType::i64);
    const auto v = ids.to_vector<int64_t>();
    for (size_t b = 0; b < classes.size(); ++b) {
      for (int64_t j = 0; j < g * g; ++j) {
        const int64_t row = j / g, col = j % g;
        const size_t q = static_cast<size_t>((row >= g / 2) * 2 + (col >= g / 2));
        const size_t at = (b * static_cast<size_t>(g * g) + static_cast<size_t>(j)) * 3;
        INFO("sample " << b << " slot " << j);
        CHECK(v[at] == place[q][0]);
        CHECK(v[at + 1] == place[q][1]);
        CHECK(v[at + 2] == tok.id(class_names()[static_cast<size_t>(classes[b][q])]));
      }
    }
  }
  // A few slots of the 4x4 grid spelled out: the centre four are one of each quadrant.
  const auto v = slot_word_ids(tok, {{8, 7, 4, 9}}, 2, 4).to_vector<int64_t>();
  const auto slot = [&](size_t j) { return std::vector<int64_t>(v.begin() + 3 * j, v.begin() + 3 * j + 3); };
  CHECK(slot(0) == std::vector<int64_t>{tok.id("top"), tok.id("left"), tok.id("bag")});
  CHECK(slot(5) == std::vector<int64_t>{tok.id("top"), tok.id("left"), tok.id("bag")});
  CHECK(slot(6) == std::vector<int64_t>{tok.id("top"), tok.id("right"), tok.id("sneaker")});
  CHECK(slot(9) == std::vector<int64_t>{tok.id("bottom"), tok.id("left"), tok.id("coat")});
  CHECK(slot(10) == std::vector<int64_t>{tok.id("bottom"), tok.id("right"), tok.id("ankle-boot")});
  CHECK(slot(3) == std::vector<int64_t>{tok.id("top"), tok.id("right"), tok.id("sneaker")});
  CHECK(slot(12) == std::vector<int64_t>{tok.id("bottom"), tok.id("left"), tok.id("coat")});
}

TEST_CASE("batches: slot words of a 4x4 mosaic: one cell per slot, or the sum of the cells a coarser slot covers", "[batches]") {
  const Tokenizer tok(4);
  std::vector<int64_t> row(16);
  for (size_t q = 0; q < 16; ++q) row[q] = static_cast<int64_t>((q * 3) % 10);  // a1 t-shirt, b1 pullover, ...
  const auto word = [&](const std::string& w) { return tok.id(w); };
  const auto cls = [&](size_t q) { return tok.id(class_names()[static_cast<size_t>(row[q])]); };
  {  // 4x4 slots: slot q is cell q, "b3" then its class
    const Tensor ids = slot_word_ids(tok, {row}, 4, 4);
    REQUIRE(ids.shape() == Shape{1, 16, 2});
    const auto v = ids.to_vector<int64_t>();
    for (size_t q = 0; q < 16; ++q) {
      INFO("slot " << q);
      CHECK(v[2 * q] == word(cell_names(4)[q]));
      CHECK(v[2 * q + 1] == cls(q));
    }
    CHECK(v[2 * 9] == word("b3"));
  }
  {  // 2x2 slots (a pooling connector's tokens): slot 1 covers c1 d1 c2 d2
    const Tensor ids = slot_word_ids(tok, {row}, 4, 2);
    REQUIRE(ids.shape() == Shape{1, 4, 8});
    const auto v = ids.to_vector<int64_t>();
    CHECK(std::vector<int64_t>(v.begin() + 8, v.begin() + 16) ==
          std::vector<int64_t>{word("c1"), cls(2), word("d1"), cls(3), word("c2"), cls(6), word("d2"), cls(7)});
  }
  {  // 8x8 slots: each cell's four slots repeat it
    const auto v = slot_word_ids(tok, {row}, 4, 8).to_vector<int64_t>();
    REQUIRE(v.size() == 64 * 2);
    for (size_t j : {size_t{0}, size_t{1}, size_t{8}, size_t{9}}) CHECK(v[2 * j] == word("a1"));
    CHECK(v[2 * 63] == word("d4"));
    CHECK(v[2 * 63 + 1] == cls(15));
  }
}

TEST_CASE("batches: slot words reject grids that do not tile the mosaic, and bad classes", "[batches]") {
  const Tokenizer tok;
  for (int64_t g : {3, 5, 0, -2}) {
    INFO("grid " << g);
    REQUIRE_THROWS_WITH(slot_word_ids(tok, {{0, 1, 2, 3}}, 2, g),
                        Catch::Contains(std::to_string(g) + "x" + std::to_string(g)) && Catch::Contains("does not tile"));
  }
  // One slot over a 2x2 mosaic sums all four quadrants.
  CHECK(slot_word_ids(tok, {{0, 1, 2, 3}}, 2, 1).shape() == Shape{1, 1, 12});
  REQUIRE_THROWS_WITH(slot_word_ids(tok, {{0, 1, 2, 3}, {0, 10, 2, 3}}, 2, 2), Catch::Contains("class 10"));
  REQUIRE_THROWS_WITH(slot_word_ids(tok, {{-1, 1, 2, 3}}, 2, 4), Catch::Contains("class -1"));
  REQUIRE_THROWS_WITH(slot_word_ids(tok, {{0, 1, 2}}, 2, 2), Catch::Contains("sample 0 has 3 classes"));
  REQUIRE_THROWS_WITH(slot_word_ids(Tokenizer(2), {std::vector<int64_t>(16, 0)}, 4, 4), Catch::Contains("a1"));
}

// ---- encoder_pixels -----------------------------------------------------------------------

TEST_CASE("batches: encoder pixels are the mosaics normalised with Fashion-MNIST statistics", "[batches]") {
  const FashionMnist data = patterned_split(12);
  Generator gen(11);
  const MosaicSet set = make_mosaics(data, 5, gen);
  const std::vector<int64_t> rows = {3, 0, 3, 4};
  const Tensor px = encoder_pixels(set, rows);
  REQUIRE(px.shape() == Shape{4, 1, 56, 56});
  CHECK(px.dtype() == DType::f32);
  const auto got = px.to_vector<float>();
  const auto src = set.sources.to_vector<int64_t>();
  const auto items = data.images.to_vector<uint8_t>();
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t m = rows[b];
    for (int64_t y = 0; y < 56; ++y) {
      for (int64_t x = 0; x < 56; ++x) {
        // The pixel straight from the item it came from, not from set.images.
        const int64_t q = (y / 28) * 2 + x / 28;
        const int64_t item = src[static_cast<size_t>(4 * m + q)];
        const double raw = items[static_cast<size_t>((item * 28 + y % 28) * 28 + x % 28)] / 255.0;
        const double want = (raw - 0.2860) / 0.3530;
        const float g = got[(b * 56 + static_cast<size_t>(y)) * 56 + static_cast<size_t>(x)];
        if (std::abs(g - want) > 1e-5) {
          INFO("row " << b << " (mosaic " << m << ") pixel " << y << "," << x);
          CHECK(g == Approx(want).margin(1e-5));
        }
      }
    }
  }
  // Extremes of the normalisation: 0 and 255 map to -0.8102 and 2.0227.
  const FashionMnist flat = {Split::train,
                             Tensor::from_vector(std::vector<uint8_t>(2 * 784, 0), {2, 28, 28}),
                             Tensor::from_vector(std::vector<int64_t>{0, 1}, {2})};
  Generator g2(1);
  MosaicSet black = make_mosaics(flat, 1, g2);
  CHECK(encoder_pixels(black, {0}).to_vector<float>()[0] == Approx(-0.2860 / 0.3530).margin(1e-6));
  std::vector<uint8_t> white(784, 255);
  const FashionMnist bright = {Split::train, Tensor::from_vector(white, {1, 28, 28}),
                               Tensor::from_vector(std::vector<int64_t>{2}, {1})};
  MosaicSet w = make_mosaics(bright, 1, g2);
  CHECK(encoder_pixels(w, {0}).to_vector<float>()[3135] == Approx((1.0 - 0.2860) / 0.3530).margin(1e-5));
  REQUIRE_THROWS_AS(encoder_pixels(set, {5}), Error);
}
