#include "train/tokenize_cli.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "data/sentencepiece_tokenizer.h"

namespace vlmc::cli {

TokenizeCommand::TokenizeCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("tokenize",
                            "Print the token ids of a text under a Hugging Face LLaMA tokenizer (SentencePiece "
                            "tokenizer.model + tokenizer_config.json), as transformers' LlamaTokenizer gives them");
  cmd_->add_option("--model", options_.model, "folder holding tokenizer.model (a Hugging Face model folder)")
      ->required();
  cmd_->add_option("--text", options_.text, "the text, used verbatim (\"<image>\" and other added tokens included)")
      ->required();
  cmd_->add_flag("--json", options_.json, "print {\"input_ids\": [...]} instead of ids separated by spaces");
  cmd_->add_flag("--no-special-tokens", options_.no_special_tokens,
                 "no bos / eos (add_special_tokens=False)");
  cmd_->add_flag("--image-token", options_.image_token,
                 "LLaVA's tokenizer_image_token: the text split on \"<image>\", each part encoded, -200 in between");
}

int run_tokenize(const TokenizeOptions& options) {
  const auto tokenizer = data::SentencePieceTokenizer::from_folder(options.model);
  const bool special = !options.no_special_tokens;
  const std::vector<int64_t> ids = options.image_token
                                       ? data::tokenizer_image_token(tokenizer, options.text,
                                                                     data::kImageTokenIndex, special)
                                       : tokenizer.encode(options.text, special);
  std::string line;
  if (options.json) {
    line = nlohmann::json{{"input_ids", ids}}.dump();
  } else {
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace vlmc::cli
