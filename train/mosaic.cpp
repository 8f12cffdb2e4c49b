#include "train/mosaic.h"

#include "kernels/philox.h"

namespace vlmc::train {
namespace {

// An integer in [0, n) from 32 random bits (multiply-shift; the bias is below
// n / 2^32, irrelevant for n <= 60000).
int64_t below(uint32_t bits, int64_t n) {
  return static_cast<int64_t>((static_cast<uint64_t>(bits) * static_cast<uint64_t>(n)) >> 32);
}

int64_t occurrences(const std::vector<int64_t>& classes, int64_t c) {
  int64_t n = 0;
  for (int64_t k : classes) n += (k == c);
  return n;
}

}  // namespace

const std::array<std::string, 10>& class_names() {
  static const std::array<std::string, 10> names = {
      "t-shirt", "trouser", "pullover", "dress", "coat",
      "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};
  return names;
}

const std::array<std::string, 10>& class_plurals() {
  static const std::array<std::string, 10> names = {
      "t-shirts", "trousers", "pullovers", "dresses", "coats",
      "sandals",  "shirts",   "sneakers",  "bags",    "ankle-boots"};
  return names;
}

const std::array<std::string, 4>& quadrant_names() {
  static const std::array<std::string, 4> names = {"top left", "top right", "bottom left",
                                                   "bottom right"};
  return names;
}

void check_mosaic_grid(int64_t grid, const char* what) {
  VLMC_CHECK(grid == 2 || grid == 4, what, ": mosaic grid ", grid, " has no words (data.mosaic_grid is 2 or 4)");
}

const std::vector<std::string>& cell_names(int64_t grid) {
  check_mosaic_grid(grid, "cell_names");
  static const std::vector<std::string> quadrants(quadrant_names().begin(), quadrant_names().end());
  static const std::vector<std::string> chessboard = [] {
    std::vector<std::string> names;  // row-major: a1 b1 c1 d1, a2 ...
    for (char row = '1'; row <= '4'; ++row)
      for (char column = 'a'; column <= 'd'; ++column) names.push_back(std::string{column, row});
    return names;
  }();
  return grid == 2 ? quadrants : chessboard;
}

std::string cell_phrase(int64_t grid, int64_t cell) {
  const std::vector<std::string>& names = cell_names(grid);
  VLMC_CHECK(cell >= 0 && cell < grid * grid, "cell_phrase: cell ", cell, " outside a ", grid, "x", grid, " grid");
  return (grid == 2 ? "the " : "") + names[static_cast<size_t>(cell)];
}

const std::string& number_word(int64_t n) {
  static const std::array<std::string, 17> words = {"zero",  "one",    "two",      "three",    "four",    "five",
                                                    "six",   "seven",  "eight",    "nine",     "ten",     "eleven",
                                                    "twelve", "thirteen", "fourteen", "fifteen", "sixteen"};
  VLMC_CHECK(n >= 0 && n <= 16, "number_word: ", n, " is outside 0..16");
  return words[static_cast<size_t>(n)];
}

const char* question_kind_name(QuestionKind kind) {
  switch (kind) {
    case QuestionKind::caption: return "caption";
    case QuestionKind::what: return "what";
    case QuestionKind::where: return "where";
    case QuestionKind::count: return "count";
    case QuestionKind::exists: return "exists";
  }
  return "?";
}

std::vector<int64_t> MosaicSet::classes_of(int64_t m) const {
  VLMC_CHECK(m >= 0 && m < size(), "mosaic: index ", m, " outside a set of ", size());
  const int64_t* c = classes.data<int64_t>() + cells() * m;
  return {c, c + cells()};
}

MosaicSet make_mosaics(const FashionMnist& data, int64_t count, Generator& gen, int64_t grid) {
  check_mosaic_grid(grid, "mosaic");
  const int64_t n = data.size();
  VLMC_CHECK(count >= 0, "mosaic: count ", count, " is negative");
  VLMC_CHECK(n > 0, "mosaic: the ", split_name(data.split), " split is empty");
  VLMC_CHECK(data.images.dtype() == DType::u8 && data.images.dim() == 3 &&
                 data.images.size(1) == kFashionMnistSide && data.images.size(2) == kFashionMnistSide,
             "mosaic: images ", shape_str(data.images.shape()), " are not u8 [N, 28, 28]");
  const Tensor items = data.images.contiguous();
  const Tensor labels = data.labels.contiguous();
  const uint8_t* src = items.data<uint8_t>();
  const int64_t* lab = labels.data<int64_t>();

  const uint64_t seed = gen.seed();
  const int64_t calls = mosaic_counters(grid), cells = grid * grid;
  const uint64_t offset = gen.advance(static_cast<uint64_t>(count * calls));
  const int64_t s = kFashionMnistSide, side = mosaic_side(grid);
  std::vector<float> pixels(static_cast<size_t>(count * side * side));
  std::vector<int64_t> classes(static_cast<size_t>(count * cells)), sources(classes.size());
  // Each mosaic draws from Philox calls of its own and writes its own pixels, so
  // the threads split the mosaics without changing a bit (stage 0 makes 64 a step).
#pragma omp parallel for schedule(static) if (count * side * side > (int64_t(1) << 15))
  for (int64_t m = 0; m < count; ++m) {
    // Philox calls of their own per mosaic: lane q % 4 of call q / 4 picks cell q's item.
    kernels::Philox4 r{};
    for (int64_t q = 0; q < cells; ++q) {
      if (q % 4 == 0) r = kernels::philox4x32(seed, offset + static_cast<uint64_t>(m * calls + q / 4));
      const int64_t item = below(r.x[q % 4], n);
      sources[cells * m + q] = data.first + item;
      classes[cells * m + q] = lab[item];
      const int64_t row0 = (q / grid) * s, col0 = (q % grid) * s;
      for (int64_t y = 0; y < s; ++y)
        for (int64_t x = 0; x < s; ++x)
          pixels[(m * side + row0 + y) * side + col0 + x] = src[(item * s + y) * s + x] / 255.0f;
    }
  }
  MosaicSet set;
  set.split = data.split;
  set.grid = grid;
  set.images = Tensor::from_vector(pixels, {count, side, side});
  set.classes = Tensor::from_vector(classes, {count, cells});
  set.sources = Tensor::from_vector(sources, {count, cells});
  return set;
}

namespace {

FashionMnist items(const FashionMnist& data, int64_t begin, int64_t end) {
  FashionMnist part;
  part.split = data.split;
  part.images = data.images.narrow(0, begin, end - begin);
  part.labels = data.labels.narrow(0, begin, end - begin);
  part.first = data.first + begin;
  return part;
}

void check_held_out(const FashionMnist& train, int64_t held_out) {
  VLMC_CHECK(train.split == Split::train, "validation items: they are held out of the train split, not the ",
             split_name(train.split), " split");
  VLMC_CHECK(held_out >= 1 && held_out < train.size(), "data.validation_items ", held_out,
             " must leave items on both sides of the train split's ", train.size());
}

}  // namespace

FashionMnist training_items(const FashionMnist& train, int64_t held_out) {
  check_held_out(train, held_out);
  return items(train, 0, train.size() - held_out);
}

FashionMnist validation_items(const FashionMnist& train, int64_t held_out) {
  check_held_out(train, held_out);
  return items(train, train.size() - held_out, train.size());
}

MosaicSet build_train_mosaics(int64_t count, Generator& gen, const std::string& dir, int64_t grid) {
  return make_mosaics(training_items(load_fashion_mnist(Split::train, dir)), count, gen, grid);
}

MosaicSet build_eval_mosaics(int64_t count, Generator& gen, const std::string& dir, int64_t grid) {
  return make_mosaics(load_fashion_mnist(Split::test, dir), count, gen, grid);
}

std::string caption(const std::vector<int64_t>& classes) {
  const int64_t grid = classes.size() == 4 ? 2 : classes.size() == 16 ? 4 : 0;
  VLMC_CHECK(grid > 0, "caption: ", classes.size(), " classes are not a 2x2 or 4x4 mosaic");
  const std::vector<std::string>& names = cell_names(grid);
  std::string text;
  for (size_t q = 0; q < classes.size(); ++q) {
    VLMC_CHECK(classes[q] >= 0 && classes[q] < kFashionMnistClasses, "caption: class ",
               classes[q], " is not a class id");
    if (q > 0) text += ", ";
    text += names[q] + ": " + class_names()[static_cast<size_t>(classes[q])];
  }
  return text;
}

std::vector<Sample> caption_samples(const MosaicSet& set) {
  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(set.size()));
  for (int64_t m = 0; m < set.size(); ++m)
    samples.push_back({"<image>", caption(set.classes_of(m)), m, QuestionKind::caption});
  return samples;
}

std::vector<Sample> instruction_samples(const MosaicSet& set, int64_t per_image, Generator& gen,
                                        std::optional<QuestionKind> only, bool image_first) {
  VLMC_CHECK(per_image >= 0, "instruction_samples: per_image ", per_image, " is negative");
  VLMC_CHECK(!only || *only != QuestionKind::caption, "instruction_samples: captions are caption_samples()");
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.advance(static_cast<uint64_t>(set.size() * per_image));
  const auto& names = class_names();
  const auto& plurals = class_plurals();
  const auto& cells = cell_names(set.grid);
  const int64_t n = set.cells();
  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(set.size() * per_image));
  for (int64_t m = 0; m < set.size(); ++m) {
    const std::vector<int64_t> cls = set.classes_of(m);
    for (int64_t j = 0; j < per_image; ++j) {
      // Lane 0 picks the kind, lanes 1-3 the details.
      const kernels::Philox4 r =
          kernels::philox4x32(seed, offset + static_cast<uint64_t>(m * per_image + j));
      Sample s;
      s.image = m;
      std::string question;  // the prompt without its <image>
      s.kind = only ? *only : static_cast<QuestionKind>(1 + below(r.x[0], kQuestionKinds));
      if (s.kind == QuestionKind::where) {
        std::vector<int64_t> once;  // cells whose class occurs exactly once
        for (int64_t q = 0; q < n; ++q)
          if (occurrences(cls, cls[q]) == 1) once.push_back(q);
        if (once.empty()) {
          s.kind = QuestionKind::what;
        } else {
          const int64_t q = once[static_cast<size_t>(below(r.x[1], static_cast<int64_t>(once.size())))];
          question = "where is the " + names[cls[q]] + "?";
          s.answer = cells[static_cast<size_t>(q)];
          s.asked_class = cls[q];
        }
      }
      if (s.kind == QuestionKind::what) {
        const int64_t q = below(r.x[1], n);
        question = "what is at " + cell_phrase(set.grid, q) + "?";
        s.answer = names[cls[q]];
        s.cell = q;
        s.asked_class = -1;
      } else if (s.kind == QuestionKind::count) {
        const int64_t c = below(r.x[1], 4) < 3 ? cls[below(r.x[2], n)] : below(r.x[2], 10);
        question = "how many " + plurals[c] + " are there?";
        s.answer = number_word(occurrences(cls, c));
        s.asked_class = c;
      } else if (s.kind == QuestionKind::exists) {
        std::vector<int64_t> absent;  // at least six in a 2x2 mosaic; none in a 4x4 one with every class
        for (int64_t k = 0; k < kFashionMnistClasses; ++k)
          if (occurrences(cls, k) == 0) absent.push_back(k);
        const int64_t c = (r.x[1] & 1u) || absent.empty()
                              ? cls[below(r.x[2], n)]
                              : absent[static_cast<size_t>(below(r.x[2], static_cast<int64_t>(absent.size())))];
        const std::string& name = names[c];
        const char* article = (name[0] == 'a') ? "an " : "a ";
        question = "is there " + std::string(article) + name + "?";
        s.answer = occurrences(cls, c) > 0 ? "yes" : "no";
        s.asked_class = c;
      }
      s.prompt = image_first ? "<image> " + question : question + " <image>";
      samples.push_back(std::move(s));
    }
  }
  return samples;
}

}  // namespace vlmc::train
