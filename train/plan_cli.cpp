#include "train/plan_cli.h"

#include <algorithm>

#include "core/error.h"
#include "train/cli_checks.h"

namespace vlmc::cli {

void print_plans(const std::vector<train::StagePlan>& plans, double memory, const std::string& memory_source,
                 std::FILE* out) {
  std::fprintf(out,
               "Estimated memory per process (an estimate from the settings: nothing is allocated or measured; "
               "docs/plan.md)\n");
  for (const train::StagePlan& p : plans) {
    std::fprintf(out, "\n%s: %s %lld -> %lld per process", p.stage.c_str(), p.batch_key.c_str(),
                 static_cast<long long>(p.batch_value), static_cast<long long>(p.micro_batch));
    if (p.length > 0) std::fprintf(out, ", %lld positions", static_cast<long long>(p.length));
    std::fprintf(out, ", %.4g trained parameters\n", p.trained_parameters);
    std::fprintf(out, "  %-11s %20s %10s  %s\n", "term", "bytes", "", "what");
    for (const char* category : {"weights", "gradients", "optimizer", "activations", "backward", "data", "transient"})
      for (const train::MemoryTerm& t : p.terms)
        if (t.category == category)
          std::fprintf(out, "  %-11s %20.0f %10s  %s\n", category, t.bytes, train::format_bytes(t.bytes).c_str(),
                       t.name.c_str());
    std::string totals;
    for (const char* category : {"weights", "gradients", "optimizer", "activations", "backward", "data", "transient"})
      if (p.sum(category) > 0)
        totals += str(totals.empty() ? "" : ", ", category, " ", train::format_bytes(p.sum(category)));
    std::fprintf(out, "  sums: %s\n", totals.c_str());
    std::fprintf(out, "  %-11s %20.0f %10s  weights + gradients + optimizer + data + max(activations + backward, "
                      "transient)\n",
                 "peak", p.peak(), train::format_bytes(p.peak()).c_str());
    if (memory > 0)
      std::fprintf(out, "  %s in %s (%s): %s\n", p.peak() <= memory ? "fits" : "DOES NOT FIT",
                   train::format_bytes(memory).c_str(), memory_source.c_str(),
                   p.peak() <= memory ? str(train::format_bytes(memory - p.peak()), " to spare").c_str()
                                      : str(train::format_bytes(p.peak() - memory), " over").c_str());
  }
}

PlanCommand::PlanCommand(CLI::App& app) {
  plan_ = app.add_subcommand(
      "plan",
      "Estimate, without allocating, the memory per process of each training stage: weights, gradients, AdamW "
      "state, activations of one micro-batch, data. For a vlmc train config (--config and its keys), or for a "
      "LLaVA of real size (--preset or --model-config, --stage, --batch, --seq)");
  plan_->add_option("--config", config_file_, "TOML file of vlmc train settings (flags override it)")
      ->check(CLI::ExistingFile);
  train::register_train_config(schema_, config_);
  schema_.add_to_cli(*plan_);
  LlavaPlanOptions& o = llava_;
  std::string presets;
  for (const std::string& p : train::llava_presets()) presets += (presets.empty() ? "" : ", ") + p;
  plan_->add_option("--preset", o.preset, "a LLaVA of real size: " + presets)
      ->check(CLI::IsMember(train::llava_presets()));
  plan_->add_option("--model-config", o.model_config,
                    "a Hugging Face folder or config.json: LlavaForConditionalGeneration, LlavaLlamaForCausalLM, or "
                    "a LlamaForCausalLM (with CLIP ViT-L/14-336 as the tower)");
  plan_->add_option("--stage", o.settings.stage, "1: projector only (LM and tower frozen); 2: projector + LM")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 2}));
  plan_->add_option("--batch", o.settings.batch, "sequences per process per micro-batch")
      ->capture_default_str()
      ->check(kPositive);
  plan_->add_option("--seq", o.settings.length, "positions per sequence (576 visual tokens + text)")
      ->capture_default_str()
      ->check(kPositive);
  plan_->add_option("--accumulation", o.settings.accumulation,
                    "micro-batches per optimizer step (gradient accumulation: no memory of its own)")
      ->capture_default_str()
      ->check(kPositive);
  plan_->add_option("--processes", processes_, "data-parallel processes (ZeRO-1 shards AdamW's state over them)")
      ->capture_default_str()
      ->check(kPositive);
  plan_->add_option("--zero-stage", zero_stage_, "0, or 1: AdamW's state sharded over --processes (default: "
                                                 "run.zero_stage with --config, else 0)")
      ->check(CLI::IsMember({0, 1}));
  plan_->add_flag("--gradient-checkpointing", o.settings.checkpointing,
                  "keep only each decoder layer's input and recompute one layer at a time in the backward");
  plan_->add_option("--frozen-dtype", o.frozen_dtype, "dtype of the frozen weights (LM in stage 1, the tower)")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "f32"}));
  plan_->add_option("--compute-dtype", o.compute_dtype, "bf16: autocast's bf16 products; f32: none")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "f32"}));
  plan_->add_option("--target", o.target, "the device the plan is for (it picks the attention's form): cuda | cpu")
      ->capture_default_str()
      ->check(CLI::IsMember({"cuda", "cpu"}));
  plan_->add_option("--memory", memory_,
                    "memory per process to compare with, e.g. 141GB (an H200); default: this machine's "
                    "MemAvailable (or its cgroup's headroom, where less) for --config on the CPU, none otherwise");
}

int PlanCommand::execute() {
  const bool llava = !llava_.preset.empty() || !llava_.model_config.empty();
  VLMC_CHECK(!(llava && !config_file_.empty()), "plan: give --config (a vlmc train config) or --preset / "
                                                "--model-config (a LLaVA of real size), not both");
  VLMC_CHECK(llava_.preset.empty() || llava_.model_config.empty(), "plan: give --preset or --model-config, not both");
  double memory = 0;
  std::string source;
  if (!memory_.empty()) {
    memory = train::parse_bytes(memory_, "plan: --memory");
    source = "--memory";
  }
  std::vector<train::StagePlan> plans;
  if (llava) {
    train::LlavaPlanSettings s = llava_.settings;
    s.processes = processes_;
    s.zero_stage = static_cast<int>(std::max<int64_t>(zero_stage_, 0));
    s.frozen_bf16 = llava_.frozen_dtype == "bf16";
    s.bf16_autocast = llava_.compute_dtype == "bf16";
    s.cuda = llava_.target == "cuda";
    const train::LlavaDescription model = llava_.preset.empty() ? train::llava_from_hf_config(llava_.model_config)
                                                                : train::llava_preset(llava_.preset);
    std::printf("%s, stage %d, %lld x %lld positions per process, %lld processes%s%s, %s products, frozen "
                "weights %s, on %s\n",
                model.name.c_str(), s.stage, static_cast<long long>(s.batch), static_cast<long long>(s.length),
                static_cast<long long>(s.processes), s.zero_stage == 1 ? " (ZeRO-1)" : "",
                s.checkpointing ? ", gradient checkpointing" : "", llava_.compute_dtype.c_str(),
                llava_.frozen_dtype.c_str(), llava_.target.c_str());
    plans.push_back(train::plan_llava(model, s));
  } else {
    for (const char* flag : {"--stage", "--batch", "--seq", "--accumulation", "--gradient-checkpointing",
                             "--frozen-dtype", "--compute-dtype", "--target"})
      VLMC_CHECK(plan_->count(flag) == 0, "plan: ", flag, " describes a LLaVA of real size: give it with --preset or "
                 "--model-config (a vlmc train config is planned from its own keys, e.g. --stage1.batch_size)");
    if (!config_file_.empty()) schema_.load_toml_file(config_file_);
    schema_.apply_cli();
    if (zero_stage_ >= 0) config_.zero_stage = zero_stage_;
    config_.validate();
    if (memory_.empty() && config_.device == "cpu") {
      const train::AvailableMemory available = train::available_memory();
      memory = available.bytes;
      source = available.source;
    }
    if (config_.llava_data()) {
      plans.push_back(train::plan_llava_run(config_, static_cast<int>(processes_)));
      print_plans(plans, memory, source, stdout);
      return 0;
    }
    for (const auto& [key, batch] : {std::pair<const char*, int64_t>{"stage0.vision", config_.stage0_vision.batch_size},
                                     {"stage0.language", config_.stage0_language.batch_size},
                                     {"stage1", config_.stage1.batch_size},
                                     {"stage2", config_.stage2.batch_size}})
      VLMC_CHECK(batch % processes_ == 0, "plan: ", key, ".batch_size ", batch, " does not split over --processes ",
                 processes_);
    plans = train::plan_training(config_, static_cast<int>(processes_));
  }
  print_plans(plans, memory, source, stdout);
  return 0;
}

}  // namespace vlmc::cli
