// The memory a training step needs, estimated from the settings alone,
// without allocating: `vlmc plan` prints it, and run_training refuses a
// config whose estimate exceeds the memory available before it allocates
// anything (docs/plan.md lists every term).
//
// The model counts, per process and per stage:
//   weights      every parameter resident (all models, by dtype)
//   gradients    one f32 gradient per trained parameter
//   optimizer    AdamW's m and v (f32) per trained parameter, over the P
//                processes with ZeRO-1 (run.zero_stage 1)
//   activations  what autograd keeps for the backward of one micro-batch:
//                the tensors each op's backward closure captures (linear its
//                input when its weight trains, rms_norm its input, the fused
//                attention q, k, v and the log-sum-exp, the product-form
//                attention its probabilities [B, H, T, S], SiLU and mul their
//                inputs, cross_entropy a copy of the logits ...), derived
//                from core/ops/*.cpp; in bf16 autocast the bf16 operand copies
//   backward     what the backward adds on top, as the graph is released
//                only at its end: the logits' gradient twice (dl and the
//                narrow's), and under half a layer of input gradients (a
//                factor fitted to the measured tensor peak of one step)
//   data         what the trainer holds beside the models (Fashion-MNIST,
//                the mosaic pool, the frozen feature cache)
// and peak = weights + gradients + optimizer + data + max(activations +
// backward, transient forward-only work such as the frozen tower's pass).
//
// Byte counts are doubles: a plan must hold whatever size a flag asks for
// (--stage1.batch_size 2147483648) without overflowing, and an estimate
// needs no more than its first few digits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/train_config.h"

namespace vlmc::train {

// A LLaMA decoder (modules/llama.h).
struct DecoderShape {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  bool tied = false;  // lm_head reads the embedding table
  int64_t head_dim() const { return heads > 0 ? hidden / heads : 0; }
  int64_t kv_hidden() const { return head_dim() * kv_heads; }
};

// A CLIP vision tower (modules/clip_vision.h): tokens = 1 + patches.
struct EncoderShape {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, channels = 1, patch = 14, image = 56;
  int64_t patches() const { return (image / patch) * (image / patch); }
  int64_t tokens() const { return patches() + 1; }
  int64_t head_dim() const { return heads > 0 ? hidden / heads : 0; }
};

// Parameter counts, as Module::num_parameters() counts them.
double decoder_parameters(const DecoderShape& s);
double encoder_parameters(const EncoderShape& s);
// LLaVA's mlp{depth}x_gelu projector (depth 1: linear).
double mlp_projector_parameters(int64_t dim_vision, int64_t dim_llm, int64_t depth);

// How a step runs, as far as what it keeps is concerned.
struct StepMode {
  bool trains_weights = true;  // the decoder's / encoder's weights require grad (else only inputs flow)
  bool bf16 = false;           // run.precision bf16: autocast's bf16 operand copies, product-form attention
  bool cuda = false;           // attention in product form for T * S >= 4096 (core/ops/attention.cpp)
  bool checkpointing = false;  // keep layer inputs only, and one layer's activations during its recompute
  bool frozen_lowp = false;    // frozen weights held in bf16 (linear_lowp_weight)
};

struct MemoryTerm {
  std::string category;  // weights, gradients, optimizer, activations, backward, data, transient
  std::string name;      // what it is: "decoder: q, k after rotary (mul saves its operands)"
  double bytes = 0;
};

// The saved tensors of one micro-batch through the decoder: B sequences of L
// positions; the terms are summed over the layers.
std::vector<MemoryTerm> decoder_activation_terms(const DecoderShape& s, int64_t batch, int64_t length,
                                                 const StepMode& mode);
// The same for the vision tower (trained: stage 0's encoder).
std::vector<MemoryTerm> encoder_activation_terms(const EncoderShape& s, int64_t batch, const StepMode& mode);

struct StagePlan {
  std::string stage;      // "stage1"
  std::string batch_key;  // the key that drives the activations: "stage1.batch_size"
  int64_t batch_value = 0;  // its value (the global batch in a data-parallel job)
  std::string data_key;     // the key that drives the data: "data.train_mosaics" ("" when none)
  std::string model_keys;   // what sets the models' sizes: "vision.*, language.*"
  int64_t micro_batch = 0;  // per process
  int64_t length = 0;       // positions per sequence (0 for the encoder's stage)
  double trained_parameters = 0;
  std::vector<MemoryTerm> terms;

  double sum(const std::string& category) const;
  // weights + gradients + optimizer + data + max(activations + backward, transient)
  double peak() const;
};

// Every stage of a fashion-mosaic run (train/trainer.cpp), per process of a
// job of `world` processes. Builds nothing larger than a few strings: the
// sequence lengths come from the longest caption and question the sample
// templates can make, the visual tokens from the connector's settings.
std::vector<StagePlan> plan_training(const TrainConfig& config, int world = 1);

// A LLaVA of real size, as the recipe trains it: stage 1 (projector
// only, LM and tower frozen) or stage 2 (projector + LM, tower frozen).
struct LlavaDescription {
  std::string name;  // preset or config.json path
  DecoderShape language;
  EncoderShape vision;
  int64_t projector_depth = 2;  // mlp2x_gelu
  int64_t visual_tokens = 576;  // patches (LLaVA drops CLS)
};
struct LlavaPlanSettings {
  int stage = 1;
  int64_t batch = 16;            // per process
  int64_t length = 2048;         // spliced positions (visual tokens + text)
  int64_t accumulation = 1;      // micro-batches per step: no memory of their own
  int64_t processes = 1;
  int zero_stage = 0;
  bool checkpointing = false;
  bool frozen_bf16 = true;       // frozen LM and tower weights in bf16 (else f32)
  bool bf16_autocast = true;     // bf16 products (LLaVA trains in bf16)
  bool cuda = true;              // the device the plan is for
};
// The presets: llava-1.5-7b, llava-1.5-13b, tinyllama-clip-b16.
std::vector<std::string> llava_presets();
LlavaDescription llava_preset(const std::string& name);
// A Hugging Face folder or config.json (LlavaForConditionalGeneration,
// LlavaLlamaForCausalLM, or a LlamaForCausalLM with CLIP ViT-L/14-336 assumed).
LlavaDescription llava_from_hf_config(const std::string& path);
StagePlan plan_llava(const LlavaDescription& model, const LlavaPlanSettings& settings);

// The step of a data.format = "llava" run (train/llava_trainer.h) per
// process of `world`, from the config.json files of model.vision_tower and
// model.language_model alone; the length is data.model_max_length (every
// sample at the longest: an upper bound). Throws naming the folder that is
// not a CLIP tower or a LLaMA.
StagePlan plan_llava_run(const TrainConfig& config, int world = 1);

// "24.1 GB" (decimal units, as GPU memory is sold), "512 B".
std::string format_bytes(double bytes);
// "141GB", "80 GiB", "1.5TB", "1024MB" -> bytes; throws naming `what`.
double parse_bytes(const std::string& text, const std::string& what);

// Memory this process may use: the environment's VLMC_MEMORY_LIMIT ("8GB";
// "off": no check) when set, else MemAvailable of /proc/meminfo, or less where
// the process's cgroup limit leaves less (core/cgroup.h: a container's limit
// leaves /proc/meminfo showing the host). Read once, so the figure and the
// source it names come from the same reading.
struct AvailableMemory {
  double bytes = 0;  // 0 = unknown, or no check
  // "VLMC_MEMORY_LIMIT", "MemAvailable in /proc/meminfo", or "the cgroup's
  // limit less its usage (<the limit's file>)".
  std::string source;
};
AvailableMemory available_memory();

// Throws a vlmc::Error, before anything is allocated, when a stage's peak
// exceeds `available` bytes: it names the stage, the estimate and its largest
// terms, and the key to change.
void check_plan_fits(const std::vector<StagePlan>& plans, double available, const std::string& where);

}  // namespace vlmc::train
