// The task's images and text: 2x2 mosaics of four Fashion-MNIST items (56x56)
// with stage-1 captions and stage-2 questions about them.
//
// Quadrants are numbered 0 top left, 1 top right, 2 bottom left, 3 bottom right.
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

inline constexpr int64_t kMosaicSide = 2 * kFashionMnistSide;  // 56

// One word each, so a word tokenizer sees one token per class.
const std::array<std::string, 10>& class_names();   // "t-shirt", ..., "ankle-boot"
const std::array<std::string, 10>& class_plurals(); // "t-shirts", ..., "ankle-boots"
const std::array<std::string, 4>& quadrant_names(); // "top left", ..., "bottom right"
const std::string& number_word(int64_t n);          // 0..4 -> "zero".."four"

struct MosaicSet {
  Split split = Split::train;
  Tensor images;   // f32 [M, 56, 56], pixel / 255 in [0, 1] (not normalized)
  Tensor classes;  // i64 [M, 4], class id per quadrant
  Tensor sources;  // i64 [M, 4], index of each quadrant's item in the split
  int64_t size() const { return classes.numel() / 4; }
  std::array<int64_t, 4> classes_of(int64_t m) const;
};

// count mosaics from data (any split); reserves count Philox counters of gen.
MosaicSet make_mosaics(const FashionMnist& data, int64_t count, Generator& gen);

// The train split's last kValidationItems items (data.validation_items) are
// held out: stage 0 and the training pool draw from training_items, the
// validation mosaics from validation_items, so nothing validated on is
// trained on. Both are views of `train` (`first` says where they start).
inline constexpr int64_t kValidationItems = 5000;
FashionMnist training_items(const FashionMnist& train, int64_t held_out = kValidationItems);
FashionMnist validation_items(const FashionMnist& train, int64_t held_out = kValidationItems);

// The same from the installed package: the train file's training items, or the test file.
MosaicSet build_train_mosaics(int64_t count, Generator& gen,
                              const std::string& dir = kFashionMnistDir);
MosaicSet build_eval_mosaics(int64_t count, Generator& gen,
                             const std::string& dir = kFashionMnistDir);

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
  // language model (the evaluation's baselines): the quadrant of a "what",
  // the class of a "where", "count" or "exists"; -1 where it asks neither.
  int64_t quadrant = -1;
  int64_t asked_class = -1;
  std::string text() const { return prompt + " " + answer; }
};

// "top left: bag, top right: sneaker, bottom left: coat, bottom right: bag".
std::string caption(const std::array<int64_t, 4>& classes);

// Stage 1: one caption sample per mosaic, prompt "<image>", answer the caption.
std::vector<Sample> caption_samples(const MosaicSet& set);

// Stage 2: per_image questions per mosaic, reserving size() * per_image
// counters of gen. Kinds, uniformly drawn:
//   what   "what is at the bottom left? <image>"  -> "ankle-boot"
//   where  "where is the bag? <image>"            -> "top right" (a class present
//          exactly once; a mosaic without one gets a "what" question instead)
//   count  "how many sneakers are there? <image>" -> "two" (3 in 4 ask about a
//          class present, 1 in 4 about any class, so "zero" occurs)
//   exists "is there a coat? <image>"             -> "yes" / "no" (half each)
// With `only`, every question is of that kind (a "where" on a mosaic without
// a class present once still becomes a "what").
std::vector<Sample> instruction_samples(const MosaicSet& set, int64_t per_image, Generator& gen,
                                        std::optional<QuestionKind> only = std::nullopt);

}  // namespace vlmc::train
