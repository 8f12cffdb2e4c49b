// `vlmc generate`: a Hugging Face LLaVA (or LLaMA) folder, images and a
// prompt in, text out, as transformers' generate gives it: the prompt used
// verbatim with <image> where the visual tokens go, greedy by default or
// sampled, a KV cache, streaming to stdout (docs/generation.md).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace vlmc::cli {

struct GenerateOptions {
  std::string model;
  std::string vision_tower;         // original LLaVA layout: its CLIP folder
  std::vector<std::string> images;  // one per <image>, in order
  std::string prompt;
  int64_t max_new_tokens = 128;
  double temperature = 0;  // 0: greedy
  double top_p = 1;
  int64_t top_k = 0;
  uint64_t seed = 0;
  bool json = false;
  std::string logits_out;  // safetensors: the prompt's logits and the pixel values
  std::string device = "cpu";
  std::string weights_dtype = "file";  // file, f32 or bf16 (nn::WeightsDType)
  std::string prefill_precision = "f32";  // bf16: the prompt's forward under autocast (GenerationConfig)
};

int run_generate(const GenerateOptions& options);

class GenerateCommand {
 public:
  explicit GenerateCommand(CLI::App& app);
  GenerateCommand(const GenerateCommand&) = delete;
  GenerateCommand& operator=(const GenerateCommand&) = delete;

  bool parsed() const { return cmd_->parsed(); }
  int execute() const { return run_generate(options_); }

 private:
  CLI::App* cmd_ = nullptr;
  GenerateOptions options_;
};

}  // namespace vlmc::cli
