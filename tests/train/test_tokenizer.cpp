// Tokenizer: fixed ids, <image> -> -200, and exact round trips of every
// sentence kind the mosaic generators emit (strict mode: no unknown words).
#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include "train/mosaic.h"
#include "train/tokenizer.h"

using namespace vlmc;
using namespace vlmc::train;

TEST_CASE("tokenizer: fixed ids and special tokens", "[data][tokenizer]") {
  const Tokenizer tok;
  CHECK(tok.vocab_size() == 49);
  CHECK(tok.id("<pad>") == 0);
  CHECK(tok.id("<bos>") == 1);
  CHECK(tok.id("<eos>") == 2);
  CHECK(tok.id("<unk>") == 3);
  CHECK(tok.id(":") == 4);
  CHECK(tok.id(",") == 5);
  CHECK(tok.id("?") == 6);
  CHECK(tok.id("top") == 7);
  CHECK(tok.id("t-shirt") == 29);
  CHECK(tok.id("ankle-boot") == 38);
  CHECK(tok.id("ankle-boots") == 48);
  CHECK(tok.id("<image>") == kImageTokenId);
  CHECK(kImageTokenId == -200);
  CHECK(tok.id("hat") == -1);
  CHECK(tok.encode("<image> what is at the top left?", {true, true}) ==
        std::vector<int64_t>{1, -200, 11, 12, 13, 14, 7, 9, 6, 2});
  CHECK(tok.encode("top left: bag,") == std::vector<int64_t>{7, 9, 4, 37, 5});
}

TEST_CASE("tokenizer: unknown words", "[data][tokenizer]") {
  const Tokenizer tok;
  CHECK(tok.encode("is there a hat?") == std::vector<int64_t>{12, 19, 20, kUnkId, 6});
  EncodeOptions strict;
  strict.strict = true;
  REQUIRE_THROWS_WITH(tok.encode("is there a hat?", strict), Catch::Contains("unknown word \"hat\""));
  REQUIRE_THROWS_WITH(tok.token(49), Catch::Contains("id 49"));
  REQUIRE_THROWS_WITH(tok.token(-1), Catch::Contains("id -1"));
}

TEST_CASE("tokenizer: decode", "[data][tokenizer]") {
  const Tokenizer tok;
  const std::vector<int64_t> ids = {1, -200, 12, 19, 21, 38, 6, 2, 0, 0};
  CHECK(tok.decode(ids) == "<bos> <image> is there an ankle-boot? <eos> <pad> <pad>");
  CHECK(tok.decode(ids, true) == "<image> is there an ankle-boot?");
}

TEST_CASE("tokenizer: round trip of every generated sentence kind", "[data][tokenizer]") {
  const Tokenizer tok;
  // Fake items 0..9 of classes 0..9, so every class and quadrant appears.
  std::vector<uint8_t> pixels(10 * 784, 0);
  std::vector<int64_t> labels(10);
  for (int64_t i = 0; i < 10; ++i) labels[i] = i;
  const FashionMnist data{Split::train, Tensor::from_vector(pixels, {10, 28, 28}),
                          Tensor::from_vector(labels, {10})};
  Generator gen(2);
  const MosaicSet set = make_mosaics(data, 300, gen);
  std::vector<Sample> samples = caption_samples(set);
  const auto questions = instruction_samples(set, 4, gen);
  samples.insert(samples.end(), questions.begin(), questions.end());
  // Four of a kind is rare in random draws; add such mosaics so "four" occurs.
  MosaicSet same = set;
  same.classes = Tensor::full({40, 4}, 9, DType::i64);
  const auto more = instruction_samples(same, 4, gen);
  samples.insert(samples.end(), more.begin(), more.end());
  EncodeOptions strict;
  strict.strict = true;
  strict.bos = true;
  strict.eos = true;
  std::set<int64_t> seen;
  for (const Sample& s : samples) {
    for (const std::string& text : {s.prompt, s.answer, s.text()}) {
      const auto ids = tok.encode(text, strict);
      for (int64_t i : ids) seen.insert(i);
      CHECK(tok.decode(ids, true) == text);
    }
    const auto prompt = tok.encode(s.prompt);
    CHECK(std::count(prompt.begin(), prompt.end(), kImageTokenId) == 1);
  }
  // Every vocabulary word except <pad>/<unk> is produced by the generators.
  for (int64_t i = 0; i < tok.vocab_size(); ++i)
    if (i != kPadId && i != kUnkId) CHECK(seen.count(i) == 1);
}

TEST_CASE("tokenizer of 4x4 mosaics: the main job's ids, then the cells and the numbers to sixteen", "[data][tokenizer]") {
  const Tokenizer two, four(4);
  CHECK(four.vocab_size() == 49 + 16 + 12);
  for (int64_t i = 0; i < two.vocab_size(); ++i) CHECK(four.token(i) == two.token(i));
  CHECK(four.id("a1") == 49);
  CHECK(four.id("d4") == 64);
  CHECK(four.id("five") == 65);
  CHECK(four.id("sixteen") == 76);
  CHECK(two.id("a1") == -1);
  REQUIRE_THROWS_WITH(Tokenizer(3), Catch::Contains("mosaic grid 3"));
  // Every word the 4x4 generators emit, round-tripped strictly; the numbers up to sixteen from one-class mosaics.
  std::vector<uint8_t> pixels(10 * 784, 0);
  std::vector<int64_t> labels(10);
  for (int64_t i = 0; i < 10; ++i) labels[i] = i;
  const FashionMnist data{Split::train, Tensor::from_vector(pixels, {10, 28, 28}), Tensor::from_vector(labels, {10})};
  Generator gen(2);
  const MosaicSet set = make_mosaics(data, 200, gen, 4);
  std::vector<Sample> samples = caption_samples(set);
  const auto questions = instruction_samples(set, 4, gen);
  samples.insert(samples.end(), questions.begin(), questions.end());
  for (int64_t n = 1; n <= 16; ++n) {  // n items of class 9, the rest class 0
    MosaicSet crafted = set;
    std::vector<int64_t> row(16, 0);
    for (int64_t q = 0; q < n; ++q) row[static_cast<size_t>(q)] = 9;
    crafted.classes = Tensor::from_vector(row, {1, 16});
    Generator cgen(n);
    const auto counts = instruction_samples(crafted, 8, cgen, QuestionKind::count);
    samples.insert(samples.end(), counts.begin(), counts.end());
  }
  std::set<int64_t> seen;
  for (const Sample& s : samples)
    for (const std::string& text : {s.prompt, s.answer}) {
      const auto ids = four.encode(text, {.bos = true, .eos = true, .strict = true});
      for (int64_t i : ids) seen.insert(i);
      CHECK(four.decode(ids, true) == text);
    }
  for (int64_t i = 49; i < four.vocab_size(); ++i) {
    INFO(four.token(i));
    CHECK(seen.count(i) == 1);
  }
}
