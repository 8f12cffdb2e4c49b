#include "train/experiment.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/threads.h"
#include "modules/connector.h"
#include "train/stats.h"

namespace vlmc::train {
namespace fs = std::filesystem;

const std::vector<std::string>& experiment_connectors() {
  return nn::connector_types();  // every registered connector, in the registry's order
}

ConnectorRow run_seeds(const TrainConfig& config, const TrainOptions& options, int64_t seeds) {
  VLMC_CHECK(seeds >= 1, "--seeds must be >= 1, got ", seeds);
  ConnectorRow row{config.connector, {}};
  for (int64_t k = 0; k < seeds; ++k) {
    TrainConfig c = config;
    c.name = config.name + (seeds > 1 ? "-seed" + std::to_string(k) : "");
    c.train_seed = config.stages12_seed() + k;
    TrainOptions o = options;
    o.config_json["run.name"] = c.name;
    o.config_json["run.train_seed"] = c.train_seed;
    std::fprintf(stderr, "== %s, training seed %lld (run %s)\n", c.connector.c_str(),
                 static_cast<long long>(c.train_seed), c.name.c_str());
    row.runs.push_back(run_training(c, o));
  }
  return row;
}

std::vector<ConnectorRow> compare_connectors(const TrainConfig& config, const std::vector<std::string>& connectors,
                                             const TrainOptions& options, int64_t seeds) {
  VLMC_CHECK(!connectors.empty(), "experiment connectors: no connector to compare");
  std::vector<ConnectorRow> rows;
  for (const std::string& name : connectors) {
    TrainConfig c = config;
    c.connector = name;
    c.name = config.name + "-" + name;
    TrainOptions o = options;
    o.config_json["connector.type"] = name;
    rows.push_back(run_seeds(c, o, seeds));
  }
  return rows;
}

namespace {

std::vector<double> answers_of(const ConnectorRow& row) {
  std::vector<double> out;
  for (const TrainResult& r : row.runs) out.push_back(100.0 * r.eval.answers.accuracy());
  return out;
}

std::vector<double> kind_of(const ConnectorRow& row, const std::string& kind) {
  std::vector<double> out;
  for (const TrainResult& r : row.runs) out.push_back(100.0 * accuracy_of(r.eval.kinds, kind));
  return out;
}

// Stage 2's last validation answer accuracy per seed, in %; empty unless every seed validated.
std::vector<double> validations_of(const ConnectorRow& row) {
  std::vector<double> out;
  for (const TrainResult& r : row.runs) {
    const auto it = r.validation.find("stage2");
    if (it == r.validation.end()) return {};
    out.push_back(100.0 * it->second.last);
  }
  return out;
}

// Their mean, -1 when not validated.
double mean_validation(const ConnectorRow& row) {
  const std::vector<double> v = validations_of(row);
  return v.empty() ? -1 : summarize(v).mean;
}

// Stage 2's end against stage 1's end: the whole-caption accuracy forgotten, in points (mean over seeds).
double mean_caption_forgetting(const ConnectorRow& row) {
  double sum = 0;
  for (const TrainResult& r : row.runs) {
    const auto s1 = r.validation.find("stage1"), s2 = r.validation.find("stage2");
    if (s1 == r.validation.end() || s2 == r.validation.end()) return NAN;
    sum += 100.0 * (s1->second.last_caption - s2->second.last_caption);
  }
  return sum / static_cast<double>(row.runs.size());
}

StageTiming stage_of(const TrainResult& r, const char* name) {
  const auto it = r.stages.find(name);
  return it == r.stages.end() ? StageTiming{} : it->second;
}

// The row the others are tested against: LLaVA-1.5's mlp when compared, else the first.
const ConnectorRow& reference_row(const std::vector<ConnectorRow>& rows) {
  for (const ConnectorRow& row : rows)
    if (row.connector == "mlp") return row;
  return rows.front();
}

}  // namespace

std::string connector_table(const std::vector<ConnectorRow>& rows, const TrainConfig& config) {
  VLMC_CHECK(!rows.empty() && !rows.front().runs.empty(), "connector_table: no runs");
  const size_t seeds = rows.front().runs.size();
  const ConnectorRow& reference = reference_row(rows);
  std::string out;
  char line[1024];
  if (seeds == 1) {
    out = "| connector | parameters | visual tokens | stage 1 + 2 time | tokens/s (stage 1 / 2) | validation | "
          "answer accuracy | rule reader | encoder accuracy | captions forgotten |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  } else {
    out = "| connector | parameters | visual tokens | stage 1 + 2 time (mean) | validation (mean) | "
          "answer accuracy, mean ± sd | 95 % interval | vs " + reference.connector + " | rule reader | "
          "encoder accuracy | captions forgotten (mean) |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
  }
  for (const ConnectorRow& row : rows) {
    const TrainResult& first = row.runs.front();
    double seconds = 0, s1_tps = 0, s2_tps = 0;
    for (const TrainResult& r : row.runs) {
      const StageTiming s1 = stage_of(r, "stage1"), s2 = stage_of(r, "stage2");
      seconds += (s1.seconds + s2.seconds) / static_cast<double>(row.runs.size());
      s1_tps += s1.tokens_per_s / static_cast<double>(row.runs.size());
      s2_tps += s2.tokens_per_s / static_cast<double>(row.runs.size());
    }
    // The rule reader and the encoder come from stage 0, the same for every seed.
    const double reader = 100.0 * first.eval.rule_reader.accuracy(), encoder = 100.0 * first.eval.encoder.accuracy();
    if (seeds == 1) {
      std::snprintf(line, sizeof(line),
                    "| %s | %lld | %lld | %.0f s | %.0f / %.0f | %.1f %% | %.1f %% | %.1f %% | %.1f %% | %.1f |\n",
                    row.connector.c_str(), static_cast<long long>(first.connector_parameters),
                    static_cast<long long>(first.visual_tokens), seconds, s1_tps, s2_tps, mean_validation(row),
                    100.0 * first.eval.answers.accuracy(), reader, encoder, mean_caption_forgetting(row));
    } else {
      const SeedSummary s = summarize(answers_of(row));
      std::string versus = "-";
      if (&row != &reference) {
        const WelchTest w = welch_test(answers_of(row), answers_of(reference));
        char buf[96];
        std::snprintf(buf, sizeof(buf), "%+.1f (%s)", w.difference,
                      !w.testable ? "not testable" : w.significant ? "significant" : "not significant");
        versus = buf;
      }
      std::snprintf(line, sizeof(line),
                    "| %s | %lld | %lld | %.0f s | %.1f %% | %.1f ± %.1f %% | %.1f – %.1f %% | %s | %.1f %% | %.1f %% | "
                    "%.1f |\n",
                    row.connector.c_str(), static_cast<long long>(first.connector_parameters),
                    static_cast<long long>(first.visual_tokens), seconds, mean_validation(row), s.mean, s.sd,
                    s.mean - s.half_width, s.mean + s.half_width, versus.c_str(), reader, encoder,
                    mean_caption_forgetting(row));
    }
    out += line;
  }
  std::snprintf(line, sizeof(line),
                "\nStages 1 (%lld steps) and 2 (%lld steps) at batch %lld / %lld on %d CPU threads (%s); "
                "%lld held-out test mosaics (eval.seed %lld), %lld questions each, scored once at the end. "
                "Validation: the answer accuracy on %lld mosaics of the train split's %lld held-out items at the end "
                "of stage 2. Captions forgotten: whole-caption validation accuracy at the end of stage 1 minus at "
                "the end of stage 2, in points. The rule reader answers every question from the frozen encoder's "
                "per-cell predictions.\n",
                static_cast<long long>(config.stage1.steps), static_cast<long long>(config.stage2.steps),
                static_cast<long long>(config.stage1.batch_size), static_cast<long long>(config.stage2.batch_size),
                num_threads(), cpu_model_name().c_str(), static_cast<long long>(config.eval_mosaics),
                static_cast<long long>(config.eval_seed), static_cast<long long>(config.eval_questions_per_image),
                static_cast<long long>(config.eval_validation_mosaics),
                static_cast<long long>(config.validation_items));
  out += line;
  if (seeds == 1) return out;

  std::snprintf(line, sizeof(line),
                "%zu training seeds per connector (run.train_seed %lld to %lld: the connector's initial weights and "
                "stages 1-2's batch order), stage 0 and the data shared. Interval: mean ± t(0.975, n-1)·sd/√n; "
                "\"vs %s\": Welch's two-sided t-test at the 5 %% level.\n",
                seeds, static_cast<long long>(config.stages12_seed()),
                static_cast<long long>(config.stages12_seed() + static_cast<int64_t>(seeds) - 1),
                reference.connector.c_str());
  out += line;
  // Per question kind: mean and the 95 % interval's half-width.
  const std::vector<std::string> kinds = {"what", "where", "count", "exists", "caption"};
  out += "\n| connector |";
  for (const std::string& k : kinds) out += " " + k + " |";
  out += "\n|---|";
  for (size_t i = 0; i < kinds.size(); ++i) out += "---:|";
  out += "\n";
  for (const ConnectorRow& row : rows) {
    out += "| " + row.connector + " |";
    for (const std::string& k : kinds) {
      const SeedSummary s = summarize(kind_of(row, k));
      std::snprintf(line, sizeof(line), " %.1f ± %.1f |", s.mean, s.half_width);
      out += line;
    }
    out += "\n";
  }
  std::string readers = "| rule reader |";
  for (const std::string& k : kinds) {
    std::snprintf(line, sizeof(line), " %.1f |", 100.0 * accuracy_of(rows.front().runs.front().eval.rule_reader_kinds, k));
    readers += line;
  }
  out += readers + "\n\nPer kind: mean ± the 95 % interval's half-width over the seeds, in %.\n";
  return out;
}

namespace {

nlohmann::json summary_json(const std::vector<double>& values) {
  const SeedSummary s = summarize(values);
  nlohmann::json j = {{"values", values}, {"mean", s.mean}, {"sd", s.sd}};
  if (s.n >= 2) j["interval_95"] = {s.mean - s.half_width, s.mean + s.half_width};
  return j;
}

}  // namespace

nlohmann::json connector_summary_json(const std::vector<ConnectorRow>& rows, const TrainConfig& config) {
  VLMC_CHECK(!rows.empty() && !rows.front().runs.empty(), "connector_summary_json: no runs");
  const ConnectorRow& reference = reference_row(rows);
  nlohmann::json out = {{"cpu_model", cpu_model_name()},
                        {"threads", num_threads()},
                        {"seeds", rows.front().runs.size()},
                        {"first_train_seed", config.stages12_seed()},
                        {"eval_seed", config.eval_seed},
                        {"mosaic_grid", config.mosaic_grid},
                        {"test_mosaics", config.eval_mosaics},
                        {"validation_mosaics", config.eval_validation_mosaics},
                        {"reference", reference.connector},
                        {"accuracies_in", "percent"}};
  for (const ConnectorRow& row : rows) {
    const TrainResult& first = row.runs.front();
    nlohmann::json c = {{"parameters", first.connector_parameters},
                        {"visual_tokens", first.visual_tokens},
                        {"answer_accuracy", summary_json(answers_of(row))},
                        {"rule_reader_accuracy", 100.0 * first.eval.rule_reader.accuracy()},
                        {"encoder_accuracy", 100.0 * first.eval.encoder.accuracy()}};
    if (&row != &reference) {
      const WelchTest w = welch_test(answers_of(row), answers_of(reference));
      c["vs_reference"] = {{"difference", w.difference}, {"t", w.t}, {"df", w.df},
                           {"significant", w.significant}, {"testable", w.testable}};
    }
    for (const auto& [kind, score] : first.eval.kinds) c["kinds"][kind] = summary_json(kind_of(row, kind));
    const std::vector<double> validation = validations_of(row);
    if (!validation.empty()) c["validation_answer_accuracy"] = summary_json(validation);
    out["connectors"][row.connector] = std::move(c);
  }
  return out;
}

void write_connector_summaries(const std::vector<ConnectorRow>& rows, const TrainConfig& config,
                               const std::string& markdown_path, const char* who) {
  const std::string table = connector_table(rows, config);
  fs::path path(markdown_path);
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  io::write_file_atomically(markdown_path, table, who);
  const std::string json_path = path.replace_extension(".json").string();
  io::write_file_atomically(json_path, connector_summary_json(rows, config).dump(2) + "\n", who);
  std::printf("%s\nwritten to %s and %s\n", table.c_str(), markdown_path.c_str(), json_path.c_str());
}

}  // namespace vlmc::train
