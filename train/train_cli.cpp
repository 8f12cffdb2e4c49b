#include "train/train_cli.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "dist/process_group.h"
#include "train/checkpoint.h"
#include "train/experiment.h"
#include "train/llava_trainer.h"
#include "train/tokenizer.h"
#include "train/trainer.h"

namespace vlmc::cli {

TrainCommands::TrainCommands(CLI::App& app) {
  train_ = app.add_subcommand(
      "train",
      "Train the LLaVA pipeline: on Fashion-MNIST mosaics (stage 0 cached, stages 1 and 2, evaluation), or with "
      "data.format = llava on LLaVA's JSON and images over Hugging Face checkpoints (one of LLaVA-1.5's stages)");
  train_->add_option("--config", train_config_file_, "TOML file of settings (flags override it)")
      ->check(CLI::ExistingFile);
  train_->add_option("--resume", resume_from_,
                     "continue runs/<name> from its newest usable checkpoint (a corrupt or inconsistent one is "
                     "passed over, saying so), or from the checkpoint directory given")
      ->expected(0, 1);
  train_->add_option("--seeds", train_seeds_,
                     "training seeds (run.train_seed, run.train_seed + 1, ...; stage 0 shared), each its own run "
                     "<run.name>-seed<k>, then mean ± sd and a 95 % interval per question kind")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  train::register_train_config(train_schema_, train_config_);
  train_schema_.add_to_cli(*train_);

  eval_ = app.add_subcommand(
      "eval", "Exact-match answer accuracy of a checkpoint on held-out mosaics, per question kind");
  eval_->add_option("--split", eval_split_,
                    "test: eval.mosaics of the test split; validation: eval.validation_mosaics of the train split's "
                    "held-out items (choose recipes on this one)")
      ->capture_default_str()
      ->check(CLI::IsMember({"test", "validation"}));
  eval_->add_option("--checkpoint", checkpoint_, "checkpoint directory (runs/<name>/checkpoints/...)")
      ->required()
      ->check(CLI::ExistingDirectory);
  eval_->add_option("--config", eval_config_file_,
                    "TOML file of settings over the checkpoint's own (eval.* keys, say)")
      ->check(CLI::ExistingFile);
  train::register_train_config(eval_schema_, eval_config_);
  eval_schema_.add_to_cli(*eval_);

  CLI::App* experiment = app.add_subcommand("experiment", "Experiments made of several training runs");
  experiment->require_subcommand(1);
  experiment_ = experiment->add_subcommand(
      "connectors", "Stages 1 and 2 with each connector (stage 0 shared), then one table of parameters, visual "
                    "tokens, time, tokens/s and answer accuracy");
  experiment_->add_option("--config", experiment_config_file_, "TOML file of settings (flags override it)")
      ->check(CLI::ExistingFile);
  experiment_connectors_ = train::experiment_connectors();
  experiment_->add_option("--connectors", experiment_connectors_, "connectors to compare")
      ->capture_default_str()
      ->delimiter(',');
  experiment_->add_option("--seeds", experiment_seeds_,
                          "training seeds per connector (run.train_seed, run.train_seed + 1, ...; stage 0 shared): "
                          "with 2 or more, mean ± sd, a 95 % interval and Welch's test against mlp")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  experiment_out_ = "runs/connectors.md";
  experiment_->add_option("--out", experiment_out_, "Markdown file for the table")->capture_default_str();
  train::register_train_config(experiment_schema_, experiment_config_);
  experiment_schema_.add_to_cli(*experiment_);
}

bool TrainCommands::parsed() const { return train_->parsed() || eval_->parsed() || experiment_->parsed(); }

int TrainCommands::execute() {
  if (train_->parsed()) return run_train();
  if (experiment_->parsed()) return run_experiment();
  return run_eval();
}

int TrainCommands::run_experiment() {
  if (!experiment_config_file_.empty()) experiment_schema_.load_toml_file(experiment_config_file_);
  experiment_schema_.apply_cli();
  experiment_config_.validate();
  for (const std::string& name : experiment_connectors_) {
    train::TrainConfig probe = experiment_config_;
    probe.connector = name;
    probe.validate();  // every connector name is checked before the first run starts
  }
  train::TrainOptions options;
  options.config_toml = experiment_schema_.to_toml();
  options.config_json = experiment_schema_.to_json();
  VLMC_CHECK(dist::launch_info().world_size == 1,
             "vlmc experiment runs in one process; launch `vlmc train` with mpirun for data parallelism");
  const auto rows = train::compare_connectors(experiment_config_, experiment_connectors_, options, experiment_seeds_);
  train::write_connector_summaries(rows, experiment_config_, experiment_out_, "experiment connectors");
  return 0;
}

int TrainCommands::run_train() {
  if (!train_config_file_.empty()) train_schema_.load_toml_file(train_config_file_);
  train_schema_.apply_cli();
  train_config_.validate();
  train::TrainOptions options;
  options.resume = train_->count("--resume") > 0;
  options.resume_from = resume_from_;
  options.config_toml = train_schema_.to_toml();
  options.config_json = train_schema_.to_json();
  // One group for the life of the process (MPI starts once): a single process,
  // or every process mpirun started (docs/distributed.md).
  const dist::LaunchInfo launch = dist::launch_info();
  const std::unique_ptr<dist::ProcessGroup> group = dist::init_process_group(
      dist::rank_device(train_config_.device, launch), train_config_.collective_timeout_s);
  options.group = group.get();
  if (train_seeds_ > 1) {
    VLMC_CHECK(!train_config_.llava_data(), "--seeds: repeated runs are for the built-in mosaic job (data.format = "
               "mosaic); launch a data.format = llava run once per run.train_seed");
    VLMC_CHECK(group->world_size() == 1 && !options.resume, "--seeds runs in one process and starts new runs "
               "(no mpirun, no --resume)");
    const train::ConnectorRow row = train::run_seeds(train_config_, options, train_seeds_);
    // The runs are <name>-seed<k>; their summary is <name>-seeds.{md,json} beside them.
    train::write_connector_summaries({row}, train_config_,
                                     (std::filesystem::path(train_config_.runs_dir) / (train_config_.name + "-seeds.md")).string(),
                                     "train --seeds");
    return 0;
  }
  train::TrainResult result;
  try {
    result = train_config_.llava_data() ? train::run_llava_training(train_config_, options)
                                        : train::run_training(train_config_, options);
  } catch (const std::exception& e) {
    // An error on one process would leave the others waiting in a collective
    // until their timeout: end the whole job now, naming this process.
    if (group->world_size() > 1) group->abort(std::string("error: ") + e.what(), 1);
    throw;
  }
  if (group->rank() == 0) {
    std::fflush(stderr);
    if (!train_config_.llava_data()) {
      train::print_report(result.eval, stdout);
      train::print_validation(result.validation, stdout);
    }
  }
  return 0;
}

int TrainCommands::run_eval() {
  // The checkpoint's own settings first (model sizes, connector), then the file, then flags.
  const train::Checkpoint ckpt = train::load_checkpoint(checkpoint_);
  const std::string bad = train::nonfinite_in(ckpt);
  VLMC_CHECK(bad.empty(), checkpoint_, ": ", bad, " holds a NaN or an infinity: nothing to evaluate");
  VLMC_CHECK(ckpt.state.contains("config"), checkpoint_, ": state.json has no \"config\"");
  eval_schema_.load_json(ckpt.state["config"], checkpoint_ + "/state.json");
  if (!eval_config_file_.empty()) eval_schema_.load_toml_file(eval_config_file_);
  eval_schema_.apply_cli();
  eval_config_.validate();
  VLMC_CHECK(dist::launch_info().world_size == 1, "vlmc eval runs in one process, not under mpirun -np ",
             dist::launch_info().world_size);
  const train::Tokenizer tokenizer(eval_config_.mosaic_grid);
  train::MosaicModels models = train::build_models(eval_config_, tokenizer);
  models.to(Device::parse(eval_config_.device));  // run.device / --device, checked by validate()
  models.load_state_dict(ckpt.model);
  const train::EvalReport report =
      eval_split_ == "validation"
          ? train::evaluate(models, eval_config_, tokenizer,
                            train::validation_set(eval_config_,
                                                  train::load_fashion_mnist(train::Split::train, eval_config_.data_dir)))
          : train::evaluate(models, eval_config_, tokenizer);
  train::print_report(report, stdout);
  return 0;
}

}  // namespace vlmc::cli
