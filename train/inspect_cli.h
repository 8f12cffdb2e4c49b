// `vlmc inspect`: load a Hugging Face model folder and say what it is, what
// was read, how long it took and the host memory it peaked at.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace vlmc::cli {

struct InspectOptions {
  std::string model;
  std::string vision_tower;
  std::string weights_dtype = "file";  // file, f32 or bf16 (nn::WeightsDType)
};

int run_inspect(const InspectOptions& options);

class InspectCommand {
 public:
  explicit InspectCommand(CLI::App& app);
  InspectCommand(const InspectCommand&) = delete;
  InspectCommand& operator=(const InspectCommand&) = delete;

  bool parsed() const { return cmd_->parsed(); }
  int execute() const { return run_inspect(options_); }

 private:
  CLI::App* cmd_ = nullptr;
  InspectOptions options_;
};

}  // namespace vlmc::cli
