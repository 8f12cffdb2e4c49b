#include "train/export_checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "core/io/output_folder.h"
#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "modules/hf_export.h"
#include "modules/projector_io.h"
#include "train/batches.h"
#include "train/checkpoint.h"
#include "train/config_schema.h"
#include "train/mosaic.h"

namespace vlmc::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// Fashion-MNIST's mean and standard deviation, as encoder_pixels (train/batches.cpp) normalizes.
constexpr double kPixelMean = 0.2860, kPixelStd = 0.3530;
// The greedy answer of the reference sample stops here if <eos> has not come.
constexpr int64_t kMaxAnswerTokens = 16;


bool is_mlp_gelu(const std::string& type) { return std::regex_match(type, std::regex("mlp[1-9][0-9]*x_gelu")); }

// A [rows, D] table with one zero row appended: [rows + 1, D].
Tensor with_zero_row(const Tensor& table) {
  return cat({table, Tensor::zeros({1, table.size(1)}, table.dtype())}, 0);
}

json added_token(int64_t id, const std::string& content) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

}  // namespace

RunCheckpoint load_run_checkpoint(const std::string& dir) {
  const Checkpoint ckpt = load_checkpoint(dir);  // checks the CRC-32s
  VLMC_CHECK(!ckpt.state.contains("part"), "export: ", dir, " is a stage-0 cache entry (the ", ckpt.state["part"],
             " model alone), not a checkpoint of a run; export runs/<name>/checkpoints/<stage1 or stage2 step>");
  VLMC_CHECK(ckpt.state.contains("config"), "export: ", dir, "/", kCheckpointStateFile,
             " has no \"config\": not a checkpoint of vlmc train");
  const std::string bad = nonfinite_in(ckpt);
  VLMC_CHECK(bad.empty(), "export: ", dir, ": ", bad, " holds a NaN or an infinity: nothing to export");
  RunCheckpoint run;
  run.dir = dir;
  {
    ConfigSchema schema;
    register_train_config(schema, run.config);
    schema.load_json(ckpt.state["config"], dir + "/" + kCheckpointStateFile);
  }
  // The export runs on the CPU whatever the run trained on (a run of a CUDA
  // machine exports on one without), and in f32: the checkpoint holds f32
  // master weights, also of a bf16 run.
  run.config.device = "cpu";
  run.config.validate();
  const Tokenizer tokenizer(run.config.mosaic_grid);
  run.models = build_models(run.config, tokenizer);
  try {
    run.models.load_state_dict(ckpt.model);
  } catch (const Error& e) {
    throw Error(str("export: ", dir, "/", kCheckpointModelFile, " does not fit the models of its own config: ", e.what()));
  }
  run.models.llava->eval();
  run.models.quadrant_head->eval();
  return run;
}

nn::PretrainedModel hf_llava_of(const RunCheckpoint& run) {
  const TrainConfig& c = run.config;
  VLMC_CHECK(c.connector == "mlp2x_gelu" || c.connector == "mlp", "export --format hf: transformers' LLaVA has only "
             "the 2-layer MLP projector (Linear, GELU, Linear: connector.type mlp2x_gelu or mlp); the run in ",
             run.dir, " has connector.type '", c.connector, "'. --format llava writes the connector alone as LLaVA's "
             "mm_projector file (linear, mlp, mlp{N}x_gelu)");
  const Tokenizer tokenizer(c.mosaic_grid);
  const int64_t V = tokenizer.vocab_size();
  const nn::LlavaConfig& trained = run.models.llava->config();

  nn::PretrainedModel out;
  out.layout = nn::HfKeyLayout::llava_legacy;
  nn::HfModelConfig& hc = out.config;
  hc.kind = nn::HfKind::llava;
  hc.text = run.models.language->config();  // as built by build_models
  VLMC_CHECK(hc.text.vocab_size == V, "export: the run's language model has ", hc.text.vocab_size,
             " tokens, the tokenizer ", V);
  hc.text.vocab_size = V + 1;  // + <image>
  hc.vision = c.vision_config();
  const int64_t grey_channels = hc.vision.num_channels;
  VLMC_CHECK(grey_channels == 1 || grey_channels == 3, "export: the run's encoder reads ", grey_channels,
             " channels; only 1 (grey) or 3 can be written for CLIPImageProcessor's RGB");
  hc.vision.num_channels = 3;  // CLIPImageProcessor's RGB
  hc.ids.bos = kBosId;
  hc.ids.eos = {kEosId};
  hc.ids.pad = kPadId;
  hc.llava.image_token_index = V;
  hc.llava.vision_feature_layer = trained.select_layer;
  hc.llava.keep_cls = trained.keep_cls;
  hc.llava.projector_type = "mlp2x_gelu";

  Generator gen(0);  // every parameter is overwritten below
  out.vision = std::make_shared<nn::CLIPVisionModel>(hc.vision, gen);
  out.llama = std::make_shared<nn::LlamaForCausalLM>(hc.text, gen);
  nn::LlavaConfig lc;
  lc.projector_type = "mlp2x_gelu";
  lc.select_layer = trained.select_layer;
  lc.keep_cls = trained.keep_cls;
  lc.splice.image_token_id = V;
  out.llava = std::make_shared<nn::LlavaModel>(out.vision, out.llama, lc, gen);

  NoGradGuard no_grad;
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : run.models.llava->state_dict()) {
    if (name.rfind("connector.", 0) == 0) {
      // The seed's MLPConnector keeps its Sequential under "mlp."; mlp2x_gelu's is the connector itself.
      std::string key = name.substr(10);
      if (c.connector == "mlp") key = key.substr(key.rfind("mlp.", 0) == 0 ? 4 : 0);
      state["connector." + key] = t;
    } else if (name.ends_with("embeddings.patch_embedding.weight") && grey_channels == 1) {
      // [Dv, 1, p, p] -> [Dv, 3, p, p], w / 3 each: on R = G = B the convolution sums to the same value.
      const Tensor third = div(t, 3.0);
      state[name] = cat({third, third, third}, 1);
    } else if (name == "llm.model.embed_tokens.weight" || name == "llm.lm_head.weight") {
      // <image>'s embedding row is always replaced by visual tokens; its
      // lm_head row is zero, so its logit is 0 and the others are unchanged.
      state[name] = with_zero_row(t);  // [V + 1, D]
    } else {
      state[name] = t;
    }
  }
  out.llava->load_state_dict(state);
  out.llava->eval();
  out.report.kind = nn::hf_kind_name(hc.kind);
  out.report.parameters = out.llava->num_parameters();
  return out;
}

// ---- the tokenizer and processor files -------------------------------------------------

std::string word_level_tokenizer_json(const Tokenizer& tokenizer) {
  const int64_t V = tokenizer.vocab_size();
  json vocab = json::object();
  for (int64_t i = 0; i < V; ++i) vocab[tokenizer.token(i)] = i;
  vocab[kImageToken] = V;

  json added = json::array();
  for (int64_t id : {kPadId, kBosId, kEosId, kUnkId}) added.push_back(added_token(id, tokenizer.token(id)));
  added.push_back(added_token(V, kImageToken));

  // train/tokenizer.cpp's splitting: runs of ' ', '\t', '\n', '\r' separate
  // words, and ':' ',' '?' are tokens of their own (the added tokens above
  // are matched before this runs, as "<image>" is by vlmc).
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"}, {"pattern", {{"Regex", "[ \\t\\n\\r]+"}}}, {"behavior", "Removed"}, {"invert", false}},
                {{"type", "Split"}, {"pattern", {{"Regex", "[:,?]"}}}, {"behavior", "Isolated"}, {"invert", false}}}}};

  // vlmc's prompts start with <bos> (train/batches.cpp): added as the template says.
  const std::string bos = tokenizer.token(kBosId);
  json bos_piece = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  json post = {{"type", "TemplateProcessing"},
               {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
               {"pair",
                {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
               {"special_tokens", {{bos, {{"id", bos}, {"ids", {kBosId}}, {"tokens", {bos}}}}}}};

  // Tokenizer::decode: words joined by spaces, punctuation attached to the
  // word before it. WordPiece's decoder puts a space before every token but
  // the first (no token starts with its "##"); the Replace steps take it off
  // again before ':' ',' '?'.
  json decoders = json::array();
  decoders.push_back({{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", false}});
  for (const char* p : {":", ",", "?"})
    decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", std::string(" ") + p}}}, {"content", p}});

  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre;
  j["post_processor"] = post;
  j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  j["model"] = {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", tokenizer.token(kUnkId)}};
  return j.dump(2) + "\n";
}

std::string mosaic_tokenizer_config_json(const TrainConfig& c) {
  const Tokenizer tokenizer(c.mosaic_grid);
  json j;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";
  j["processor_class"] = "LlavaProcessor";
  j["bos_token"] = tokenizer.token(kBosId);
  j["eos_token"] = tokenizer.token(kEosId);
  j["pad_token"] = tokenizer.token(kPadId);
  j["unk_token"] = tokenizer.token(kUnkId);
  j["additional_special_tokens"] = {kImageToken};
  j["model_max_length"] = c.lm_max_position_embeddings;
  j["clean_up_tokenization_spaces"] = false;
  j["model_input_names"] = {"input_ids", "attention_mask"};  // no token_type_ids: LLaVA's forward has none
  return j.dump(2) + "\n";
}

std::string mosaic_preprocessor_config_json(const TrainConfig& c) {
  // A 56x56 (4x4: 112x112) mosaic as it is: no resize, no crop; grey -> RGB (three equal
  // channels); pixel / 255; Fashion-MNIST's mean and std on each channel.
  json j;
  j["image_processor_type"] = "CLIPImageProcessor";
  j["processor_class"] = "LlavaProcessor";
  j["do_convert_rgb"] = true;
  j["do_resize"] = false;
  j["size"] = {{"shortest_edge", c.mosaic_side()}};
  j["resample"] = 3;
  j["do_center_crop"] = false;
  j["crop_size"] = {{"height", c.mosaic_side()}, {"width", c.mosaic_side()}};
  j["do_rescale"] = true;
  j["rescale_factor"] = 1.0 / 255.0;
  j["do_normalize"] = true;
  j["image_mean"] = {kPixelMean, kPixelMean, kPixelMean};
  j["image_std"] = {kPixelStd, kPixelStd, kPixelStd};
  return j.dump(2) + "\n";
}

std::string mosaic_processor_config_json(const TrainConfig& c) {
  // With these LlavaProcessor writes one <image> per visual token (what
  // transformers 4.45 calls the new processing), as the model expects.
  json j;
  j["processor_class"] = "LlavaProcessor";
  j["image_token"] = kImageToken;
  j["patch_size"] = c.vision_patch_size;
  j["vision_feature_select_strategy"] = "default";  // the runs drop CLS (build_models: keep_cls = false)
  return j.dump(2) + "\n";
}

std::string mosaic_generation_config_json() {
  json j;
  j["bos_token_id"] = kBosId;
  j["eos_token_id"] = kEosId;
  j["pad_token_id"] = kPadId;
  return j.dump(2) + "\n";
}

// ---- the two formats -------------------------------------------------------------------

void export_checkpoint_hf(const RunCheckpoint& run, const std::string& out) {
  io::check_new_folder(out, "export");
  nn::PretrainedModel model = hf_llava_of(run);
  VLMC_CHECK(!model.config.llava.keep_cls, "export: a run that keeps CLS cannot be written (processor_config.json "
             "says \"default\")");
  // The companion files a run has no source folder for, written with the weights.
  const Tokenizer tokenizer(run.config.mosaic_grid);
  nn::ExportOptions options;
  options.extra_files = {{"tokenizer.json", word_level_tokenizer_json(tokenizer)},
                         {"tokenizer_config.json", mosaic_tokenizer_config_json(run.config)},
                         {"preprocessor_config.json", mosaic_preprocessor_config_json(run.config)},
                         {"processor_config.json", mosaic_processor_config_json(run.config)},
                         {"generation_config.json", mosaic_generation_config_json()}};
  nn::save_pretrained(model, out, options);
}

void export_checkpoint_llava(const RunCheckpoint& run, const std::string& out) {
  const TrainConfig& c = run.config;
  VLMC_CHECK(c.connector == "linear" || c.connector == "mlp" || is_mlp_gelu(c.connector),
             "export --format llava: LLaVA's mm_projector is linear or mlp{N}x_gelu (vlmc's linear, mlp, "
             "mlp{N}x_gelu); the run in ", run.dir, " has connector.type '", c.connector, "'");
  json config;
  config["mm_projector_type"] = c.connector == "mlp" ? "mlp2x_gelu" : c.connector;  // the seed's mlp is mlp2x_gelu
  config["mm_hidden_size"] = c.vision_hidden_size;
  config["hidden_size"] = c.lm_hidden_size;
  config["mm_vision_select_layer"] = c.vision_select_layer;
  config["mm_vision_select_feature"] = "patch";

  io::write_new_folder(out, "export", [&](const fs::path& tmp) {
    nn::save_projector(*run.models.llava->connector, (tmp / "mm_projector.safetensors").string(),
                       nn::ProjectorNaming::llava);
    io::write_file(tmp / "config.json", config.dump(2) + "\n", "export");
  });
}

// ---- the reference sample --------------------------------------------------------------

void write_reference_sample(RunCheckpoint& run, const std::string& path) {
  const TrainConfig& c = run.config;
  Generator eval_gen(seeds::derive(c.seed, seeds::kEval));
  // The evaluation's first mosaics (the first k of a set are the set of k) and their questions.
  constexpr int64_t kTextMosaics = 8;
  const MosaicSet set = build_eval_mosaics(kTextMosaics, eval_gen, c.data_dir, c.mosaic_grid);
  Generator question_gen(seeds::derive(c.seed, seeds::kEvalQuestions));
  std::vector<Sample> samples = instruction_samples(set, c.eval_questions_per_image, question_gen, std::nullopt, c.image_first);
  const Sample sample = samples.at(0);  // of mosaic 0
  const Tokenizer tokenizer(c.mosaic_grid);
  std::vector<int64_t> ids = tokenizer.encode(sample.prompt, {.bos = true, .strict = true});
  const int64_t T = static_cast<int64_t>(ids.size());

  NoGradGuard no_grad;
  nn::LlavaModel& llava = *run.models.llava;
  const Tensor pixels = encoder_pixels(set, {0});  // [1, 1, 56, 56], f32 as the exported weights
  auto logits_of = [&](const std::vector<int64_t>& seq) {
    const Tensor input = Tensor::from_vector(seq, {1, static_cast<int64_t>(seq.size())});
    return llava.forward(input, pixels).logits.select(0, 0);  // [L, V]
  };
  const Tensor prompt_logits = logits_of(ids);
  std::vector<int64_t> answer;  // greedy: the whole sequence again per token (a few tokens of a tiny model)
  Tensor last = prompt_logits;
  for (int64_t step = 0; step < kMaxAnswerTokens; ++step) {
    const int64_t next = static_cast<int64_t>(argmax(last.select(0, last.size(0) - 1), 0).item());
    answer.push_back(next);
    if (next == kEosId) break;
    ids.push_back(next);
    last = logits_of(ids);
  }
  std::map<std::string, Tensor> tensors;
  tensors["image"] = set.images.select(0, 0).contiguous();  // [56, 56]
  tensors["pixel_values"] = pixels.contiguous();
  tensors["input_ids"] = Tensor::from_vector(std::vector<int64_t>(ids.begin(), ids.begin() + T), {T});
  tensors["logits"] = prompt_logits.contiguous();
  tensors["answer_ids"] = Tensor::from_vector(answer, {static_cast<int64_t>(answer.size())});
  // The tokenizer's side: vlmc's ids (with <bos>, as prompts are encoded) of
  // the evaluation's texts, captions and questions and their answers.
  json texts = json::array(), text_ids = json::array();
  const std::vector<Sample> captions = caption_samples(set);
  samples.insert(samples.end(), captions.begin(), captions.end());
  for (const Sample& s : samples)
    for (const std::string& text : {s.prompt, s.answer, s.text()}) {
      texts.push_back(text);
      text_ids.push_back(tokenizer.encode(text, {.bos = true, .strict = true}));
    }
  io::save_safetensors(path, tensors,
                       {{"prompt", sample.prompt}, {"answer", sample.answer}, {"texts", texts.dump()},
                        {"text_ids", text_ids.dump()}});
}

}  // namespace vlmc::train
