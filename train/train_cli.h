// `vlmc train`, `vlmc eval` and `vlmc experiment connectors`: the fashion-mosaic
// run from the command line.
// Every TrainConfig key is a flag ("--stage1.lr 1e-3"); --config reads a TOML
// file first, so the order of precedence is defaults < file < flags.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "train/config_schema.h"
#include "train/train_config.h"

namespace vlmc::cli {

class TrainCommands {
 public:
  explicit TrainCommands(CLI::App& app);
  TrainCommands(const TrainCommands&) = delete;
  TrainCommands& operator=(const TrainCommands&) = delete;

  bool parsed() const;
  int execute();  // runs whichever subcommand was given

 private:
  int run_train();
  int run_eval();
  int run_experiment();

  CLI::App* train_ = nullptr;
  CLI::App* eval_ = nullptr;
  CLI::App* experiment_ = nullptr;
  train::TrainConfig train_config_, eval_config_, experiment_config_;
  train::ConfigSchema train_schema_, eval_schema_, experiment_schema_;
  std::string train_config_file_, eval_config_file_, experiment_config_file_;
  std::vector<std::string> experiment_connectors_;
  std::string experiment_out_;
  int64_t experiment_seeds_ = 1;
  int64_t train_seeds_ = 1;
  std::string eval_split_ = "test";
  bool resume_ = false;
  std::string resume_from_;  // --resume PATH: that checkpoint, no fallback
  std::string checkpoint_;
};

}  // namespace vlmc::cli
