// The task's images and text: G x G mosaics of Fashion-MNIST items (28 G
// pixels a side) with stage-1 captions and stage-2 questions about them.
// G = 2 is the main job (four items, "quadrants"); G = 4 is the task where
// detail matters (sixteen items, more than a 2x2-pooled connector has tokens).
//
// Cells are numbered row-major: for G = 2, 0 top left, 1 top right, 2 bottom
// left, 3 bottom right; for G = 4, 0 "a1" (top left) ... 3 "d1" (top right),
// ..., 15 "d4" (bottom right), a chessboard's letters for columns and numbers
// for rows, one word each.
// Everything is a pure function of (Generator seed, offset): mosaic m and
// question j of it use Philox counters of their own, so a set is identical
// across runs, thread counts, and sizes (the first k mosaics of a set of n are
// the set of k). Train mosaics draw only from the train file, evaluation
// mosaics only from the test file.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "train/idx.h"

namespace vlmc::train {

inline int64_t mosaic_side(int64_t grid) { return grid * kFashionMnistSide; }

// One word each, so a word tokenizer sees one token per class.
const std::array<std::string, 10>& class_names();   // "t-shirt", ..., "ankle-boot"
const std::array<std::string, 10>& class_plurals(); // "t-shirts", ..., "ankle-boots"
const std::array<std::string, 4>& quadrant_names(); // "top left", ..., "bottom right"
// The grids the task has words for (cell names, counts): 2 and 4; any other
// is an error naming `what` and the grid.
void check_mosaic_grid(int64_t grid, const char* what);
// The names of a grid's cells, row-major: quadrant_names() for 2, "a1".."d4" for 4.
const std::vector<std::string>& cell_names(int64_t grid);
// Where a question points: "the top left" (2x2), "b3" (4x4).
std::string cell_phrase(int64_t grid, int64_t cell);
const std::string& number_word(int64_t n);          // 0..16 -> "zero".."sixteen"

struct MosaicSet {
  Split split = Split::train;
  int64_t grid = 2;  // G: items per side
  Tensor images;     // f32 [M, 28 G, 28 G], pixel / 255 in [0, 1] (not normalized)
  Tensor classes;    // i64 [M, G*G], class id per cell
  Tensor sources;    // i64 [M, G*G], index of each cell's item in the split
  int64_t cells() const { return grid * grid; }
  int64_t side() const { return mosaic_side(grid); }
  int64_t size() const { return classes.defined() ? classes.size(0) : 0; }
  std::vector<int64_t> classes_of(int64_t m) const;
};

// Philox counters one G x G mosaic takes: ceil(G*G / 4), four lanes each
// (one for the 2x2 main job).
inline int64_t mosaic_counters(int64_t grid) { return (grid * grid + 3) / 4; }

// count G x G mosaics from data (any split); reserves count * mosaic_counters(G)
// Philox counters of gen.
MosaicSet make_mosaics(const FashionMnist& data, int64_t count, Generator& gen, int64_t grid = 2);

// The train split's last kValidationItems items (data.validation_items) are
// held out: stage 0 and the training pool draw from training_items, the
// validation mosaics from validation_items, so nothing validated on is
// trained on. Both are views of `train` (`first` says where they start).
inline constexpr int64_t kValidationItems = 5000;
FashionMnist training_items(const FashionMnist& train, int64_t held_out = kValidationItems);
FashionMnist validation_items(const FashionMnist& train, int64_t held_out = kValidationItems);

// The same from the installed package: the train file's training items, or the test file.
MosaicSet build_train_mosaics(int64_t count, Generator& gen,
                              const std::string& dir = kFashionMnistDir, int64_t grid = 2);
MosaicSet build_eval_mosaics(int64_t count, Generator& gen,
                             const std::string& dir = kFashionMnistDir, int64_t grid = 2);

enum class QuestionKind { caption, what, where, count, exists };
inline constexpr int kQuestionKinds = 4;  // the stage-2 kinds: what, where, count, exists
const char* question_kind_name(QuestionKind kind);

// One training / evaluation example. The prompt holds one "<image>", where
// the visual tokens go; the loss and exact-match accuracy are on answer.
// Captions put the image first; questions put it after the question, one of
// the two layouts of LLaVA's instruction data ("<image>\n{q}" and
// "{q}\n<image>"). Read after the question, every visual token can check
// itself against it, and the answer gathers those checks: a small language
// model learns the four question kinds several times faster this way than
// with the image first (docs/training.md).
struct Sample {
  std::string prompt;
  std::string answer;
  int64_t image = 0;  // row of the MosaicSet
  QuestionKind kind = QuestionKind::caption;
  // What the question asks about, for readers that answer without the
  // language model (the evaluation's baselines): the cell of a "what",
  // the class of a "where", "count" or "exists"; -1 where it asks neither.
  int64_t cell = -1;  // a quadrant in the 2x2 main job
  int64_t asked_class = -1;
  std::string text() const { return prompt + " " + answer; }
};

// "top left: bag, top right: sneaker, bottom left: coat, bottom right: bag";
// "a1: bag, b1: coat, ..., d4: shirt" for 16 classes (4x4). The grid is the
// square root of the number of classes.
std::string caption(const std::vector<int64_t>& classes);

// Stage 1: one caption sample per mosaic, prompt "<image>", answer the caption.
std::vector<Sample> caption_samples(const MosaicSet& set);

// Stage 2: per_image questions per mosaic, reserving size() * per_image
// counters of gen. Kinds, uniformly drawn:
//   what   "what is at the bottom left? <image>"  -> "ankle-boot" (4x4: "what is at b3?")
//   where  "where is the bag? <image>"            -> "top right" (a class present
//          exactly once; a mosaic without one gets a "what" question instead)
//   count  "how many sneakers are there? <image>" -> "two" (3 in 4 ask about a
//          class present, 1 in 4 about any class, so "zero" occurs)
//   exists "is there a coat? <image>"             -> "yes" / "no" (half each; a
//          4x4 mosaic holding all ten classes can only be asked "yes")
// With `only`, every question is of that kind (a "where" on a mosaic without
// a class present once still becomes a "what").
// With image_first, every prompt is "<image> {question}" instead (LLaVA's
// other layout, "<image>\n{q}"; data.image_first): the same draws.
std::vector<Sample> instruction_samples(const MosaicSet& set, int64_t per_image, Generator& gen,
                                        std::optional<QuestionKind> only = std::nullopt, bool image_first = false);

}  // namespace vlmc::train
