#include "train/experiment.h"

#include <cstdio>

#include "core/error.h"
#include "core/threads.h"
#include "modules/connector.h"

namespace vlmc::train {

const std::vector<std::string>& experiment_connectors() {
  return nn::connector_types();  // every registered connector, in the registry's order
}

std::vector<ConnectorRow> compare_connectors(const TrainConfig& config, const std::vector<std::string>& connectors,
                                             const TrainOptions& options) {
  VLMC_CHECK(!connectors.empty(), "experiment connectors: no connector to compare");
  std::vector<ConnectorRow> rows;
  for (const std::string& name : connectors) {
    TrainConfig c = config;
    c.connector = name;
    c.name = config.name + "-" + name;
    TrainOptions o = options;
    o.config_json["connector.type"] = name;
    o.config_json["run.name"] = c.name;
    std::fprintf(stderr, "== connector %s (run %s)\n", name.c_str(), c.name.c_str());
    rows.push_back({name, run_training(c, o)});
  }
  return rows;
}

std::string connector_table(const std::vector<ConnectorRow>& rows, const TrainConfig& config) {
  std::string out =
      "| connector | parameters | visual tokens | stage 1 + 2 time | tokens/s (stage 1 / 2) | answer accuracy | "
      "encoder accuracy |\n|---|---:|---:|---:|---:|---:|---:|\n";
  char line[512];
  for (const ConnectorRow& row : rows) {
    const TrainResult& r = row.result;
    const auto stage = [&](const char* name) {
      const auto it = r.stages.find(name);
      return it == r.stages.end() ? StageTiming{} : it->second;
    };
    const StageTiming s1 = stage("stage1"), s2 = stage("stage2");
    std::snprintf(line, sizeof(line), "| %s | %lld | %lld | %.0f s | %.0f / %.0f | %.1f %% | %.1f %% |\n",
                  row.connector.c_str(), static_cast<long long>(r.connector_parameters),
                  static_cast<long long>(r.visual_tokens), s1.seconds + s2.seconds, s1.tokens_per_s,
                  s2.tokens_per_s, 100.0 * r.eval.answers.accuracy(), 100.0 * r.eval.encoder.accuracy());
    out += line;
  }
  std::snprintf(line, sizeof(line),
                "\nStages 1 (%lld steps) and 2 (%lld steps) at batch %lld / %lld on %d CPU threads; "
                "%lld held-out test mosaics, %lld questions each.\n",
                static_cast<long long>(config.stage1.steps), static_cast<long long>(config.stage2.steps),
                static_cast<long long>(config.stage1.batch_size), static_cast<long long>(config.stage2.batch_size),
                num_threads(), static_cast<long long>(config.eval_mosaics),
                static_cast<long long>(config.eval_questions_per_image));
  out += line;
  return out;
}

}  // namespace vlmc::train
