// `vlmc experiment connectors`: the seed's connector comparison (section
// 5.2.2's table) made on real data. Stage 0 is shared through the cache; each
// connector then gets its own stage 1 + stage 2 run and evaluation per
// training seed, and one Markdown table row: parameters, visual tokens per
// image, training time and throughput of stages 1 + 2, the answer accuracy
// (over several seeds: mean ± standard deviation, a 95 % interval, and
// whether it differs significantly from LLaVA-1.5's mlp), and the rule
// reader's accuracy, the bar the answers are judged against.
#pragma once

#include <string>
#include <vector>

#include "train/train_config.h"
#include "train/trainer.h"

namespace vlmc::train {

struct ConnectorRow {
  std::string connector;
  std::vector<TrainResult> runs;  // one per training seed, in seed order
};

// Every registered connector.
const std::vector<std::string>& experiment_connectors();

// Runs config's recipe once per training seed as run "<config.name>-seed<k>"
// (run.train_seed = the stages-1-2 seed + k, k < seeds; seeds = 1: one run
// named config.name). Stage 0 is shared through the cache (`vlmc train --seeds N`).
ConnectorRow run_seeds(const TrainConfig& config, const TrainOptions& options, int64_t seeds);

// Runs `connectors` one after another, each as run "<config.name>-<connector>"
// (with seeds > 1: "...-seed<k>", run.train_seed = the stages-1-2 seed + k,
// k < seeds). Stage 0 depends on none of them, so it is trained once (or
// loaded from the cache) and shared by every connector and seed.
std::vector<ConnectorRow> compare_connectors(const TrainConfig& config, const std::vector<std::string>& connectors,
                                             const TrainOptions& options, int64_t seeds = 1);

// The Markdown tables (with lines saying how they were made): one row per
// connector, and with several seeds a second table of the accuracy per
// question kind.
std::string connector_table(const std::vector<ConnectorRow>& rows, const TrainConfig& config);

// The same as JSON, for scripts: per connector its runs, the answer accuracy
// per seed with mean, sd and the 95 % interval, per kind likewise, Welch's
// test against the reference row (mlp when present), validation, the rule
// reader and encoder, and how the runs ran (CPU model, threads, seeds).
nlohmann::json connector_summary_json(const std::vector<ConnectorRow>& rows, const TrainConfig& config);

// Writes connector_table to `markdown_path` and connector_summary_json beside
// it (the same name with .json), each atomically, creating the folder; prints
// the table and both paths to stdout. `who` names the command in errors.
void write_connector_summaries(const std::vector<ConnectorRow>& rows, const TrainConfig& config,
                               const std::string& markdown_path, const char* who);

}  // namespace vlmc::train
