#include "train/evaluate.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <string>

#include "core/autocast.h"
#include "core/error.h"
#include "core/ops.h"
#include "train/batches.h"

namespace vlmc::train {

double accuracy_of(const std::map<std::string, KindScore>& scores, const std::string& kind) {
  const auto it = scores.find(kind);
  return it == scores.end() ? 0.0 : it->second.accuracy();
}

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"split", split},
                      {"mosaics", mosaics},
                      {"encoder_accuracy", encoder.accuracy()},
                      {"answer_accuracy", answers.accuracy()},
                      {"questions", answers.total},
                      {"language_oracle_accuracy", oracle.accuracy()}};
  j["rule_reader_accuracy"] = rule_reader.accuracy();
  j["majority_accuracy"] = majority.accuracy();
  for (const auto& [kind, score] : kinds) {
    j["kinds"][kind] = {{"correct", score.correct}, {"total", score.total}};
    j["kinds"][kind]["rule_reader_accuracy"] = accuracy_of(rule_reader_kinds, kind);
    j["kinds"][kind]["majority_accuracy"] = accuracy_of(majority_kinds, kind);
    j["kinds"][kind]["language_oracle_accuracy"] = accuracy_of(oracle_kinds, kind);
  }
  return j;
}

namespace {

// The rule reader's answer to s from the encoder head's predictions:
// predicted [M * 4] classes, logits [M * 4, classes] (for "where").
std::string rule_answer(const Sample& s, int64_t grid, const std::vector<int64_t>& predicted, const Tensor& logits) {
  const int64_t cells = grid * grid, first = s.image * cells;
  const std::vector<int64_t> cls(predicted.begin() + first, predicted.begin() + first + cells);
  const int64_t present = std::count(cls.begin(), cls.end(), s.asked_class);
  switch (s.kind) {
    case QuestionKind::caption: return caption(cls);
    case QuestionKind::what: return class_names()[static_cast<size_t>(cls[static_cast<size_t>(s.cell)])];
    case QuestionKind::count: return number_word(present);
    case QuestionKind::exists: return present > 0 ? "yes" : "no";
    case QuestionKind::where: {
      const float* row = logits.data<float>();
      const int64_t classes = logits.size(1);
      int64_t best = 0;
      for (int64_t q = 1; q < cells; ++q)
        if (row[(first + q) * classes + s.asked_class] > row[(first + best) * classes + s.asked_class]) best = q;
      return cell_names(grid)[static_cast<size_t>(best)];
    }
  }
  return "";
}

}  // namespace

void score_baselines(EvalReport& report, const std::vector<Sample>& questions, const std::vector<Sample>& captions,
                     int64_t grid, const std::vector<int64_t>& predicted, const Tensor& logits) {
  std::map<std::string, std::map<std::string, int64_t>> answers;  // kind -> answer -> count
  for (const std::vector<Sample>* samples : {&questions, &captions}) {
    for (const Sample& s : *samples) {
      const std::string kind = question_kind_name(s.kind);
      const bool right = rule_answer(s, grid, predicted, logits) == s.answer;
      report.rule_reader_kinds[kind].correct += right;
      report.rule_reader_kinds[kind].total += 1;
      ++answers[kind][s.answer];
      if (s.kind == QuestionKind::caption) continue;
      report.rule_reader.correct += right;
      report.rule_reader.total += 1;
    }
  }
  for (const auto& [kind, counts] : answers) {
    KindScore& score = report.majority_kinds[kind];
    for (const auto& [answer, n] : counts) {
      score.correct = std::max(score.correct, n);
      score.total += n;
    }
    if (kind == "caption") continue;
    report.majority.correct += score.correct;
    report.majority.total += score.total;
  }
}

namespace {

// `count` mosaics of `items` and their questions, drawn from eval.seed's
// streams `mosaic_use` and `question_use` (seeds::).
EvalSet draw_eval_set(const char* split, const FashionMnist& items, int64_t count, const TrainConfig& c,
                      uint64_t mosaic_use, uint64_t question_use) {
  EvalSet out;
  out.split = split;
  Generator mosaic_gen(seeds::derive(c.eval_seed, mosaic_use));
  out.mosaics = make_mosaics(items, count, mosaic_gen, c.mosaic_grid);
  Generator question_gen(seeds::derive(c.eval_seed, question_use));
  out.questions = instruction_samples(out.mosaics, c.eval_questions_per_image, question_gen, std::nullopt, c.image_first);
  out.captions = caption_samples(out.mosaics);
  return out;
}

}  // namespace

EvalSet test_set(const TrainConfig& c) {
  return draw_eval_set("test", load_fashion_mnist(Split::test, c.data_dir), c.eval_mosaics, c, seeds::kEval,
                       seeds::kEvalQuestions);
}

EvalSet validation_set(const TrainConfig& c, const FashionMnist& train) {
  return draw_eval_set("validation", validation_items(train, c.validation_items), c.eval_validation_mosaics, c,
                       seeds::kValidation, seeds::kValidationQuestions);
}

nlohmann::json validation_record(const EvalReport& r) {
  nlohmann::json j = {{"answer_accuracy", r.answers.accuracy()}, {"rule_reader_accuracy", r.rule_reader.accuracy()}};
  for (const auto& [kind, score] : r.kinds) j["kinds"][kind] = score.accuracy();
  return j;
}

EvalReport evaluate(MosaicModels& models, const TrainConfig& c, const Tokenizer& tokenizer) {
  return evaluate(models, c, tokenizer, test_set(c));
}

EvalReport evaluate(MosaicModels& models, const TrainConfig& c, const Tokenizer& tokenizer, const EvalSet& eval_set,
                    bool with_oracle) {
  const MosaicSet& set = eval_set.mosaics;
  const std::vector<Sample>& questions = eval_set.questions;
  const std::vector<Sample>& captions = eval_set.captions;

  const bool was_training = models.llava->is_training();
  models.llava->eval();
  NoGradGuard no_grad;
  AutocastGuard autocast(c.precision == "bf16");  // evaluate as trained
  const Tensor features = features_of(models, set);  // [M, N, Dv]
  EvalReport report;
  report.split = eval_set.split;
  report.mosaics = set.size();

  // The encoder's own answer: the per-cell head on the same features.
  const Tensor head_logits = cell_logits(*models.quadrant_head, features, set.grid);  // [M * G*G, classes]
  const std::vector<int64_t> predicted = argmax(head_logits, 1).to_vector<int64_t>();
  {
    const std::vector<int64_t> truth = set.classes.to_vector<int64_t>();
    for (size_t i = 0; i < truth.size(); ++i) report.encoder.correct += predicted[i] == truth[i];
    report.encoder.total = static_cast<int64_t>(truth.size());
  }
  score_baselines(report, questions, captions, set.grid, predicted, head_logits.to(Device::cpu(), DType::f32));

  // oracle: the language model reading the true classes as text in the image
  // slots (as in its stage-0 pre-training) instead of the connector's tokens:
  // what it would answer with a perfect encoder and connector.
  auto score = [&](const std::vector<Sample>& samples, bool oracle) {
    for (int64_t begin = 0; begin < static_cast<int64_t>(samples.size()); begin += c.eval_batch_size) {
      const std::vector<int64_t> rows = row_range(begin, std::min<int64_t>(samples.size(), begin + c.eval_batch_size));
      const TextBatch batch = make_text_batch(tokenizer, samples, rows);
      SpliceResult in;
      if (oracle) {
        in = text_slot_inputs(models, tokenizer, set, batch, c.patch_grid());  // one slot per patch
      } else {
        const Tensor index =
            Tensor::from_vector(batch.images, {static_cast<int64_t>(batch.images.size())}).to(models.device);
        in = models.llava->prepare_inputs_from_features(batch.input_ids, index_select(features, 0, index),
                                                        batch.labels, batch.text_mask);
      }
      const Tensor logits = models.language->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
      const std::vector<int64_t> predicted = argmax(logits, 2).to_vector<int64_t>();  // [B, L]
      const std::vector<int64_t> labels = in.labels.to_vector<int64_t>();
      const int64_t L = logits.size(1);
      for (size_t b = 0; b < rows.size(); ++b) {
        bool exact = true;
        for (int64_t t = 0; t + 1 < L; ++t) {
          const int64_t target = labels[b * L + t + 1];
          if (target != -100 && predicted[b * L + t] != target) exact = false;
        }
        const Sample& s = samples[static_cast<size_t>(rows[b])];
        if (oracle) {
          KindScore& kind = report.oracle_kinds[question_kind_name(s.kind)];
          kind.correct += exact;
          kind.total += 1;
          if (s.kind == QuestionKind::caption) continue;
          report.oracle.correct += exact;
          report.oracle.total += 1;
          continue;
        }
        KindScore& kind = report.kinds[question_kind_name(s.kind)];
        kind.correct += exact;
        kind.total += 1;
        if (s.kind != QuestionKind::caption) {
          report.answers.correct += exact;
          report.answers.total += 1;
        }
      }
    }
  };
  score(questions, false);
  score(captions, false);
  if (with_oracle) {
    score(questions, true);
    score(captions, true);
  }
  models.llava->train(was_training);
  return report;
}

void print_report(const EvalReport& r, std::FILE* out) {
  std::fprintf(out, "evaluation on %lld held-out %s mosaics (%lld questions):\n", static_cast<long long>(r.mosaics),
               r.split.c_str(), static_cast<long long>(r.answers.total));
  // Each kind's answers beside its baselines: the rule reader (the encoder's
  // predictions read by rules) is what the answers are judged against.
  std::fprintf(out, "  %-8s %21s %12s %10s %10s %10s\n", "kind", "exact answers", "rule reader", "vs reader",
               "majority", "LM oracle");
  for (const auto& [kind, s] : r.kinds) {
    const double reader = 100.0 * accuracy_of(r.rule_reader_kinds, kind);
    std::fprintf(out, "  %-8s %6lld / %-6lld %5.1f %%  %9.1f %%  %+8.1f  %8.1f %%  %8.1f %%%s\n", kind.c_str(),
                 static_cast<long long>(s.correct), static_cast<long long>(s.total), 100.0 * s.accuracy(), reader,
                 100.0 * s.accuracy() - reader, 100.0 * accuracy_of(r.majority_kinds, kind),
                 100.0 * accuracy_of(r.oracle_kinds, kind),
                 kind == "caption" ? "  whole caption, not in the answer accuracy" : "");
  }
  std::fprintf(out, "language model alone (true classes as text in the image slots): %.1f %%\n",
               100.0 * r.oracle.accuracy());
  std::fprintf(out, "rule reader of the encoder's predictions: %.1f %%; majority answer per kind: %.1f %%\n",
               100.0 * r.rule_reader.accuracy(), 100.0 * r.majority.accuracy());
  std::fprintf(out, "answer accuracy: %.1f %%\n", 100.0 * r.answers.accuracy());
  std::fprintf(out, "encoder accuracy: %.1f %%\n", 100.0 * r.encoder.accuracy());
}

}  // namespace vlmc::train
