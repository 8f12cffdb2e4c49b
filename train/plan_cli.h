// `vlmc plan`: the memory a training step needs per process, estimated from
// the settings without allocating (train/memory_plan.h, docs/plan.md).
//   vlmc plan --config configs/fashion-mosaic.toml [--<key> VALUE ...]
//       every stage of a fashion-mosaic run (the trainer's own keys)
//   vlmc plan --preset llava-1.5-7b --stage 2 --batch 16 --seq 2048
//       [--zero-stage 1 --processes 8] [--gradient-checkpointing]
//       [--frozen-dtype bf16] [--memory 141GB]
//       one stage of a LLaVA of real size (or --model-config DIR|config.json)
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "train/config_schema.h"
#include "train/memory_plan.h"
#include "train/train_config.h"

namespace vlmc::cli {

struct LlavaPlanOptions {
  std::string preset;
  std::string model_config;
  train::LlavaPlanSettings settings;
  std::string frozen_dtype = "bf16";   // bf16 | f32
  std::string compute_dtype = "bf16";  // bf16 (autocast) | f32
  std::string target = "cuda";         // cuda | cpu: the attention form the engine picks there
};

// The plan of each stage as a table: every term in bytes and in decimal
// units, the peak, and whether it fits `memory` bytes (0: not said).
void print_plans(const std::vector<train::StagePlan>& plans, double memory, const std::string& memory_source,
                 std::FILE* out);

class PlanCommand {
 public:
  explicit PlanCommand(CLI::App& app);
  PlanCommand(const PlanCommand&) = delete;
  PlanCommand& operator=(const PlanCommand&) = delete;

  bool parsed() const { return plan_->parsed(); }
  int execute();

 private:
  CLI::App* plan_ = nullptr;
  std::string config_file_;
  train::TrainConfig config_;
  train::ConfigSchema schema_;
  LlavaPlanOptions llava_;
  std::string memory_;
  int64_t processes_ = 1;
  int64_t zero_stage_ = -1;  // -1: run.zero_stage of the config
};

}  // namespace vlmc::cli
