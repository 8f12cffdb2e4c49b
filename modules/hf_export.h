// vlmc models -> Hugging Face model folders that transformers loads
// (from_pretrained), and that load_pretrained reads back bit for bit.
//
//   nn::save_pretrained(loaded, "out/");                 // same kind and layout as loaded
//
// What is written: config.json (transformers 4.45's keys for the kind) and
// model.safetensors (the parameters in f32, "format": "pt"), plus the
// tokenizer and processor files copied from the folder the model came from
// (tokenizer.model, tokenizer_config.json, preprocessor_config.json, ...), so
// AutoProcessor loads the output too. The folder appears whole or not at
// all: everything is written into DIR.tmp.<pid> and renamed to DIR at the end;
// an existing DIR is never replaced.
#pragma once

#include <map>
#include <string>

#include "modules/hf_checkpoint.h"

namespace vlmc::nn {

struct ExportOptions {
  // LLaVA only: llava_legacy (transformers <= 4.51, what 4.45.2 loads) or
  // llava_newer; the original layout is written as it was read.
  HfKeyLayout llava_layout = HfKeyLayout::llava_legacy;
  // More files to write beside the weights (name -> contents), for a model
  // that has no source folder to copy them from (a vlmc train run's
  // tokenizer.json, preprocessor_config.json, ...). A name here wins over the
  // source folder's file of that name.
  std::map<std::string, std::string> extra_files;
  // Tensors written instead of the module's, by the model-level name
  // (group prefix + state_dict name: "llm.model.embed_tokens.weight"): a
  // vocabulary grown by a token (train/llava_to_hf.h). The config must
  // describe them (config.text.vocab_size).
  std::map<std::string, Tensor> replace;
};

void save_pretrained(const PretrainedModel& model, const std::string& dir, const ExportOptions& options = {});

// config.json's text for the model (what save_pretrained writes).
std::string hf_config_json(const PretrainedModel& model, HfKeyLayout layout);

}  // namespace vlmc::nn
