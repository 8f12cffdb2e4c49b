// Hugging Face model folders -> vlmc models: LLaMA, CLIP's vision tower and
// LLaVA in both transformers key layouts and the original LLaVA layout.
//
//   auto loaded = nn::load_pretrained("llava-1.5-7b-hf");
//   loaded.llava->forward(input_ids, pixel_values);       // logits as transformers computes them
//   std::puts(loaded.report.summary().c_str());
//
// Key layouts (the file's key -> vlmc's module):
//   LlamaForCausalLM                model.*, lm_head.weight (absent when tied)      -> LlamaForCausalLM as is
//   CLIPVisionModel / CLIPModel     vision_model.* (CLIPModel: text_model.*,        -> CLIPVisionModel as is
//                                   *_projection, logit_scale ignored)
//   LlavaForConditionalGeneration   language_model.{model,lm_head}.*                -> llm.*
//     transformers <= 4.51          vision_tower.vision_model.*                     -> vision_encoder.*
//                                   multi_modal_projector.linear_{1,2}.*            -> connector.{0,2}.*
//     newer transformers            model.language_model.* / lm_head.*, model.vision_tower.*,
//                                   model.multi_modal_projector.*
//   LlavaLlamaForCausalLM           model.*, lm_head.weight                         -> llm.*
//     (original LLaVA)              model.mm_projector.{0,2}.* (or .weight/.bias)   -> connector.*
//                                   the tower from --vision-tower DIR (a CLIPModel or CLIPVisionModel folder);
//                                   model.vision_tower.* in the checkpoint is ignored (and reported)
//
// Loading is all or nothing: every key, shape and dtype is checked against
// the model before the first tensor byte is read, all problems are listed in
// one error naming the file and key, and a model is returned only when every
// tensor was read. Tensors are read one at a time from their shard into the
// parameters (f32 masters; BF16/F16 files are converted as they are read), so
// the host holds the model plus one tensor of the file, never the checkpoint
// twice.
//
// Weights (PretrainedOptions::weights): by default every parameter is an f32
// master (BF16/F16 files converted as they are read). With WeightsDType::file
// the frozen parts, the language model and the vision tower, keep each weight
// matrix in its file's dtype (BF16 and F16 stay 2 bytes; F32/F64 give f32),
// allocated in that dtype before the read, so no f32 copy is ever made; with
// WeightsDType::bf16 they are rounded to bf16 whatever the file holds. Those
// parts are then frozen (requires_grad false; a LLaVA is in stage 1) and
// compute in f32: linear, embedding and the LLaVA splice read the 16-bit
// weights with f32 accumulation (docs/numerics.md). Vectors (norms, biases,
// CLIP's class embedding), CLIP's position table and the LLaVA projector
// (trained in stage 1) stay f32.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "modules/clip_vision.h"
#include "modules/hf_config.h"
#include "modules/hf_layout.h"
#include "modules/llama.h"
#include "modules/llava.h"

namespace vlmc::nn {

// How the frozen parts' weight matrices are held in memory (see above).
enum class WeightsDType : uint8_t {
  f32,   // every parameter an f32 master, nothing frozen beyond LLaVA's stage 2
  file,  // the file's dtype (BF16, F16 kept; F32, F64 -> f32), frozen
  bf16,  // rounded to bf16 whatever the file holds, frozen
};

// "f32", "file", "bf16" <-> WeightsDType; an unknown name is a vlmc::Error naming it.
WeightsDType parse_weights_dtype(const std::string& name);
const char* weights_dtype_name(WeightsDType weights);

struct PretrainedOptions {
  // The vision tower of an original-layout LLaVA checkpoint (LLaVA's
  // mm_vision_tower, downloaded): a CLIPModel or CLIPVisionModel folder.
  // Empty: mm_vision_tower itself, when it is a local folder.
  std::string vision_tower;
  WeightsDType weights = WeightsDType::f32;
};

// Whether the parameter `name` (a state_dict name) of a frozen part is one the
// loader keeps in 16 bits: a matrix (2-D or more) other than CLIP's position
// table, which is added to activations as a tensor rather than read by an op.
bool keeps_low_precision(const std::string& name, const Tensor& parameter);

// Converts those parameters of `module` to `dtype` (bf16 or f16) in place,
// rounding their values to nearest even, and freezes the whole module: what
// the loader does with WeightsDType::bf16, for a model already in memory.
void convert_frozen_weights(Module& module, DType dtype);

// What was loaded, for the user to see.
struct PretrainedReport {
  std::string kind;                                // "LlavaForConditionalGeneration (transformers <= 4.51 keys)"
  std::vector<std::string> files;                  // every safetensors file read
  int64_t tensors = 0;                             // tensors read
  int64_t parameters = 0;                          // elements of the model's parameters
  std::map<std::string, uint64_t> bytes_by_dtype;  // file bytes read, by safetensors dtype ("BF16")
  std::map<std::string, int64_t> ignored;          // file keys not used, counted by what they are
  std::map<std::string, uint64_t> memory_by_dtype; // parameter bytes in memory, by vlmc dtype ("bf16")
  double seconds = 0;
  // "LlavaForConditionalGeneration (...): 7.06 B parameters, 686 tensors (BF16, 14.1 GB read; in memory
  //  bf16 14.1 GB + f32 42 MB) from 3 files in 12.3 s"
  std::string summary() const;
};

struct PretrainedModel {
  std::string dir;          // the folder it came from (the tokenizer and processor files live there)
  HfModelConfig config;
  HfKeyLayout layout = HfKeyLayout::llama;  // the file's key layout
  std::shared_ptr<LlamaForCausalLM> llama;   // llama, llava, llava_original: the language model
  std::shared_ptr<CLIPVisionModel> vision;   // clip_vision, clip, llava, llava_original
  std::shared_ptr<LlavaModel> llava;         // llava, llava_original (holding the two above)
  PretrainedReport report;
};

// The vision tower folder of an original-layout LLaVA (config.kind
// llava_original): `given` (--vision-tower) when set, else mm_vision_tower
// when it names a local model folder (as vlmc train's outputs do), else "".
std::string original_tower_dir(const HfModelConfig& config, const std::string& given);

// Loads the model in `dir` (config.json + model.safetensors or a sharded
// index), in eval mode on the CPU, every parameter frozen except as LLaVA's
// stage 2 would train them (see LlavaModel::set_stage).
PretrainedModel load_pretrained(const std::string& dir, const PretrainedOptions& options = {});

}  // namespace vlmc::nn
