#include "train/inspect_cli.h"

#include <sys/resource.h>

#include <cstdio>

#include "modules/hf_checkpoint.h"

namespace vlmc::cli {

InspectCommand::InspectCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("inspect",
                            "Load a Hugging Face model folder and print what it is, what was read, the load time "
                            "and the peak host memory (docs/models.md)");
  cmd_->add_option("--model", options_.model, "Hugging Face folder (config.json + safetensors)")->required();
  cmd_->add_option("--vision-tower", options_.vision_tower,
                   "the CLIP folder of an original-layout LLaVA checkpoint (its mm_vision_tower)");
  cmd_->add_option("--weights-dtype", options_.weights_dtype,
                   "the frozen language model's and vision tower's weights in memory: file (the checkpoint's "
                   "dtype), f32, or bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"file", "f32", "bf16"}));
}

int run_inspect(const InspectOptions& options) {
  nn::PretrainedOptions load;
  load.vision_tower = options.vision_tower;
  load.weights = nn::parse_weights_dtype(options.weights_dtype);
  const nn::PretrainedModel m = nn::load_pretrained(options.model, load);
  const nn::HfModelConfig& c = m.config;
  std::printf("%s\n", m.report.summary().c_str());
  if (m.llama) {
    const auto& t = c.text;
    std::printf("language model: LLaMA, vocab %lld, hidden %lld, %lld layers, %lld heads (%lld KV), MLP %lld, "
                "rope_theta %g, %lld positions%s\n",
                (long long)t.vocab_size, (long long)t.hidden_size, (long long)t.num_hidden_layers,
                (long long)t.num_attention_heads, (long long)t.num_key_value_heads, (long long)t.intermediate_size,
                t.rope_theta, (long long)t.max_position_embeddings, t.tie_word_embeddings ? ", tied head" : "");
  }
  if (m.vision) {
    const auto& v = c.vision;
    std::printf("vision tower: CLIP, hidden %lld, %lld layers, %lld heads, MLP %lld, image %lld, patch %lld "
                "(%lld patches), %s\n",
                (long long)v.hidden_size, (long long)v.num_hidden_layers, (long long)v.num_attention_heads,
                (long long)v.intermediate_size, (long long)v.image_size, (long long)v.patch_size,
                (long long)v.num_patches(), v.hidden_act.c_str());
  }
  if (m.llava) {
    const auto& l = c.llava;
    std::printf("llava: projector %s, image token %lld, feature layer %lld, CLS %s%s%s\n", l.projector_type.c_str(),
                (long long)l.image_token_index, (long long)l.vision_feature_layer, l.keep_cls ? "kept" : "dropped",
                l.image_aspect_ratio.empty() ? "" : ", image_aspect_ratio ", l.image_aspect_ratio.c_str());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);  // ru_maxrss: KiB on Linux
  uint64_t weight_bytes = 0;
  for (const auto& [dtype, n] : m.report.memory_by_dtype) weight_bytes += n;
  std::printf("peak host memory %.3g GB; the parameters take %.3g GB (--weights-dtype %s)\n",
              usage.ru_maxrss * 1024.0 / 1e9, static_cast<double>(weight_bytes) / 1e9, options.weights_dtype.c_str());
  return 0;
}

}  // namespace vlmc::cli
