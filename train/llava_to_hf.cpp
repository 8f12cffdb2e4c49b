#include "train/llava_to_hf.h"

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io/json_file.h"
#include "data/sentencepiece_tokenizer.h"
#include "modules/hf_export.h"

namespace vlmc::train {
namespace fs = std::filesystem;
using json = nlohmann::json;
namespace {

constexpr const char* kImageToken = "<image>";

// table [V, D] -> [rows, D] f32: the old rows, then their mean repeated.
Tensor grow_rows(const Tensor& table, int64_t rows) {
  const Tensor old = table.to(DType::f32).contiguous();
  const int64_t V = old.size(0), D = old.size(1);
  Tensor grown = Tensor::zeros({rows, D});
  float* dst = static_cast<float*>(grown.data_ptr());
  const float* src = static_cast<const float*>(old.data_ptr());
  std::memcpy(dst, src, static_cast<size_t>(V * D) * sizeof(float));
  std::vector<double> mean(static_cast<size_t>(D), 0.0);
  for (int64_t v = 0; v < V; ++v)
    for (int64_t d = 0; d < D; ++d) mean[static_cast<size_t>(d)] += src[v * D + d];
  for (int64_t v = V; v < rows; ++v)
    for (int64_t d = 0; d < D; ++d) dst[v * D + d] = static_cast<float>(mean[static_cast<size_t>(d)] / V);
  return grown;
}

// A JSON object file of the tokenizer folder, or {} when it has none.
json object_file_or_empty(const fs::path& path) {
  if (!fs::exists(path)) return json::object();
  return io::read_json_object(path.string());
}

}  // namespace

int64_t save_as_transformers_llava(const nn::PretrainedModel& model, const std::string& tower_dir,
                                   const std::string& out, nn::HfKeyLayout layout) {
  VLMC_CHECK(model.config.kind == nn::HfKind::llava_original && model.llava && model.llama,
             "export: ", model.dir, " is not an original-layout LLaVA (LlavaLlamaForCausalLM)");
  const fs::path dir(model.dir);
  const data::SentencePieceTokenizer tokenizer = data::SentencePieceTokenizer::from_folder(model.dir);

  // The image token: the tokenizer's own, or the first free id.
  int64_t image_id = -1;
  for (const auto& [id, token] : tokenizer.added_tokens())
    if (token.content == kImageToken) image_id = id;
  const bool added = image_id < 0;
  if (added) image_id = tokenizer.vocab_size();

  nn::PretrainedModel hf = model;
  hf.config.kind = nn::HfKind::llava;
  hf.config.llava.image_token_index = image_id;
  hf.config.llava.vision_tower.clear();
  hf.config.llava.image_aspect_ratio.clear();
  hf.config.llava.mm_hidden_size = 0;
  nn::ExportOptions options;
  options.llava_layout = layout;
  const int64_t rows = model.config.text.vocab_size;
  if (image_id >= rows) {
    const int64_t grown = (image_id + 1 + 63) / 64 * 64;
    hf.config.text.vocab_size = grown;
    const nn::LlamaForCausalLM& llm = *model.llama;
    options.replace["llm.model.embed_tokens.weight"] = grow_rows(llm.model->embed_tokens->weight, grown);
    if (llm.lm_head) options.replace["llm.lm_head.weight"] = grow_rows(llm.lm_head->weight, grown);
  }

  if (added) {
    json added_tokens = object_file_or_empty(dir / "added_tokens.json");
    added_tokens[kImageToken] = image_id;
    options.extra_files["added_tokens.json"] = added_tokens.dump(2) + "\n";
    json config = object_file_or_empty(dir / "tokenizer_config.json");
    config["added_tokens_decoder"][std::to_string(image_id)] = {
        {"content", kImageToken}, {"lstrip", false}, {"normalized", false}, {"rstrip", false},
        {"single_word", false},   {"special", true}};
    options.extra_files["tokenizer_config.json"] = config.dump(2) + "\n";
  }
  const fs::path preprocessor = fs::path(tower_dir) / "preprocessor_config.json";
  VLMC_CHECK(fs::is_regular_file(preprocessor), "export: ", preprocessor.string(),
             " is missing: the converted folder needs the tower's image processor");
  options.extra_files["preprocessor_config.json"] = io::read_json_object(preprocessor.string()).dump(2) + "\n";
  json processor;
  processor["processor_class"] = "LlavaProcessor";
  processor["image_token"] = kImageToken;
  processor["patch_size"] = model.config.vision.patch_size;
  processor["vision_feature_select_strategy"] = model.config.llava.keep_cls ? "full" : "default";
  options.extra_files["processor_config.json"] = processor.dump(2) + "\n";
  nn::save_pretrained(hf, out, options);
  return image_id;
}

}  // namespace vlmc::train
