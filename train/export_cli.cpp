#include "train/export_cli.h"

#include <cstdio>

#include "modules/hf_checkpoint.h"
#include "modules/hf_export.h"

namespace vlmc::cli {

ExportCommand::ExportCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("export",
                            "Load a Hugging Face model folder and write it as a new Hugging Face folder "
                            "(config.json, model.safetensors in f32, the tokenizer and processor files) that "
                            "transformers' from_pretrained loads (docs/models.md)");
  cmd_->add_option("--model", options_.model,
                   "Hugging Face folder: LlamaForCausalLM, CLIPVisionModel, CLIPModel, "
                   "LlavaForConditionalGeneration or LLaVA's LlavaLlamaForCausalLM")
      ->required();
  cmd_->add_option("--vision-tower", options_.vision_tower,
                   "the CLIP folder of an original-layout LLaVA checkpoint (its mm_vision_tower)");
  cmd_->add_option("--out", options_.out, "the folder to create (an existing one is never replaced)")->required();
  cmd_->add_option("--layout", options_.layout,
                   "LLaVA key layout: transformers (<= 4.51: language_model.*, what 4.45 loads) or "
                   "transformers-new (model.language_model.*, lm_head.*)")
      ->capture_default_str()
      ->check(CLI::IsMember({"transformers", "transformers-new"}));
}

int run_export(const ExportOptions& options) {
  nn::PretrainedOptions load;
  load.vision_tower = options.vision_tower;
  const nn::PretrainedModel model = nn::load_pretrained(options.model, load);
  std::fprintf(stderr, "loaded %s\n", model.report.summary().c_str());
  nn::ExportOptions out;
  out.llava_layout = options.layout == "transformers" ? nn::HfKeyLayout::llava_legacy : nn::HfKeyLayout::llava_newer;
  nn::save_pretrained(model, options.out, out);
  std::fprintf(stderr, "wrote %s\n", options.out.c_str());
  return 0;
}

}  // namespace vlmc::cli
