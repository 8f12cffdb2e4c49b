#include "train/export_cli.h"

#include <cstdio>

#include "core/error.h"
#include "modules/hf_checkpoint.h"
#include "modules/hf_export.h"
#include "train/export_checkpoint.h"
#include "train/llava_to_hf.h"

namespace vlmc::cli {

ExportCommand::ExportCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("export",
                            "Load a Hugging Face model folder, or a checkpoint of vlmc train, and write it as a new "
                            "Hugging Face folder (config.json, model.safetensors in f32, the tokenizer and processor "
                            "files) that transformers' from_pretrained loads (docs/models.md)");
  cmd_->add_option("--model", options_.model,
                   "Hugging Face folder: LlamaForCausalLM, CLIPVisionModel, CLIPModel, "
                   "LlavaForConditionalGeneration or LLaVA's LlavaLlamaForCausalLM (or --checkpoint)");
  cmd_->add_option("--checkpoint", options_.checkpoint,
                   "a checkpoint folder of vlmc train (runs/<name>/checkpoints/...), instead of --model");
  cmd_->add_option("--format", options_.format,
                   "--checkpoint: hf (a transformers LlavaForConditionalGeneration folder with a WordLevel "
                   "tokenizer.json and a CLIPImageProcessor) or llava (the connector alone: mm_projector.safetensors)")
      ->capture_default_str()
      ->check(CLI::IsMember({"hf", "llava"}));
  cmd_->add_option("--reference-out", options_.reference_out,
                   "--checkpoint: also write this safetensors file: an evaluation mosaic, a question, and vlmc's "
                   "logits and greedy answer for them (tests/golden/check_hf_export_checkpoint.py compares)");
  cmd_->add_option("--vision-tower", options_.vision_tower,
                   "the CLIP folder of an original-layout LLaVA checkpoint (its mm_vision_tower)");
  cmd_->add_option("--out", options_.out, "the folder to create (an existing one is never replaced)")->required();
  cmd_->add_option("--layout", options_.layout,
                   "LLaVA key layout: transformers (<= 4.51: language_model.*, what 4.45 loads), transformers-new "
                   "(model.language_model.*, lm_head.*) or original (LLaVA's own); default: transformers, or as read "
                   "for an original-layout model. An original-layout model given a transformers layout is converted "
                   "to LlavaForConditionalGeneration (<image> added to the vocabulary; docs/llava-1.5.md)")
      ->check(CLI::IsMember({"transformers", "transformers-new", "original"}));
}

namespace {

int export_checkpoint(const ExportOptions& options) {
  VLMC_CHECK(options.vision_tower.empty() && (options.layout.empty() || options.layout == "transformers"),
             "vlmc export: --vision-tower and --layout are for --model; a checkpoint is written in transformers' "
             "<= 4.51 layout");
  train::RunCheckpoint run = train::load_run_checkpoint(options.checkpoint);
  std::fprintf(stderr, "loaded %s (connector %s)\n", options.checkpoint.c_str(), run.config.connector.c_str());
  if (options.format == "hf") {
    train::export_checkpoint_hf(run, options.out);
  } else {
    train::export_checkpoint_llava(run, options.out);
  }
  std::fprintf(stderr, "wrote %s\n", options.out.c_str());
  if (!options.reference_out.empty()) {
    train::write_reference_sample(run, options.reference_out);
    std::fprintf(stderr, "wrote %s\n", options.reference_out.c_str());
  }
  return 0;
}

}  // namespace

int run_export(const ExportOptions& options) {
  VLMC_CHECK(options.model.empty() != options.checkpoint.empty(),
             "vlmc export: give exactly one of --model (a Hugging Face folder) and --checkpoint (a checkpoint of "
             "vlmc train)", options.model.empty() ? "" : "; both were given");
  if (!options.checkpoint.empty()) return export_checkpoint(options);
  VLMC_CHECK(options.format == "hf" && options.reference_out.empty(),
             "vlmc export: --format and --reference-out are for --checkpoint");
  nn::PretrainedOptions load;
  load.vision_tower = options.vision_tower;
  const nn::PretrainedModel model = nn::load_pretrained(options.model, load);
  std::fprintf(stderr, "loaded %s\n", model.report.summary().c_str());
  const nn::HfKeyLayout llava_layout =
      options.layout == "transformers-new" ? nn::HfKeyLayout::llava_newer : nn::HfKeyLayout::llava_legacy;
  const bool original = model.config.kind == nn::HfKind::llava_original;
  if (original && !options.layout.empty() && options.layout != "original") {
    const int64_t image_id = train::save_as_transformers_llava(
        model, nn::original_tower_dir(model.config, options.vision_tower), options.out, llava_layout);
    std::fprintf(stderr, "converted to LlavaForConditionalGeneration (image_token_index %lld)\n",
                 static_cast<long long>(image_id));
  } else {
    VLMC_CHECK(options.layout != "original" || original, "vlmc export: --layout original is for an original-layout "
               "LLaVA; ", options.model, " is a ", nn::hf_kind_name(model.config.kind));
    nn::ExportOptions out;
    out.llava_layout = llava_layout;
    nn::save_pretrained(model, options.out, out);
  }
  std::fprintf(stderr, "wrote %s\n", options.out.c_str());
  return 0;
}

}  // namespace vlmc::cli
