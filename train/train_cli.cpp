#include "train/train_cli.h"

#include <cstdio>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/tokenizer.h"
#include "train/trainer.h"

namespace vlmc::cli {

TrainCommands::TrainCommands(CLI::App& app) {
  train_ = app.add_subcommand(
      "train", "Train the LLaVA pipeline on Fashion-MNIST mosaics: stage 0 (cached), stage 1, stage 2, evaluation");
  train_->add_option("--config", train_config_file_, "TOML file of settings (flags override it)")
      ->check(CLI::ExistingFile);
  train_->add_flag("--resume", resume_, "continue runs/<name> from its last checkpoint");
  train::register_train_config(train_schema_, train_config_);
  train_schema_.add_to_cli(*train_);

  eval_ = app.add_subcommand(
      "eval", "Exact-match answer accuracy of a checkpoint on held-out test mosaics, per question kind");
  eval_->add_option("--checkpoint", checkpoint_, "checkpoint directory (runs/<name>/checkpoints/...)")
      ->required()
      ->check(CLI::ExistingDirectory);
  eval_->add_option("--config", eval_config_file_,
                    "TOML file of settings over the checkpoint's own (eval.* keys, say)")
      ->check(CLI::ExistingFile);
  train::register_train_config(eval_schema_, eval_config_);
  eval_schema_.add_to_cli(*eval_);
}

bool TrainCommands::parsed() const { return train_->parsed() || eval_->parsed(); }

int TrainCommands::execute() {
  if (train_->parsed()) return run_train();
  return run_eval();
}

int TrainCommands::run_train() {
  if (!train_config_file_.empty()) train_schema_.load_toml_file(train_config_file_);
  train_schema_.apply_cli();
  train_config_.validate();
  train::TrainOptions options;
  options.resume = resume_;
  options.config_toml = train_schema_.to_toml();
  options.config_json = train_schema_.to_json();
  const train::EvalReport report = train::run_training(train_config_, options);
  std::fflush(stderr);
  train::print_report(report, stdout);
  return 0;
}

int TrainCommands::run_eval() {
  // The checkpoint's own settings first (model sizes, connector), then the file, then flags.
  const train::Checkpoint ckpt = train::load_checkpoint(checkpoint_);
  VLMC_CHECK(ckpt.state.contains("config"), checkpoint_, ": state.json has no \"config\"");
  eval_schema_.load_json(ckpt.state["config"], checkpoint_ + "/state.json");
  if (!eval_config_file_.empty()) eval_schema_.load_toml_file(eval_config_file_);
  eval_schema_.apply_cli();
  eval_config_.validate();
  const train::Tokenizer tokenizer;
  train::MosaicModels models = train::build_models(eval_config_, tokenizer);
  models.load_state_dict(ckpt.model);
  const train::EvalReport report = train::evaluate(models, eval_config_, tokenizer);
  train::print_report(report, stdout);
  return 0;
}

}  // namespace vlmc::cli
