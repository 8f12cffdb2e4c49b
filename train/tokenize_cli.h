// `vlmc tokenize`: the ids a Hugging Face LLaMA tokenizer folder gives a text, as
// transformers' slow LlamaTokenizer (and LLaVA's tokenizer_image_token) make them.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace vlmc::cli {

struct TokenizeOptions {
  std::string model;             // folder with tokenizer.model (+ tokenizer_config.json, ...)
  std::string text;
  bool json = false;             // {"input_ids": [...]} instead of ids separated by spaces
  bool no_special_tokens = false;  // encode(text, add_special_tokens=False)
  bool image_token = false;      // LLaVA's tokenizer_image_token: -200 for each "<image>"
};

// Encodes options.text and prints the ids on one line of stdout.
int run_tokenize(const TokenizeOptions& options);

class TokenizeCommand {
 public:
  explicit TokenizeCommand(CLI::App& app);
  TokenizeCommand(const TokenizeCommand&) = delete;
  TokenizeCommand& operator=(const TokenizeCommand&) = delete;

  bool parsed() const { return cmd_->parsed(); }
  int execute() const { return run_tokenize(options_); }

 private:
  CLI::App* cmd_ = nullptr;
  TokenizeOptions options_;
};

}  // namespace vlmc::cli
