#include "train/generate_cli.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/io/output_path.h"
#include "core/io/tensor_io.h"
#include "data/clip_image_processor.h"
#include "data/image.h"
#include "data/sentencepiece_tokenizer.h"
#include "modules/generation.h"
#include "modules/hf_checkpoint.h"
#include "train/cli_checks.h"

namespace vlmc::cli {

namespace {

// The prompt's ids as the model's own pipeline makes them. transformers'
// LLaVA: the tokenizer encodes the whole prompt, <image> being one of its
// added tokens (image_token_index). The original LLaVA: tokenizer_image_token,
// -200 at each "<image>".
std::vector<int64_t> prompt_ids(const data::SentencePieceTokenizer& tokenizer, const nn::PretrainedModel& m,
                                const std::string& prompt) {
  if (m.config.kind == nn::HfKind::llava_original)
    return data::tokenizer_image_token(tokenizer, prompt, m.config.llava.image_token_index, true);
  return tokenizer.encode(prompt, true);
}

// One placeholder per image, as the splice expects: a run of exactly
// `visual_tokens` image ids (the form transformers' newer processors write)
// becomes one. Returns the number of images the prompt asks for.
int64_t collapse_expanded_images(std::vector<int64_t>& ids, int64_t image_id, int64_t visual_tokens) {
  std::vector<int64_t> out;
  int64_t images = 0;
  for (size_t i = 0; i < ids.size();) {
    if (ids[i] != image_id) {
      out.push_back(ids[i++]);
      continue;
    }
    size_t run = 0;
    while (i + run < ids.size() && ids[i + run] == image_id) ++run;
    if (run == 1 || static_cast<int64_t>(run) == visual_tokens) {
      out.push_back(image_id);
      ++images;
    } else {
      throw Error(str("generate: the prompt has ", run, " image tokens in a row; expected one <image> per image, or ",
                      visual_tokens, " (the processor's expanded form)"));
    }
    i += run;
  }
  ids = std::move(out);
  return images;
}

// Prints the decoded text as tokens come. A token may end inside a UTF-8
// character (byte fallback), so only the text before a trailing replacement
// character is printed; the rest follows with the next token.
class TextStream {
 public:
  TextStream(const data::SentencePieceTokenizer& tokenizer, bool enabled) : tokenizer_(tokenizer), enabled_(enabled) {}
  void push(int64_t id) {
    ids_.push_back(id);
    if (enabled_) flush(false);
  }
  void finish() {
    if (enabled_) flush(true);
  }
  std::string text() const { return tokenizer_.decode(ids_, true); }

 private:
  void flush(bool final) {
    std::string text = tokenizer_.decode(ids_, true);
    static const std::string kReplacement = "\xEF\xBF\xBD";
    if (!final && text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0) return;
    if (text.size() > printed_ && text.compare(0, printed_, printed_text_) == 0) {
      std::fwrite(text.data() + printed_, 1, text.size() - printed_, stdout);
      std::fflush(stdout);
      printed_ = text.size();
      printed_text_ = text;
    }
  }

  const data::SentencePieceTokenizer& tokenizer_;
  bool enabled_;
  std::vector<int64_t> ids_;
  size_t printed_ = 0;
  std::string printed_text_;
};

}  // namespace

GenerateCommand::GenerateCommand(CLI::App& app) {
  cmd_ = app.add_subcommand("generate",
                            "Answer a prompt about images with a Hugging Face LLaVA (or continue a text with a "
                            "LLaMA), as transformers' generate does (docs/generation.md)");
  cmd_->add_option("--model", options_.model, "Hugging Face folder: the model, tokenizer.model and (LLaVA) "
                                              "preprocessor_config.json")
      ->required();
  cmd_->add_option("--vision-tower", options_.vision_tower,
                   "the CLIP folder of an original-layout LLaVA checkpoint (its mm_vision_tower)");
  cmd_->add_option("--image", options_.images, "an image file (JPEG or PNG), one per <image> in the prompt, in order");
  cmd_->add_option("--prompt", options_.prompt,
                   "the prompt, used verbatim (apply the model's chat template yourself); <image> marks where "
                   "each image's visual tokens go")
      ->required();
  cmd_->add_option("--max-new-tokens", options_.max_new_tokens, "tokens to generate at most (EOS stops earlier)")
      ->capture_default_str()->check(kNonNegative);
  cmd_->add_option("--temperature", options_.temperature, "0: greedy; > 0: sample from softmax(logits / T)")
      ->capture_default_str()->check(kNonNegative);
  cmd_->add_option("--top-p", options_.top_p, "nucleus sampling: keep the smallest set of tokens whose "
                                              "probability reaches P")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd_->add_option("--top-k", options_.top_k, "sample among the K most likely tokens (0: all)")
      ->capture_default_str()->check(kNonNegative);
  cmd_->add_option("--seed", options_.seed, "seed of the sampling draws")->capture_default_str();
  cmd_->add_flag("--json", options_.json,
                 "print one JSON object at the end (input_ids, output_ids, text, tokens_per_s) instead of "
                 "streaming the text");
  cmd_->add_option("--logits-out", options_.logits_out,
                   "write the prompt's logits (f32 [1, T, V], T after the splice) and the pixel values to this "
                   "safetensors file");
  cmd_->add_option("--device", options_.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd_->add_option("--weights-dtype", options_.weights_dtype,
                   "the frozen language model's and vision tower's weights in memory: file (the checkpoint's "
                   "dtype: BF16 stays 2 bytes), f32, or bf16; the computation is f32 (see --prefill-precision)")
      ->capture_default_str()
      ->check(CLI::IsMember({"file", "f32", "bf16"}));
  cmd_->add_option("--prefill-precision", options_.prefill_precision,
                   "f32, or bf16: the image's encoding and the prompt's forward with every matrix product's "
                   "operands rounded to bf16 and f32 accumulation (torch.autocast's bf16; oneDNN's bf16 kernel "
                   "where the CPU has one, so a long prompt is read faster); the decode steps stay f32")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
}

int run_generate(const GenerateOptions& options) {
  if (!options.logits_out.empty()) io::check_output_path(options.logits_out, "--logits-out");
  const Device device = Device::parse(options.device);
  nn::PretrainedOptions load;
  load.vision_tower = options.vision_tower;
  load.weights = nn::parse_weights_dtype(options.weights_dtype);
  nn::PretrainedModel m = nn::load_pretrained(options.model, load);
  VLMC_CHECK(m.llama, "generate: ", options.model, " is a ", nn::hf_kind_name(m.config.kind),
             ", which has no language model");
  std::fprintf(stderr, "loaded %s\n", m.report.summary().c_str());
  const auto tokenizer = data::SentencePieceTokenizer::from_folder(options.model);

  std::vector<int64_t> ids = prompt_ids(tokenizer, m, options.prompt);
  int64_t placeholders = 0;
  Tensor pixels;
  if (m.llava) {
    const auto& c = m.config;
    const int64_t visual_tokens = c.vision.num_patches() + (c.llava.keep_cls ? 1 : 0);
    placeholders = collapse_expanded_images(ids, c.llava.image_token_index, visual_tokens);
    VLMC_CHECK(placeholders == static_cast<int64_t>(options.images.size()), "generate: the prompt has ",
               placeholders, " <image> placeholder", placeholders == 1 ? "" : "s", " but ", options.images.size(),
               " --image file", options.images.size() == 1 ? " was" : "s were", " given");
    if (placeholders > 0) {
      // LLaVA reads the processor of its tower: the original layout's is in the tower's folder.
      const std::string processor_dir =
          c.kind == nn::HfKind::llava_original ? nn::original_tower_dir(c, options.vision_tower) : options.model;
      const auto processor =
          data::CLIPImageProcessor::from_folder(processor_dir, c.llava.image_aspect_ratio == "pad");
      std::vector<data::Image> images;
      for (const auto& path : options.images) images.push_back(data::load_image(path));
      pixels = processor.preprocess_batch(images);  // [N, 3, H, W]
    }
  } else {
    VLMC_CHECK(options.images.empty(), "generate: ", options.model, " is a language model alone (",
               nn::hf_kind_name(m.config.kind), "); --image needs a LLaVA model");
  }

  if (!device.is_cpu()) {
    if (m.llava) m.llava->to(device);
    else m.llama->to(device);
  }
  NoGradGuard no_grad;
  const bool prefill_bf16 = options.prefill_precision == "bf16";
  const Tensor id_tensor = Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())}).to(device);

  nn::GenerationConfig config;
  config.max_new_tokens = options.max_new_tokens;
  config.temperature = options.temperature;
  config.top_p = options.top_p;
  config.top_k = options.top_k;
  config.seed = options.seed;
  config.eos_token_ids = m.config.ids.eos;
  if (config.eos_token_ids.empty() && tokenizer.eos_id() >= 0) config.eos_token_ids.push_back(tokenizer.eos_id());
  config.keep_prompt_logits = !options.logits_out.empty();
  config.prefill_bf16 = prefill_bf16;

  TextStream stream(tokenizer, !options.json);
  const auto on_token = [&stream](int64_t id) { stream.push(id); };
  // LLaVA: the visual tokens spliced in at each placeholder (prepare_inputs).
  // The image's encoding (the tower and the connector) is part of the prompt's work.
  const auto prompt_embeds = [&] {
    AutocastGuard autocast(prefill_bf16);
    return m.llava->prepare_inputs(id_tensor, pixels.defined() ? pixels.to(device) : Tensor()).inputs_embeds;
  };
  const nn::GenerationResult result = m.llava ? nn::generate(*m.llama, prompt_embeds(), config, on_token)
                                              : nn::generate_from_ids(*m.llama, id_tensor, config, on_token);
  stream.finish();

  if (!options.logits_out.empty()) {
    std::map<std::string, Tensor> out{{"logits", result.prompt_logits.to(Device::cpu()).to(DType::f32)}};
    if (pixels.defined()) out.emplace("pixel_values", pixels);
    io::save_safetensors(options.logits_out, out, {{"format", "pt"}});
  }
  const double tokens_per_s = result.decode_tokens_per_second();
  if (options.json) {
    // input_ids as LLaVA's tokenizer_image_token gives them: one image id per <image>.
    const nlohmann::json j{{"input_ids", ids},
                           {"output_ids", result.ids},
                           {"text", stream.text()},
                           {"tokens_per_s", tokens_per_s},
                           {"prefill_s", result.prefill_seconds}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  std::fprintf(stderr, "%zu tokens; prompt %.3f s, then %.2f tokens/s%s\n", result.ids.size(), result.prefill_seconds,
               tokens_per_s, result.stopped_by_eos ? " (stopped at EOS)" : "");
  return 0;
}

}  // namespace vlmc::cli
