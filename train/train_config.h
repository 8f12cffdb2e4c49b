// Every setting of `vlmc train` / `vlmc eval`: one struct, each field a TOML key
// and a command-line flag of the same dotted name (register_train_config), so
// configs/fashion-mosaic.toml, --help and runs/<name>/config.toml all list the
// same keys with the same defaults. The defaults are the fashion-mosaic recipe
// (docs/training.md): every stage at these sizes fits in a few minutes on 2 cores.
#pragma once

#include <cstdint>
#include <string>

#include "modules/clip_vision.h"
#include "modules/connector.h"
#include "modules/llama.h"
#include "train/config_schema.h"

namespace vlmc::train {

// One optimisation stage: AdamW + linear warmup + cosine decay (optim/).
struct StageSettings {
  int64_t steps = 0;
  int64_t batch_size = 32;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double warmup_ratio = 0.03;
  double min_lr_ratio = 0.0;
  double max_grad_norm = 0.0;  // 0 = no clipping
  // Micro-batches of batch_size per optimizer step (Hugging Face's name): the
  // effective batch is batch_size * gradient_accumulation_steps.
  int64_t gradient_accumulation_steps = 1;
};

struct TrainConfig {
  // [run]
  std::string name = "fashion-mosaic";
  std::string runs_dir = "runs";
  std::string cache_dir = "runs/cache";  // stage-0 models, shared by runs with the same stage-0 settings
  int64_t seed = 0;
  // The connector's initial weights and stages 1-2's batch order; -1: `seed`.
  // Stage 0 and the data do not depend on it, so runs differing only here
  // share stage 0's cache (`vlmc experiment connectors --seeds N`).
  int64_t train_seed = -1;
  int64_t stages12_seed() const { return train_seed >= 0 ? train_seed : seed; }
  std::string device = "cpu";      // "cpu", "cuda" or "cuda:N"
  std::string precision = "f32";   // "f32", or "bf16": bf16 operands for the matrix work (core/autocast.h)
  int64_t checkpoint_every = 100;  // optimizer steps between checkpoints (and at each stage's end)
  int64_t keep_checkpoints = 2;
  double log_every_s = 10.0;       // progress lines when stderr is not a terminal
  double collective_timeout_s = 300.0;  // data-parallel jobs: longest wait for the other processes
  int64_t zero_stage = 0;  // data-parallel jobs: 1 shards AdamW's state over the processes (ZeRO stage 1)
  int64_t skip_nonfinite = 0;  // steps with a NaN/inf gradient norm skipped before a stage stops

  // [data]
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t train_mosaics = 8000;    // the pool stages 1 and 2 draw from (train split only)
  int64_t questions_per_image = 4; // stage-2 questions made per pool mosaic
  // The last N items of Fashion-MNIST's train split: never trained on (stage 0
  // and the pool draw from the others), the validation mosaics draw from them.
  int64_t validation_items = 5000;
  // Items per mosaic side: 2 (the main job, four items) or 4 (sixteen items,
  // the task where detail matters: configs/fashion-mosaic-4x4.toml).
  int64_t mosaic_grid = 2;
  int64_t mosaic_side() const;  // pixels: 56 or 112 (train/mosaic.h's mosaic_side)
  int64_t patch_grid() const;   // the encoder's patch grid side: mosaic_side() / vision.patch_size
  // Questions as "<image> {q}" instead of "{q} <image>" (train/mosaic.h).
  bool image_first = false;
  // "mosaic" (the built-in Fashion-MNIST job above), or "llava": LLaVA's JSON
  // and image folder over Hugging Face checkpoints ([model]; train/llava_trainer.h).
  std::string data_format = "mosaic";
  std::string data_json;            // llava: blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json, ...
  std::string data_image_folder;    // llava: the folder the "image" paths are relative to
  std::string data_template = "plain";  // llava: plain (stage 1), vicuna_v1, llava_llama_2 (stage 2)
  std::string data_image_aspect_ratio = "pad";  // llava: pad (LLaVA-1.5) or square (resize + crop only)
  int64_t data_model_max_length = 2048;  // llava: tokens per sample after splicing (longer ones are cut, counted)
  int64_t data_epochs = 1;          // llava: passes over data.json when the stage's steps is 0
  int64_t data_workers = 2;         // llava: loader threads (decode, preprocess, tokenize)
  int64_t data_prefetch = 4;        // llava: batches ready or in the making ahead of the step
  bool data_strict = false;         // llava: the first bad sample is an error (else skipped and counted)
  bool data_group_by_modality_length = false;  // llava: LLaVA's length grouping of image / text-only samples

  // [model]: the checkpoints a data.format = "llava" run trains (Hugging Face folders)
  std::string model_vision_tower;    // a CLIPVisionModel or CLIPModel folder (with preprocessor_config.json)
  std::string model_language_model;  // a LlamaForCausalLM folder (with its SentencePiece tokenizer)
  std::string model_projector;       // stage 2: stage 1's projector file (LLaVA's pretrain_mm_mlp_adapter)
  std::string model_pretrained;      // instead of the two folders: a whole LLaVA (train/llava_sources.h)
  std::string model_weights_dtype = "file";  // frozen weights: file (bf16 stays bf16), bf16 or f32
  int64_t model_stage = 1;           // 1: the projector alone; 2: the projector and the language model
  int64_t model_vision_select_layer = -2;         // LLaVA's mm_vision_select_layer
  std::string model_vision_select_feature = "patch";  // patch (CLS dropped) or cls_patch
  bool model_gradient_checkpointing = false;  // recompute each decoder layer in the backward (core/checkpoint.h)

  // [vision]: CLIP's vision architecture (Hugging Face CLIPVisionConfig keys)
  int64_t vision_hidden_size = 128;
  int64_t vision_intermediate_size = 256;
  int64_t vision_num_attention_heads = 4;
  int64_t vision_num_hidden_layers = 2;
  int64_t vision_patch_size = 14;  // a 4x4 grid: 2x2 patches per item
  std::string vision_hidden_act = "gelu";
  int64_t vision_select_layer = -1;  // the hidden state the connector (and the stage-0 head) read

  // [language]: LLaMA's architecture (Hugging Face LlamaConfig keys)
  int64_t lm_hidden_size = 128;
  int64_t lm_intermediate_size = 256;
  int64_t lm_num_hidden_layers = 2;
  int64_t lm_num_attention_heads = 4;
  int64_t lm_num_key_value_heads = 4;
  int64_t lm_max_position_embeddings = 256;
  double lm_rope_theta = 10000.0;
  double lm_initializer_range = 0.06;  // HF's 0.02 learns content look-ups far slower at this size

  // [connector]
  std::string connector = "mlp2x_gelu";  // nn::projector_types()
  int64_t connector_target_size = 2;     // downsample, c-abstractor: pooled grid side
  int64_t connector_num_conv_layers = 1; // c-abstractor
  int64_t connector_max_tokens = 8;      // dynamic: tokens kept
  int64_t connector_min_tokens = 4;      // dynamic
  int64_t connector_merge_size = 2;      // patch-merger, pixel-shuffle: r x r patches per token
  int64_t connector_num_latents = 4;     // perceiver: learned queries (visual tokens)
  int64_t connector_resampler_depth = 2;     // perceiver
  int64_t connector_resampler_heads = 4;     // perceiver
  int64_t connector_resampler_head_dim = 32; // perceiver
  int64_t connector_resampler_kv_heads = 4;  // perceiver
  int64_t connector_reg_depth = 1;           // honeybee: RegNet bottlenecks per stage

  // [stage0]: pre-training of the encoder (per-quadrant classes) and of the
  // language model (text in the image slots), then both frozen.
  StageSettings stage0_vision{1000, 64, 3e-3, 0.05, 0.05, 0.0, 1.0};
  StageSettings stage0_language{3000, 32, 1e-3, 0.01, 0.05, 0.0, 1.0};
  // Extra "how many" and "where" questions per mosaic in the stage-0 text:
  // the kinds a small model learns last from an even mix (docs/training.md).
  int64_t stage0_extra_questions = 2;

  // [stage1]: connector only (LLaVA's feature alignment)
  StageSettings stage1{300, 32, 1e-3, 0.0, 0.03, 0.0, 0.0};
  // [stage2]: connector + language model (LLaVA's instruction tuning)
  StageSettings stage2{1500, 32, 5e-4, 0.0, 0.03, 0.0, 1.0};
  double stage2_connector_lr = 1e-3;  // LLaVA's mm_projector_lr; 0 = stage2.lr
  // Stage-1 captions mixed into stage 2, per stage-2 question (0.25: one
  // caption for every four questions), as LLaVA-1.5's mixture keeps general
  // data beside the instructions; 0 = questions only.
  double stage2_caption_mix = 0.0;

  // [eval]
  int64_t eval_mosaics = 1000;          // test split only, evaluated once at the end of the run
  // Validation: mosaics of the held-out train items (data.validation_items),
  // scored every eval.every optimizer steps of stages 1 and 2 and after each.
  int64_t eval_validation_mosaics = 200;
  int64_t eval_every = 150;             // 0: only after each stage
  int64_t eval_seed = 0;                // the evaluation mosaics and questions, whatever run.seed is
  int64_t eval_questions_per_image = 4;
  int64_t eval_batch_size = 128;

  bool llava_data() const { return data_format == "llava"; }
  // The stage a llava run trains (stage1 or stage2's settings).
  const StageSettings& llava_stage() const { return model_stage == 2 ? stage2 : stage1; }

  nn::CLIPVisionConfig vision_config() const;
  nn::LlamaConfig language_config(int64_t vocab_size) const;
  nn::ConnectorConfig connector_config() const;  // on the mosaic task's encoder and language model
  // The [connector] options on a model of these widths and patch grid side
  // (also the Hugging Face path, where the folders give the widths).
  nn::ConnectorConfig connector_config(int64_t dim_vision, int64_t dim_llm, int64_t grid_size) const;
  // Throws a vlmc::Error naming the first bad key.
  void validate() const;
  // The [model] and data.* keys of a data.format = "llava" run (part of validate).
  void validate_llava() const;
};

// Binds every field to its dotted key ("stage1.lr", "vision.hidden_size", ...).
void register_train_config(ConfigSchema& schema, TrainConfig& config);

}  // namespace vlmc::train
