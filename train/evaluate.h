// Evaluation of a fashion-mosaic model on held-out mosaics: exact-match
// answers per question kind, the frozen encoder's own per-quadrant accuracy
// on the same images, baselines, and the language model alone with the true
// classes in the image slots (the oracle). Two sets: the test split, scored
// once at the end of a run, and the validation mosaics of the train split's
// held-out items, scored during stages 1 and 2 (the curves, recipe choices).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/mosaic_models.h"

namespace vlmc::train {

struct KindScore {
  int64_t correct = 0, total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

// The mosaics and questions one evaluation scores, fixed by eval.seed alone
// (never by run.seed or run.train_seed).
struct EvalSet {
  std::string split;  // "test" or "validation"
  MosaicSet mosaics;
  std::vector<Sample> questions, captions;
};
// eval.mosaics mosaics of Fashion-MNIST's test split, eval.questions_per_image questions each.
EvalSet test_set(const TrainConfig& config);
// eval.validation_mosaics mosaics of the train split's held-out items
// (data.validation_items: `train` is the whole train split).
EvalSet validation_set(const TrainConfig& config, const FashionMnist& train);

// The accuracy (0..1) scores[kind] holds; 0 when the kind was not asked.
double accuracy_of(const std::map<std::string, KindScore>& scores, const std::string& kind);

struct EvalReport {
  std::string split = "test";
  int64_t mosaics = 0;
  KindScore encoder;                        // per-cell classification (G*G per mosaic)
  KindScore answers;                        // every question, exact match
  // The language model alone: the same questions with the true classes as
  // text in the image slots (stage 0's input), i.e. a perfect encoder and connector.
  KindScore oracle;
  std::map<std::string, KindScore> oracle_kinds;
  std::map<std::string, KindScore> kinds;   // "what", "where", "count", "exists", "caption"
  // Baselines on the same questions, per kind and over the four question kinds:
  //   rule_reader  answers computed from the frozen encoder's per-quadrant
  //                predictions (what: the predicted class there; where: the
  //                quadrant most likely to hold the class; count / exists: the
  //                quadrants predicted as it; caption: the four predictions):
  //                what the connector and language model could at best relay;
  //   majority     the most frequent answer of the kind in these questions,
  //                answered always: a text-only answer's ceiling.
  std::map<std::string, KindScore> rule_reader_kinds, majority_kinds;
  KindScore rule_reader, majority;
  nlohmann::json to_json() const;
};

// Greedy exact match without generating: the answer is produced exactly (then
// <eos>) iff the argmax at every answer position is the answer's next token,
// so one teacher-forced forward scores a whole batch.
// Without `with_oracle` the oracle's forwards are skipped (validation curves).
EvalReport evaluate(MosaicModels& models, const TrainConfig& config, const Tokenizer& tokenizer, const EvalSet& set,
                    bool with_oracle = true);
// The test set's evaluation.
EvalReport evaluate(MosaicModels& models, const TrainConfig& config, const Tokenizer& tokenizer);

// The validation record of metrics.jsonl: answer accuracy overall and per
// kind, the rule reader's beside it.
nlohmann::json validation_record(const EvalReport& report);

// Fills the report's rule_reader and majority baselines for these questions
// and captions of G x G mosaics from the encoder head's predicted classes
// [M * G*G] and logits [M * G*G, classes] (f32, CPU).
void score_baselines(EvalReport& report, const std::vector<Sample>& questions, const std::vector<Sample>& captions,
                     int64_t grid, const std::vector<int64_t>& predicted, const Tensor& logits);

// Prints the report: per-kind lines, then "answer accuracy: NN.N %" and
// "encoder accuracy: NN.N %".
void print_report(const EvalReport& report, std::FILE* out);

}  // namespace vlmc::train
