// Mosaics and their text: layout of the four items, determinism per seed,
// split separation, and the answers of every question kind checked against
// the mosaic's classes.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "core/threads.h"
#include "train/evaluate.h"
#include "train/mosaic.h"

using namespace vlmc;
using namespace vlmc::train;

namespace {

// A small fake split: item i is filled with value 10 * i + 5, class i % 10.
FashionMnist fake_split(int64_t n) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * 784));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 10;
    for (int64_t k = 0; k < 784; ++k) pixels[i * 784 + k] = static_cast<uint8_t>(10 * i + 5);
  }
  return {Split::train, Tensor::from_vector(pixels, {n, 28, 28}), Tensor::from_vector(labels, {n})};
}

}  // namespace

TEST_CASE("mosaic: quadrants hold their items, scaled to [0, 1]", "[data][mosaic]") {
  const FashionMnist data = fake_split(20);
  Generator gen(7);
  const MosaicSet set = make_mosaics(data, 50, gen);
  CHECK(set.images.shape() == Shape{50, 56, 56});
  CHECK(set.images.dtype() == DType::f32);
  CHECK(set.classes.shape() == Shape{50, 4});
  CHECK(gen.offset() == 50);
  const auto img = set.images.to_vector<float>();
  const auto src = set.sources.to_vector<int64_t>();
  std::set<int64_t> used;
  for (int64_t m = 0; m < 50; ++m) {
    const auto cls = set.classes_of(m);
    for (int64_t q = 0; q < 4; ++q) {
      const int64_t item = src[4 * m + q];
      used.insert(item);
      CHECK(cls[q] == item % 10);
      const float expect = (10 * item + 5) / 255.0f;
      // Corners of the quadrant.
      const int64_t r0 = (q / 2) * 28, c0 = (q % 2) * 28;
      for (int64_t y : {r0, r0 + 27})
        for (int64_t x : {c0, c0 + 27}) CHECK(img[(m * 56 + y) * 56 + x] == expect);
    }
  }
  CHECK(used.size() > 15);  // draws spread over the split
}

TEST_CASE("mosaic: deterministic per seed, prefix-stable, seed-dependent", "[data][mosaic]") {
  const FashionMnist data = fake_split(100);
  Generator a(3), b(3), c(4);
  const MosaicSet sa = make_mosaics(data, 40, a);
  const MosaicSet sb = make_mosaics(data, 10, b);
  const MosaicSet sc = make_mosaics(data, 40, c);
  const auto va = sa.sources.to_vector<int64_t>();
  const auto vb = sb.sources.to_vector<int64_t>();
  CHECK(std::vector<int64_t>(va.begin(), va.begin() + 40) == vb);
  CHECK(va != sc.sources.to_vector<int64_t>());
  Generator a2(3), a3(3);
  const MosaicSet s2 = make_mosaics(data, 40, a2);
  CHECK(instruction_samples(sa, 3, a).size() == 120);
  auto q1 = instruction_samples(s2, 3, a2), q2 = instruction_samples(make_mosaics(data, 40, a3), 3, a3);
  REQUIRE(q1.size() == q2.size());
  for (size_t i = 0; i < q1.size(); ++i) {
    CHECK(q1[i].prompt == q2[i].prompt);
    CHECK(q1[i].answer == q2[i].answer);
  }
}

TEST_CASE("mosaic: the threads that draw the mosaics change no bit", "[data][mosaic][threads]") {
  const FashionMnist data = fake_split(100);
  const int saved = num_threads();
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int64_t>> sources;
  for (const int threads : {1, 2, 3}) {  // 64 mosaics of 56 x 56: above the parallel grain
    set_num_threads(threads);
    Generator gen(5);
    const MosaicSet set = make_mosaics(data, 64, gen);
    images.push_back(set.images.to_vector<float>());
    sources.push_back(set.sources.to_vector<int64_t>());
  }
  set_num_threads(saved);
  CHECK(images[0] == images[1]);
  CHECK(images[0] == images[2]);
  CHECK(sources[0] == sources[1]);
  CHECK(sources[0] == sources[2]);
}

TEST_CASE("mosaic: captions", "[data][mosaic]") {
  CHECK(caption({8, 7, 4, 9}) ==
        "top left: bag, top right: sneaker, bottom left: coat, bottom right: ankle-boot");
  const FashionMnist data = fake_split(10);
  Generator gen(1);
  const MosaicSet set = make_mosaics(data, 5, gen);
  const auto samples = caption_samples(set);
  REQUIRE(samples.size() == 5);
  CHECK(samples[2].prompt == "<image>");
  CHECK(samples[2].answer == caption(set.classes_of(2)));
  CHECK(samples[2].text() == "<image> " + caption(set.classes_of(2)));
  CHECK(samples[2].kind == QuestionKind::caption);
  REQUIRE_THROWS_WITH(caption({0, 1, 2, 10}), Catch::Contains("class 10"));
}

TEST_CASE("mosaic: every question kind answers correctly", "[data][mosaic]") {
  const FashionMnist data = fake_split(30);
  Generator gen(11);
  const MosaicSet set = make_mosaics(data, 400, gen);
  const auto samples = instruction_samples(set, 2, gen);
  REQUIRE(samples.size() == 800);
  std::map<QuestionKind, int> kinds;
  std::map<std::string, int> answers;
  const auto& names = class_names();
  const auto& plurals = class_plurals();
  const auto& quads = quadrant_names();
  for (const Sample& s : samples) {
    kinds[s.kind]++;
    answers[s.answer]++;
    const auto cls = set.classes_of(s.image);
    auto count = [&](int64_t c) { int n = 0; for (int64_t k : cls) n += (k == c); return n; };
    REQUIRE(s.prompt.size() > 8);
    REQUIRE(s.prompt.substr(s.prompt.size() - 8) == " <image>");
    if (s.kind == QuestionKind::what) {
      bool found = false;
      for (int64_t q = 0; q < 4; ++q)
        if (s.prompt == "what is at the " + quads[q] + "? <image>") {
          found = true;
          CHECK(s.answer == names[cls[q]]);
        }
      CHECK(found);
    } else if (s.kind == QuestionKind::where) {
      bool found = false;
      for (int64_t q = 0; q < 4; ++q)
        if (s.answer == quads[q]) {
          found = true;
          CHECK(s.prompt == "where is the " + names[cls[q]] + "? <image>");
          CHECK(count(cls[q]) == 1);
        }
      CHECK(found);
    } else if (s.kind == QuestionKind::count) {
      bool found = false;
      for (int64_t c = 0; c < 10; ++c)
        if (s.prompt == "how many " + plurals[c] + " are there? <image>") {
          found = true;
          CHECK(s.answer == number_word(count(c)));
        }
      CHECK(found);
    } else {
      REQUIRE(s.kind == QuestionKind::exists);
      bool found = false;
      for (int64_t c = 0; c < 10; ++c) {
        const std::string article = c == 9 ? "an " : "a ";
        if (s.prompt == "is there " + article + names[c] + "? <image>") {
          found = true;
          CHECK(s.answer == (count(c) > 0 ? "yes" : "no"));
        }
      }
      CHECK(found);
    }
  }
  for (QuestionKind k : {QuestionKind::what, QuestionKind::where, QuestionKind::count,
                         QuestionKind::exists})
    CHECK(kinds[k] > 100);
  CHECK(answers["yes"] > 50);
  CHECK(answers["no"] > 50);
  CHECK(answers["zero"] > 0);
  CHECK(answers["two"] > 0);
}

TEST_CASE("mosaic: train and eval builders read their own split", "[data][mosaic]") {
  Generator g1(5), g2(5);
  const MosaicSet train = build_train_mosaics(8, g1);
  const MosaicSet eval = build_eval_mosaics(8, g2);
  CHECK(train.split == Split::train);
  CHECK(eval.split == Split::test);
  // Same counters, different files: the sources are the same draws scaled to
  // 60000 vs 10000 items, and the test indices stay below 10000.
  for (int64_t i : eval.sources.to_vector<int64_t>()) CHECK(i < 10000);
  CHECK(train.sources.to_vector<int64_t>() != eval.sources.to_vector<int64_t>());
  const auto px = train.images.to_vector<float>();
  float lo = 1, hi = 0;
  for (float v : px) { lo = std::min(lo, v); hi = std::max(hi, v); }
  CHECK(lo >= 0.0f);
  CHECK(hi <= 1.0f);
  CHECK(hi > 0.5f);
  REQUIRE_THROWS_WITH(build_train_mosaics(1, g1, "/nonexistent"),
                      Catch::Contains("dataset-fashion-mnist"));
}

TEST_CASE("evaluation baselines: the rule reader and the majority answer, kind by kind", "[data][mosaic]") {
  const FashionMnist data = fake_split(100);
  Generator gen(11), qgen(12);
  const MosaicSet set = make_mosaics(data, 40, gen);
  const std::vector<Sample> questions = instruction_samples(set, 8, qgen);
  const std::vector<Sample> captions = caption_samples(set);
  const std::vector<int64_t> truth = set.classes.to_vector<int64_t>();
  // Logits that put each quadrant's true class first.
  std::vector<float> logits(truth.size() * 10, 0.0f);
  for (size_t i = 0; i < truth.size(); ++i) logits[i * 10 + static_cast<size_t>(truth[i])] = 1.0f;
  const Tensor logit_tensor = Tensor::from_vector(logits, {static_cast<int64_t>(truth.size()), 10});

  // A perfect encoder: the rules answer every question of every kind.
  EvalReport perfect;
  score_baselines(perfect, questions, captions, 2, truth, logit_tensor);
  for (const char* kind : {"what", "where", "count", "exists", "caption"}) {
    INFO(kind);
    REQUIRE(perfect.rule_reader_kinds.count(kind) == 1);
    CHECK(perfect.rule_reader_kinds.at(kind).correct == perfect.rule_reader_kinds.at(kind).total);
  }
  CHECK(perfect.rule_reader.total == static_cast<int64_t>(questions.size()));
  CHECK(perfect.rule_reader.accuracy() == 1.0);
  // Half the "exists" questions are about a present class: a constant answer
  // gets about half; each caption is (almost surely) unique.
  CHECK(perfect.majority_kinds.at("exists").accuracy() >= 0.5);
  CHECK(perfect.majority_kinds.at("exists").accuracy() < 0.7);
  CHECK(perfect.majority_kinds.at("caption").correct <= 2);

  // An encoder that reads every quadrant as class 0: "what" is right only
  // where class 0 stands, and "exists" says yes to "is there a t-shirt?" only.
  std::vector<int64_t> zeros(truth.size(), 0);
  EvalReport blind;
  score_baselines(blind, questions, captions, 2, zeros, Tensor::zeros({static_cast<int64_t>(truth.size()), 10}));
  int64_t what_zero = 0, what_total = 0;
  for (const Sample& s : questions)
    if (s.kind == QuestionKind::what) {
      what_total += 1;
      what_zero += truth[static_cast<size_t>(s.image * 4 + s.cell)] == 0;
    }
  CHECK(blind.rule_reader_kinds.at("what").total == what_total);
  CHECK(blind.rule_reader_kinds.at("what").correct == what_zero);
  CHECK(blind.rule_reader.accuracy() < perfect.rule_reader.accuracy());
}

TEST_CASE("mosaic: the validation items are held out of the train split, and only they feed validation mosaics", "[mosaic]") {
  const FashionMnist train = load_fashion_mnist(Split::train);
  const FashionMnist training = training_items(train, 5000), held_out = validation_items(train, 5000);
  CHECK(training.size() == train.size() - 5000);
  CHECK(held_out.size() == 5000);
  CHECK(held_out.first == train.size() - 5000);
  Generator g1(1), g2(1);
  const MosaicSet pool = make_mosaics(training, 500, g1), validation = make_mosaics(held_out, 500, g2);
  for (int64_t s : pool.sources.to_vector<int64_t>()) CHECK(s < train.size() - 5000);
  const std::vector<int64_t> sources = validation.sources.to_vector<int64_t>(), classes = validation.classes.to_vector<int64_t>();
  const std::vector<int64_t> labels = train.labels.to_vector<int64_t>();
  for (size_t i = 0; i < sources.size(); ++i) {
    CHECK(sources[i] >= train.size() - 5000);
    CHECK(classes[i] == labels[static_cast<size_t>(sources[i])]);  // sources index the whole split
  }
  REQUIRE_THROWS_WITH(validation_items(train, 60000), Catch::Contains("data.validation_items"));
  REQUIRE_THROWS_WITH(training_items(load_fashion_mnist(Split::test), 100), Catch::Contains("test split"));
}

// ---- 4x4 mosaics: the task where detail matters -----------------------------------------

TEST_CASE("mosaic 4x4: sixteen cells hold their items at 112 pixels, four counters a mosaic, prefix-stable", "[data][mosaic]") {
  const FashionMnist data = fake_split(20);
  Generator gen(7);
  const MosaicSet set = make_mosaics(data, 30, gen, 4);
  CHECK(set.grid == 4);
  CHECK(set.images.shape() == Shape{30, 112, 112});
  CHECK(set.classes.shape() == Shape{30, 16});
  CHECK(set.size() == 30);
  CHECK(gen.offset() == static_cast<uint64_t>(30 * mosaic_counters(4)));
  CHECK(mosaic_counters(4) == 4);
  CHECK(mosaic_counters(2) == 1);
  const auto img = set.images.to_vector<float>();
  const auto src = set.sources.to_vector<int64_t>();
  for (int64_t m = 0; m < 30; ++m) {
    const auto cls = set.classes_of(m);
    REQUIRE(cls.size() == 16);
    for (int64_t q = 0; q < 16; ++q) {
      const int64_t item = src[16 * m + q];
      CHECK(cls[q] == item % 10);
      const float expect = (10 * item + 5) / 255.0f;
      const int64_t r0 = (q / 4) * 28, c0 = (q % 4) * 28;
      for (int64_t y : {r0, r0 + 27})
        for (int64_t x : {c0, c0 + 27}) CHECK(img[(m * 112 + y) * 112 + x] == expect);
    }
  }
  // The first k mosaics of a set of n are the set of k; the cells do not repeat the 2x2 draws.
  Generator small(7);
  const auto first = make_mosaics(data, 5, small, 4).sources.to_vector<int64_t>();
  CHECK(first == std::vector<int64_t>(src.begin(), src.begin() + 5 * 16));
  REQUIRE_THROWS_WITH(make_mosaics(data, 1, small, 3), Catch::Contains("mosaic grid 3"));
}

TEST_CASE("mosaic 4x4: cell names, captions and every question kind answer correctly", "[data][mosaic]") {
  CHECK(cell_names(4).size() == 16);
  CHECK(cell_names(4)[0] == "a1");
  CHECK(cell_names(4)[3] == "d1");
  CHECK(cell_names(4)[9] == "b3");
  CHECK(cell_names(4)[15] == "d4");
  CHECK(cell_names(2)[1] == "top right");
  CHECK(cell_phrase(2, 3) == "the bottom right");
  CHECK(cell_phrase(4, 9) == "b3");
  CHECK(number_word(16) == "sixteen");
  REQUIRE_THROWS_WITH(number_word(17), Catch::Contains("17"));
  std::vector<int64_t> row(16);
  for (size_t q = 0; q < 16; ++q) row[q] = static_cast<int64_t>(q % 10);
  const std::string text = caption(row);
  CHECK(text.rfind("a1: t-shirt, b1: trouser, c1: pullover, d1: dress, a2: coat,", 0) == 0);
  CHECK(text.size() > 100);
  CHECK(text.substr(text.size() - 10) == "d4: sandal");
  REQUIRE_THROWS_WITH(caption({0, 1, 2}), Catch::Contains("3 classes"));

  const FashionMnist data = fake_split(30);
  Generator gen(11);
  const MosaicSet set = make_mosaics(data, 300, gen, 4);
  const auto samples = instruction_samples(set, 2, gen);
  REQUIRE(samples.size() == 600);
  std::map<QuestionKind, int> kinds;
  std::set<int64_t> cells_asked;
  const auto& names = class_names();
  const auto& cells = cell_names(4);
  for (const Sample& s : samples) {
    kinds[s.kind]++;
    const auto cls = set.classes_of(s.image);
    auto count = [&](int64_t c) { int n = 0; for (int64_t k : cls) n += (k == c); return n; };
    if (s.kind == QuestionKind::what) {
      REQUIRE(s.cell >= 0);
      REQUIRE(s.cell < 16);
      cells_asked.insert(s.cell);
      CHECK(s.prompt == "what is at " + cells[s.cell] + "? <image>");
      CHECK(s.answer == names[cls[s.cell]]);
    } else if (s.kind == QuestionKind::where) {
      const auto at = std::find(cells.begin(), cells.end(), s.answer);
      REQUIRE(at != cells.end());
      const auto q = static_cast<size_t>(at - cells.begin());
      CHECK(s.prompt == "where is the " + names[cls[q]] + "? <image>");
      CHECK(count(cls[q]) == 1);
    } else if (s.kind == QuestionKind::count) {
      CHECK(s.answer == number_word(count(s.asked_class)));
    } else {
      REQUIRE(s.kind == QuestionKind::exists);
      CHECK(s.answer == (count(s.asked_class) > 0 ? "yes" : "no"));
    }
  }
  for (QuestionKind k : {QuestionKind::what, QuestionKind::where, QuestionKind::count, QuestionKind::exists})
    CHECK(kinds[k] > 60);
  CHECK(cells_asked.size() == 16);
  // A mosaic holding all ten classes has no absent one: "exists" can only ask a present class.
  MosaicSet every = set;
  every.classes = Tensor::from_vector(row, {1, 16});
  Generator egen(3);
  for (const Sample& s : instruction_samples(every, 40, egen, QuestionKind::exists)) CHECK(s.answer == "yes");
}

TEST_CASE("evaluation baselines of 4x4 mosaics: a perfect encoder's rules answer every kind", "[data][mosaic]") {
  const FashionMnist data = fake_split(100);
  Generator gen(11), qgen(12);
  const MosaicSet set = make_mosaics(data, 40, gen, 4);
  const std::vector<Sample> questions = instruction_samples(set, 8, qgen);
  const std::vector<int64_t> truth = set.classes.to_vector<int64_t>();
  std::vector<float> logits(truth.size() * 10, 0.0f);
  for (size_t i = 0; i < truth.size(); ++i) logits[i * 10 + static_cast<size_t>(truth[i])] = 1.0f;
  EvalReport perfect;
  score_baselines(perfect, questions, caption_samples(set), 4, truth,
                  Tensor::from_vector(logits, {static_cast<int64_t>(truth.size()), 10}));
  for (const char* kind : {"what", "where", "count", "exists", "caption"}) {
    INFO(kind);
    CHECK(perfect.rule_reader_kinds.at(kind).correct == perfect.rule_reader_kinds.at(kind).total);
  }
  CHECK(perfect.rule_reader.total == static_cast<int64_t>(questions.size()));
}

TEST_CASE("mosaic: image_first puts <image> before the same questions", "[data][mosaic]") {
  const FashionMnist data = fake_split(30);
  for (int64_t grid : {2, 4}) {
    INFO("grid " << grid);
    Generator g1(5), g2(5), q1(6), q2(6);
    const MosaicSet a = make_mosaics(data, 50, g1, grid), b = make_mosaics(data, 50, g2, grid);
    const auto last = instruction_samples(a, 3, q1), first = instruction_samples(b, 3, q2, std::nullopt, true);
    REQUIRE(last.size() == first.size());
    for (size_t i = 0; i < last.size(); ++i) {
      const std::string& p = last[i].prompt;
      CHECK(first[i].prompt == "<image> " + p.substr(0, p.size() - 8));
      CHECK(first[i].answer == last[i].answer);
      CHECK(first[i].kind == last[i].kind);
    }
  }
}
