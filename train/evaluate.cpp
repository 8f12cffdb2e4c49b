#include "train/evaluate.h"

#include <algorithm>
#include <cstdio>

#include "core/autocast.h"
#include "core/error.h"
#include "core/ops.h"
#include "train/batches.h"

namespace vlmc::train {

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"mosaics", mosaics},
                      {"encoder_accuracy", encoder.accuracy()},
                      {"answer_accuracy", answers.accuracy()},
                      {"questions", answers.total},
                      {"language_oracle_accuracy", oracle.accuracy()}};
  for (const auto& [kind, score] : kinds) j["kinds"][kind] = {{"correct", score.correct}, {"total", score.total}};
  return j;
}

EvalReport evaluate(MosaicModels& models, const TrainConfig& c, const Tokenizer& tokenizer) {
  Generator eval_gen(seeds::derive(c.seed, seeds::kEval));
  const MosaicSet set = build_eval_mosaics(c.eval_mosaics, eval_gen, c.data_dir);
  Generator question_gen(seeds::derive(c.seed, seeds::kEvalQuestions));
  const std::vector<Sample> questions = instruction_samples(set, c.eval_questions_per_image, question_gen);
  const std::vector<Sample> captions = caption_samples(set);

  const bool was_training = models.llava->is_training();
  models.llava->eval();
  NoGradGuard no_grad;
  AutocastGuard autocast(c.precision == "bf16");  // evaluate as trained
  const Tensor features = features_of(models, set);  // [M, N, Dv]
  EvalReport report;
  report.mosaics = set.size();

  // The encoder's own answer: the quadrant head on the same features.
  {
    const std::vector<int64_t> predicted = argmax(quadrant_logits(*models.quadrant_head, features), 1).to_vector<int64_t>();
    const std::vector<int64_t> truth = set.classes.to_vector<int64_t>();
    for (size_t i = 0; i < truth.size(); ++i) report.encoder.correct += predicted[i] == truth[i];
    report.encoder.total = static_cast<int64_t>(truth.size());
  }

  // oracle: the language model reading the true classes as text in the image
  // slots (as in its stage-0 pre-training) instead of the connector's tokens:
  // what it would answer with a perfect encoder and connector.
  auto score = [&](const std::vector<Sample>& samples, bool oracle) {
    for (int64_t begin = 0; begin < static_cast<int64_t>(samples.size()); begin += c.eval_batch_size) {
      const std::vector<int64_t> rows = row_range(begin, std::min<int64_t>(samples.size(), begin + c.eval_batch_size));
      const TextBatch batch = make_text_batch(tokenizer, samples, rows);
      SpliceResult in;
      if (oracle) {
        in = text_slot_inputs(models, tokenizer, set, batch, patch_grid_side(c));
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
  score(questions, true);
  score(captions, true);
  models.llava->train(was_training);
  return report;
}

void print_report(const EvalReport& r, std::FILE* out) {
  std::fprintf(out, "evaluation on %lld held-out test mosaics (%lld questions):\n",
               static_cast<long long>(r.mosaics), static_cast<long long>(r.answers.total));
  std::fprintf(out, "  %-8s %21s %9s\n", "kind", "exact answers", "(oracle)");
  for (const auto& [kind, s] : r.kinds) {
    const auto oracle = r.oracle_kinds.find(kind);
    std::fprintf(out, "  %-8s %6lld / %-6lld %5.1f %%  (%5.1f %%)%s\n", kind.c_str(),
                 static_cast<long long>(s.correct), static_cast<long long>(s.total), 100.0 * s.accuracy(),
                 oracle == r.oracle_kinds.end() ? 0.0 : 100.0 * oracle->second.accuracy(),
                 kind == "caption" ? "  whole caption, not in the answer accuracy" : "");
  }
  std::fprintf(out, "language model alone (true classes as text in the image slots): %.1f %%\n",
               100.0 * r.oracle.accuracy());
  std::fprintf(out, "answer accuracy: %.1f %%\n", 100.0 * r.answers.accuracy());
  std::fprintf(out, "encoder accuracy: %.1f %%\n", 100.0 * r.encoder.accuracy());
}

}  // namespace vlmc::train
