#include "train/train_config.h"

#include <cmath>

#include "core/cuda/runtime.h"
#include "core/device.h"
#include "core/error.h"
#include "data/conversation.h"
#include "modules/hf_checkpoint.h"
#include "modules/llava.h"
#include "train/mosaic.h"

namespace vlmc::train {
namespace {

// A device the trainer can use: parsed, and for CUDA present in this build and
// on this machine, so that a run never starts on the wrong device.
void check_device(const std::string& text, const char* key) {
  Device device;
  try {
    device = Device::parse(text);
  } catch (const Error& e) {
    throw Error(str(key, ": ", e.what()));
  }
  if (!device.is_cuda()) return;
#if !VLMC_WITH_CUDA
  throw Error(str(key, " = '", text, "': this vlmc was built without CUDA (configure with -DVLMC_CUDA=ON)"));
#endif
  const int count = cuda::device_count();
  VLMC_CHECK(count > 0, key, " = '", text, "': no CUDA device is visible on this machine");
  VLMC_CHECK(device.index < count, key, " = '", text, "': this machine has ", count, " CUDA device",
             count == 1 ? "" : "s", " (cuda:0", count > 1 ? str("..cuda:", count - 1) : std::string(), ")");
}

void register_stage(ConfigSchema& s, const std::string& prefix, StageSettings& stage) {
  s.add(prefix + ".steps", &stage.steps, "optimizer steps");
  s.add(prefix + ".batch_size", &stage.batch_size, "samples per step");
  s.add(prefix + ".lr", &stage.lr, "peak learning rate (AdamW)");
  s.add(prefix + ".weight_decay", &stage.weight_decay, "AdamW weight decay (not on biases and norm weights)");
  s.add(prefix + ".warmup_ratio", &stage.warmup_ratio, "linear warmup, as a fraction of the steps");
  s.add(prefix + ".min_lr_ratio", &stage.min_lr_ratio, "cosine decay floor, as a fraction of lr");
  s.add(prefix + ".max_grad_norm", &stage.max_grad_norm, "clip gradients to this global norm (0 = off)");
  s.add(prefix + ".gradient_accumulation_steps", &stage.gradient_accumulation_steps,
        "micro-batches of batch_size per optimizer step");
}

// steps_may_be_zero: a llava run's stage, whose 0 steps means data.epochs passes.
void check_stage(const std::string& prefix, const StageSettings& s, bool steps_may_be_zero = false) {
  if (steps_may_be_zero)
    VLMC_CHECK(s.steps >= 0, prefix, ".steps must be >= 0 (0: data.epochs passes over data.json), got ", s.steps);
  else
    VLMC_CHECK(s.steps >= 1, prefix, ".steps must be >= 1, got ", s.steps);
  VLMC_CHECK(s.batch_size >= 1, prefix, ".batch_size must be >= 1, got ", s.batch_size);
  VLMC_CHECK(s.lr > 0, prefix, ".lr must be > 0, got ", s.lr);
  VLMC_CHECK(s.weight_decay >= 0, prefix, ".weight_decay must be >= 0, got ", s.weight_decay);
  VLMC_CHECK(s.warmup_ratio >= 0 && s.warmup_ratio < 1, prefix, ".warmup_ratio must be in [0, 1), got ",
             s.warmup_ratio);
  VLMC_CHECK(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1, prefix, ".min_lr_ratio must be in [0, 1], got ",
             s.min_lr_ratio);
  VLMC_CHECK(s.max_grad_norm >= 0, prefix, ".max_grad_norm must be >= 0, got ", s.max_grad_norm);
  VLMC_CHECK(s.gradient_accumulation_steps >= 1, prefix, ".gradient_accumulation_steps must be >= 1, got ",
             s.gradient_accumulation_steps);
}

}  // namespace

int64_t TrainConfig::mosaic_side() const { return train::mosaic_side(mosaic_grid); }

int64_t TrainConfig::patch_grid() const { return mosaic_side() / vision_patch_size; }

nn::CLIPVisionConfig TrainConfig::vision_config() const {
  nn::CLIPVisionConfig c;
  c.hidden_size = vision_hidden_size;
  c.intermediate_size = vision_intermediate_size;
  c.num_attention_heads = vision_num_attention_heads;
  c.num_hidden_layers = vision_num_hidden_layers;
  c.num_channels = 1;  // Fashion-MNIST is grey
  c.image_size = mosaic_side();  // G x G mosaics of 28x28 items
  c.patch_size = vision_patch_size;
  c.hidden_act = vision_hidden_act;
  return c;
}

nn::LlamaConfig TrainConfig::language_config(int64_t vocab_size) const {
  nn::LlamaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = lm_hidden_size;
  c.intermediate_size = lm_intermediate_size;
  c.num_hidden_layers = lm_num_hidden_layers;
  c.num_attention_heads = lm_num_attention_heads;
  c.num_key_value_heads = lm_num_key_value_heads;
  c.max_position_embeddings = lm_max_position_embeddings;
  c.rope_theta = lm_rope_theta;
  c.initializer_range = lm_initializer_range;
  return c;
}

nn::ConnectorConfig TrainConfig::connector_config() const {
  return connector_config(vision_hidden_size, lm_hidden_size, patch_grid());
}

nn::ConnectorConfig TrainConfig::connector_config(int64_t dim_vision, int64_t dim_llm, int64_t grid_size) const {
  nn::ConnectorConfig c;
  c.dim_vision = dim_vision;
  c.dim_llm = dim_llm;
  c.grid_size = grid_size;
  c.target_size = connector_target_size;
  c.num_conv_layers = connector_num_conv_layers;
  c.max_tokens = connector_max_tokens;
  c.min_tokens = connector_min_tokens;
  c.max_visual_tokens = grid_size * grid_size;
  c.merge_size = connector_merge_size;
  c.num_latents = connector_num_latents;
  c.resampler_depth = connector_resampler_depth;
  c.resampler_heads = connector_resampler_heads;
  c.resampler_head_dim = connector_resampler_head_dim;
  c.resampler_kv_heads = connector_resampler_kv_heads;
  c.reg_depth = connector_reg_depth;
  return c;
}

void TrainConfig::validate() const {
  VLMC_CHECK(!name.empty() && name.find('/') == std::string::npos && name[0] != '.',
             "run.name must be a plain directory name, got '", name, "'");
  check_device(device, "run.device");
  VLMC_CHECK(precision == "f32" || precision == "bf16", "run.precision: '", precision, "' is not one of f32, bf16");
  VLMC_CHECK(checkpoint_every >= 1, "run.checkpoint_every must be >= 1, got ", checkpoint_every);
  VLMC_CHECK(train_seed >= -1, "run.train_seed must be >= 0, or -1 for run.seed, got ", train_seed);
  VLMC_CHECK(keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1, got ", keep_checkpoints);
  VLMC_CHECK(collective_timeout_s > 0 && std::isfinite(collective_timeout_s),
             "run.collective_timeout_s must be > 0 seconds, got ", collective_timeout_s);
  VLMC_CHECK(zero_stage == 0 || zero_stage == 1, "run.zero_stage must be 0 or 1, got ", zero_stage);
  VLMC_CHECK(skip_nonfinite >= 0, "run.skip_nonfinite must be >= 0, got ", skip_nonfinite);
  VLMC_CHECK(log_every_s >= 0, "run.log_every_s must be >= 0 seconds, got ", log_every_s);
  VLMC_CHECK(train_mosaics >= 1, "data.train_mosaics must be >= 1, got ", train_mosaics);
  VLMC_CHECK(questions_per_image >= 1, "data.questions_per_image must be >= 1, got ", questions_per_image);
  VLMC_CHECK(validation_items >= 1 && validation_items < 60000, "data.validation_items must be in 1..59999 (of the "
             "train split's 60000 items), got ", validation_items);
  VLMC_CHECK(mosaic_grid == 2 || mosaic_grid == 4, "data.mosaic_grid must be 2 or 4 (items per mosaic side), got ",
             mosaic_grid);
  VLMC_CHECK(vision_patch_size >= 1 && mosaic_side() % vision_patch_size == 0 &&
                 patch_grid() % mosaic_grid == 0,
             "vision.patch_size ", vision_patch_size, " must split the ", mosaic_side(), "-pixel mosaic (data.mosaic_grid ",
             mosaic_grid, ") into a patch grid that covers each item with whole patches (2, 4, 7, 14 or 28)");
  for (const auto& [key, value] :
       {std::pair<const char*, int64_t>{"vision.hidden_size", vision_hidden_size},
        {"vision.intermediate_size", vision_intermediate_size},
        {"vision.num_attention_heads", vision_num_attention_heads},
        {"vision.num_hidden_layers", vision_num_hidden_layers}, {"language.hidden_size", lm_hidden_size},
        {"language.intermediate_size", lm_intermediate_size},
        {"language.num_hidden_layers", lm_num_hidden_layers},
        {"language.num_attention_heads", lm_num_attention_heads},
        {"language.num_key_value_heads", lm_num_key_value_heads},
        {"language.max_position_embeddings", lm_max_position_embeddings}})
    VLMC_CHECK(value >= 1, key, " must be >= 1, got ", value);
  VLMC_CHECK(vision_hidden_size % vision_num_attention_heads == 0, "vision.hidden_size ", vision_hidden_size,
             " must be divisible by vision.num_attention_heads ", vision_num_attention_heads);
  VLMC_CHECK(lm_hidden_size % lm_num_attention_heads == 0, "language.hidden_size ", lm_hidden_size,
             " must be divisible by language.num_attention_heads ", lm_num_attention_heads);
  VLMC_CHECK(lm_num_attention_heads % lm_num_key_value_heads == 0, "language.num_attention_heads ",
             lm_num_attention_heads, " must be divisible by language.num_key_value_heads ", lm_num_key_value_heads);
  VLMC_CHECK(lm_initializer_range > 0, "language.initializer_range must be > 0, got ", lm_initializer_range);
  VLMC_CHECK((lm_hidden_size / lm_num_attention_heads) % 2 == 0, "language.hidden_size / num_attention_heads = ",
             lm_hidden_size / lm_num_attention_heads, " must be even (rotary positions rotate pairs)");
  try {
    Generator scratch(0);
    nn::make_projector(connector, vision_hidden_size, lm_hidden_size, connector_config(), scratch);
  } catch (const Error& e) {
    throw Error(std::string("connector.type '") + connector + "' (with the connector.* settings): " + e.what());
  }
  vision_config().validate();
  const int64_t layers = vision_num_hidden_layers + 1;
  VLMC_CHECK(vision_select_layer >= -layers && vision_select_layer < layers, "vision.select_layer ",
             vision_select_layer, " is outside the ", layers, " hidden states");
  language_config(64).validate();
  check_stage("stage0.vision", stage0_vision);
  check_stage("stage0.language", stage0_language);
  VLMC_CHECK(stage0_extra_questions >= 0, "stage0.language.extra_questions_per_image must be >= 0, got ",
             stage0_extra_questions);
  VLMC_CHECK(stage2_connector_lr >= 0, "stage2.connector_lr must be >= 0, got ", stage2_connector_lr);
  VLMC_CHECK(data_format == "mosaic" || data_format == "llava", "data.format: '", data_format,
             "' is not one of mosaic, llava");
  if (llava_data()) {
    validate_llava();
  } else {
    check_stage("stage1", stage1);
    check_stage("stage2", stage2);
  }
  VLMC_CHECK(eval_mosaics >= 1, "eval.mosaics must be >= 1, got ", eval_mosaics);
  VLMC_CHECK(eval_questions_per_image >= 1, "eval.questions_per_image must be >= 1, got ",
             eval_questions_per_image);
  VLMC_CHECK(eval_batch_size >= 1, "eval.batch_size must be >= 1, got ", eval_batch_size);
  VLMC_CHECK(eval_validation_mosaics >= 1, "eval.validation_mosaics must be >= 1, got ", eval_validation_mosaics);
  VLMC_CHECK(eval_every >= 0, "eval.every must be >= 0 steps, got ", eval_every);
  VLMC_CHECK(stage2_caption_mix >= 0 && stage2_caption_mix <= 16, "stage2.caption_mix must be in 0..16 captions "
             "per question, got ", stage2_caption_mix);
}

void TrainConfig::validate_llava() const {
  if (model_pretrained.empty()) {
    VLMC_CHECK(!model_vision_tower.empty(), "model.vision_tower: a data.format = \"llava\" run needs a CLIP folder "
               "(or model.pretrained, a whole LLaVA)");
    VLMC_CHECK(!model_language_model.empty(), "model.language_model: a data.format = \"llava\" run needs a LLaMA "
               "folder (or model.pretrained, a whole LLaVA)");
  }
  VLMC_CHECK(model_stage == 1 || model_stage == 2, "model.stage must be 1 (projector) or 2 (projector and language "
             "model), got ", model_stage);
  data::conversation_template(data_template);  // throws naming the three
  VLMC_CHECK(data_image_aspect_ratio == "pad" || data_image_aspect_ratio == "square", "data.image_aspect_ratio: '",
             data_image_aspect_ratio, "' is not one of pad, square");
  VLMC_CHECK(data_model_max_length >= 2, "data.model_max_length must be >= 2, got ", data_model_max_length);
  VLMC_CHECK(data_epochs >= 1, "data.epochs must be >= 1, got ", data_epochs);
  VLMC_CHECK(data_workers >= 0 && data_workers <= 256, "data.workers must be in 0..256, got ", data_workers);
  VLMC_CHECK(data_prefetch >= 1 && data_prefetch <= 1024, "data.prefetch must be in 1..1024, got ", data_prefetch);
  nn::parse_weights_dtype(model_weights_dtype);
  VLMC_CHECK(model_vision_select_feature == "patch" || model_vision_select_feature == "cls_patch",
             "model.vision_select_feature: '", model_vision_select_feature, "' is not one of patch, cls_patch");
  check_stage(model_stage == 2 ? "stage2" : "stage1", llava_stage(), true);
}

void register_train_config(ConfigSchema& s, TrainConfig& c) {
  s.add("run.name", &c.name, "run name: outputs go to <runs_dir>/<name>/");
  s.add("run.runs_dir", &c.runs_dir, "directory of the runs");
  s.add("run.cache_dir", &c.cache_dir, "stage-0 models, reused by every run with the same stage-0 settings");
  s.add("run.seed", &c.seed, "seed of the weights, the data and the questions");
  s.add("run.train_seed", &c.train_seed,
        "seed of the connector's initial weights and of stage 1 and 2's batch order (-1: run.seed); stage 0 "
        "does not depend on it, so runs that differ only here share stage 0");
  s.add("run.device", &c.device, "device to train and evaluate on: cpu, cuda or cuda:N");
  s.add_alias("run.device", "--device");
  s.add("run.precision", &c.precision,
        "f32, or bf16: bf16 operands with f32 accumulation for every matrix product; f32 master weights, optimizer, "
        "softmax, norms and loss");
  s.set_choices("run.precision", {"f32", "bf16"});
  s.add_alias("run.precision", "--precision");
  s.add("run.checkpoint_every", &c.checkpoint_every, "steps between checkpoints (also at each stage's end)");
  s.add("run.keep_checkpoints", &c.keep_checkpoints, "checkpoints kept per stage");
  s.add("run.log_every_s", &c.log_every_s, "seconds between progress lines when stderr is not a terminal");
  s.add("run.skip_nonfinite", &c.skip_nonfinite,
        "steps with a NaN or infinite gradient norm to skip (no update) before a stage stops; 0: stop at the first");
  s.add_alias("run.skip_nonfinite", "--skip-nonfinite");
  s.add("run.collective_timeout_s", &c.collective_timeout_s,
        "data-parallel jobs (mpirun): seconds a process waits for the others before stopping the job");
  s.add("run.zero_stage", &c.zero_stage,
        "data-parallel jobs (mpirun): 0 = every process holds the whole AdamW state; 1 = each holds its share "
        "(ZeRO stage 1: same results, bit for bit, less memory)");

  s.add("data.dir", &c.data_dir, "Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)");
  s.add("data.train_mosaics", &c.train_mosaics, "training mosaics for stages 1 and 2 (train split)");
  s.add("data.questions_per_image", &c.questions_per_image, "stage-2 questions per training mosaic");
  s.add("data.validation_items", &c.validation_items,
        "the last N items of the train split, never trained on: the validation mosaics' items");
  s.add("data.mosaic_grid", &c.mosaic_grid,
        "items per mosaic side: 2 (four items, 56 pixels) or 4 (sixteen items, 112 pixels; cells a1..d4)");
  s.add("data.image_first", &c.image_first,
        "questions put <image> before the question (LLaVA's \"<image>\\n{q}\") instead of after it");
  s.add("data.format", &c.data_format,
        "mosaic: the built-in Fashion-MNIST job; llava: LLaVA's JSON and images over [model]'s checkpoints");
  s.set_choices("data.format", {"mosaic", "llava"});
  s.add("data.json", &c.data_json, "llava: the samples, a JSON list or JSONL (LLaVA's format)");
  s.add("data.image_folder", &c.data_image_folder, "llava: the folder the samples' image paths are relative to");
  s.add("data.template", &c.data_template,
        "llava: conversation template: plain (stage 1), vicuna_v1 or llava_llama_2 (stage 2)");
  s.set_choices("data.template", {"plain", "vicuna_v1", "llava_llama_2"});
  s.add("data.image_aspect_ratio", &c.data_image_aspect_ratio,
        "llava: pad (LLaVA-1.5: expand to a square of the mean colour) or square (the processor alone)");
  s.set_choices("data.image_aspect_ratio", {"pad", "square"});
  s.add("data.model_max_length", &c.data_model_max_length,
        "llava: tokenizer.model_max_length: longer samples are cut (and counted in results.json)");
  s.add("data.epochs", &c.data_epochs, "llava: passes over data.json when the stage's steps is 0");
  s.add("data.workers", &c.data_workers, "llava: loader threads that decode, preprocess and tokenize ahead");
  s.add("data.prefetch", &c.data_prefetch, "llava: batches ready or in the making ahead of the step");
  s.add("data.strict", &c.data_strict,
        "llava: the first bad sample (missing or corrupt image, bad conversation) stops the run, naming it; "
        "false: skipped, counted and named in results.json");
  s.add("data.group_by_modality_length", &c.data_group_by_modality_length,
        "llava: LLaVA's group_by_modality_length (batches of image samples and of text-only samples)");

  s.add("model.vision_tower", &c.model_vision_tower,
        "llava: a Hugging Face CLIPVisionModel or CLIPModel folder (its preprocessor_config.json included)");
  s.add_alias("model.vision_tower", "--vision-tower");
  s.add("model.language_model", &c.model_language_model,
        "llava: a Hugging Face LlamaForCausalLM folder (its SentencePiece tokenizer included)");
  s.add("model.projector", &c.model_projector,
        "llava: a projector file to start from (stage 1's mm_projector.safetensors; LLaVA's mm_projector.bin "
        "converted by scripts/bin_to_safetensors.py)");
  s.add("model.pretrained", &c.model_pretrained,
        "llava: instead of model.vision_tower + model.language_model, a whole LLaVA to train further: a "
        "transformers LlavaForConditionalGeneration folder or LLaVA's original layout (its tower from "
        "model.vision_tower when its mm_vision_tower is no local folder)");
  s.add("model.weights_dtype", &c.model_weights_dtype,
        "llava: frozen weights as in the file (file), rounded to bf16, or f32; trained ones are f32");
  s.set_choices("model.weights_dtype", {"file", "bf16", "f32"});
  s.add("model.stage", &c.model_stage,
        "llava: 1 trains the projector alone (stage1.*), 2 the projector and the language model (stage2.*)");
  s.add("model.vision_select_layer", &c.model_vision_select_layer,
        "llava: the tower's hidden state the projector reads (mm_vision_select_layer)");
  s.add("model.vision_select_feature", &c.model_vision_select_feature,
        "llava: patch (CLS dropped, LLaVA-1.5) or cls_patch");
  s.set_choices("model.vision_select_feature", {"patch", "cls_patch"});
  s.add("model.gradient_checkpointing", &c.model_gradient_checkpointing,
        "llava: keep each decoder layer's input only and run its forward again in the backward (the same "
        "gradients, far less activation memory, one more forward of the language model per step)");

  s.add("vision.hidden_size", &c.vision_hidden_size, "CLIPVisionConfig.hidden_size");
  s.add("vision.intermediate_size", &c.vision_intermediate_size, "CLIPVisionConfig.intermediate_size");
  s.add("vision.num_attention_heads", &c.vision_num_attention_heads, "CLIPVisionConfig.num_attention_heads");
  s.add("vision.num_hidden_layers", &c.vision_num_hidden_layers, "CLIPVisionConfig.num_hidden_layers");
  s.add("vision.patch_size", &c.vision_patch_size, "CLIPVisionConfig.patch_size (image_size is 28 data.mosaic_grid)");
  s.add("vision.hidden_act", &c.vision_hidden_act, "CLIPVisionConfig.hidden_act");
  s.set_choices("vision.hidden_act", nn::clip_hidden_acts());
  s.add("vision.select_layer", &c.vision_select_layer,
        "hidden state the connector reads (LLaVA's mm_vision_select_layer; -1 = last)");

  s.add("language.hidden_size", &c.lm_hidden_size, "LlamaConfig.hidden_size");
  s.add("language.intermediate_size", &c.lm_intermediate_size, "LlamaConfig.intermediate_size");
  s.add("language.num_hidden_layers", &c.lm_num_hidden_layers, "LlamaConfig.num_hidden_layers");
  s.add("language.num_attention_heads", &c.lm_num_attention_heads, "LlamaConfig.num_attention_heads");
  s.add("language.num_key_value_heads", &c.lm_num_key_value_heads, "LlamaConfig.num_key_value_heads");
  s.add("language.max_position_embeddings", &c.lm_max_position_embeddings,
        "LlamaConfig.max_position_embeddings (longest spliced sequence)");
  s.add("language.rope_theta", &c.lm_rope_theta, "LlamaConfig.rope_theta");
  s.add("language.initializer_range", &c.lm_initializer_range,
        "LlamaConfig.initializer_range: std of the normal initial weights and embeddings");

  s.add("connector.type", &c.connector, "projector: LLaVA's names or the seed's connectors");
  s.add("connector.target_size", &c.connector_target_size, "downsample / c-abstractor / ldp-v2 / honeybee: pooled grid side");
  s.add("connector.num_conv_layers", &c.connector_num_conv_layers, "c-abstractor: conv + BN + GELU blocks");
  s.add("connector.max_tokens", &c.connector_max_tokens, "dynamic: visual tokens kept");
  s.add("connector.min_tokens", &c.connector_min_tokens, "dynamic: lower bound on kept tokens");
  s.add("connector.merge_size", &c.connector_merge_size,
        "patch-merger / pixel-shuffle: each merge_size x merge_size window of patches becomes one token");
  s.add("connector.num_latents", &c.connector_num_latents, "perceiver / qwen-resampler: learned queries, the visual tokens they emit (qwen-resampler: a square)");
  s.add("connector.resampler_depth", &c.connector_resampler_depth, "perceiver: cross-attention layers");
  s.add("connector.resampler_heads", &c.connector_resampler_heads, "perceiver / qwen-resampler: query heads");
  s.add("connector.resampler_head_dim", &c.connector_resampler_head_dim, "perceiver: width of each head");
  s.add("connector.resampler_kv_heads", &c.connector_resampler_kv_heads,
        "perceiver: key/value heads (a divisor of resampler_heads)");
  s.add("connector.reg_depth", &c.connector_reg_depth, "honeybee: RegNet bottlenecks per stage (Honeybee: 3)");

  register_stage(s, "stage0.vision", c.stage0_vision);
  register_stage(s, "stage0.language", c.stage0_language);
  s.add("stage0.language.extra_questions_per_image", &c.stage0_extra_questions,
        "extra \"how many\" and \"where\" questions (each) per mosaic in the language model's pre-training text");
  register_stage(s, "stage1", c.stage1);
  register_stage(s, "stage2", c.stage2);
  s.add("stage2.connector_lr", &c.stage2_connector_lr, "the connector's own peak lr in stage 2 (0 = stage2.lr)");
  s.add("stage2.caption_mix", &c.stage2_caption_mix,
        "stage-1 captions mixed into stage 2 per question (0.25: one per four questions; 0 = none)");

  s.add("eval.mosaics", &c.eval_mosaics, "held-out mosaics (test split), evaluated once at the end");
  s.add("eval.validation_mosaics", &c.eval_validation_mosaics,
        "validation mosaics (of data.validation_items), scored during stages 1 and 2");
  s.add("eval.every", &c.eval_every, "optimizer steps between validations in stages 1 and 2 (0: after each stage only)");
  s.add("eval.seed", &c.eval_seed, "seed of the evaluation mosaics and questions, independent of run.seed");
  s.add("eval.questions_per_image", &c.eval_questions_per_image, "questions asked per held-out mosaic");
  s.add("eval.batch_size", &c.eval_batch_size, "samples per evaluation forward");
}

}  // namespace vlmc::train
