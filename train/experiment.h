// `vlmc experiment connectors`: the seed's connector comparison (section
// 5.2.2's table) made on real data. Stage 0 is shared through the cache; each
// connector then gets its own stage 1 + stage 2 run and evaluation, and one
// Markdown table row: parameters, visual tokens per image, training time and
// throughput of stages 1 + 2, and the answer accuracy.
#pragma once

#include <string>
#include <vector>

#include "train/train_config.h"
#include "train/trainer.h"

namespace vlmc::train {

struct ConnectorRow {
  std::string connector;
  TrainResult result;
};

// The seed's six connectors.
const std::vector<std::string>& experiment_connectors();

// Runs `connectors` one after another, each as run "<config.name>-<connector>".
std::vector<ConnectorRow> compare_connectors(const TrainConfig& config, const std::vector<std::string>& connectors,
                                             const TrainOptions& options);

// The Markdown table (with a line saying how it was made).
std::string connector_table(const std::vector<ConnectorRow>& rows, const TrainConfig& config);

}  // namespace vlmc::train
