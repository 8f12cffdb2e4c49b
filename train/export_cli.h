// `vlmc export`: a Hugging Face model folder in, a Hugging Face folder out
// (transformers' LLaVA layout of choice), through vlmc's loader and writer;
// or a checkpoint of `vlmc train` in, a transformers LLaVA folder or LLaVA's
// mm_projector file out (train/export_checkpoint.h).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace vlmc::cli {

struct ExportOptions {
  std::string model;         // a Hugging Face folder (config.json + safetensors)
  std::string checkpoint;    // or a checkpoint folder of `vlmc train` (exactly one of the two)
  std::string format = "hf";  // --checkpoint: "hf" (transformers' LLaVA) or "llava" (the mm_projector file)
  std::string reference_out;  // --checkpoint: also a reference sample for checking the export (safetensors)
  std::string vision_tower;  // the original LLaVA layout's CLIP folder
  std::string out;           // the folder to create
  // LLaVA: "transformers" (<= 4.51 keys), "transformers-new", or "original"; "" = as read
  // (an original-layout input given a transformers layout is converted: train/llava_to_hf.h)
  std::string layout;
};

int run_export(const ExportOptions& options);

class ExportCommand {
 public:
  explicit ExportCommand(CLI::App& app);
  ExportCommand(const ExportCommand&) = delete;
  ExportCommand& operator=(const ExportCommand&) = delete;

  bool parsed() const { return cmd_->parsed(); }
  int execute() const { return run_export(options_); }

 private:
  CLI::App* cmd_ = nullptr;
  ExportOptions options_;
};

}  // namespace vlmc::cli
