// Text generation over a LlamaForCausalLM with a KV cache (modules/kv_cache.h):
// one prefill forward over the prompt, then one forward per new token, each
// token chosen greedily or sampled as Hugging Face's generate does it with
// do_sample=True (temperature, then top-k, then top-p, then a multinomial
// draw). The prompt arrives as embeddings, so LLaVA's spliced inputs
// (LlavaModel::prepare_inputs) go in as they are; generate_from_ids starts
// from token ids. docs/generation.md describes the rules and the timings.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "modules/llama.h"

namespace vlmc::nn {

struct GenerationConfig {
  int64_t max_new_tokens = 32;        // >= 0
  double temperature = 0;             // 0 = greedy (argmax); > 0 = sampling
  double top_p = 1;                   // in (0, 1]; 1 = no nucleus filter (sampling only)
  int64_t top_k = 0;                  // 0 = no top-k filter (sampling only)
  uint64_t seed = 0;                  // the Philox stream of the draws (sampling only)
  std::vector<int64_t> eos_token_ids;  // generation stops after any of them (it is kept)
  bool keep_prompt_logits = false;    // fill GenerationResult::prompt_logits (costs the head over the prompt)
  // The prompt's forward under autocast (every product's operands rounded to
  // bf16, f32 accumulation: torch.autocast's bf16), through oneDNN's bf16 kernel
  // where the CPU has one. The decode steps stay f32: one token's products are
  // bound by reading the weights, and under autocast attention would round the
  // whole KV cache again every step (8.50 against 11.31 tokens/s, docs/generation.md).
  bool prefill_bf16 = false;

  // Throws vlmc::Error naming the first invalid field.
  void validate() const;
};

struct GenerationResult {
  std::vector<int64_t> ids;  // the new tokens only, the EOS that stopped them included
  bool stopped_by_eos = false;
  Tensor prompt_logits;      // [1, T, V] when keep_prompt_logits, else undefined
  double prefill_seconds = 0;  // the prompt's forward and the first token's choice
  double decode_seconds = 0;   // every later token: its forward and its choice
  // (ids.size() - 1) / decode_seconds: tokens per second after the first (0 when fewer than 2).
  double decode_tokens_per_second() const;
};

// Called with each new id as soon as it is chosen (streaming).
using TokenCallback = std::function<void(int64_t id)>;

// Generates from prompt embeddings inputs_embeds [1, T, D] (T >= 1, the
// model's dtype and device). The cache is made here with capacity
// T + max_new_tokens; when that exceeds max_position_embeddings it is an
// error before anything runs. No autograd.
GenerationResult generate(LlamaForCausalLM& model, const Tensor& inputs_embeds, const GenerationConfig& config,
                          const TokenCallback& on_token = nullptr);
// The same from token ids i64 [1, T] (any device): the embedding lookup first.
GenerationResult generate_from_ids(LlamaForCausalLM& model, const Tensor& input_ids, const GenerationConfig& config,
                                   const TokenCallback& on_token = nullptr);
// The reference without a cache: every step runs LlamaForCausalLM::forward
// over the prompt and all tokens chosen so far (O(L²) work). It chooses
// tokens with the same rules and draws, so for a config it returns what
// generate returns, up to rounding; for tests and benchmarks.
GenerationResult generate_without_cache(LlamaForCausalLM& model, const Tensor& inputs_embeds,
                                        const GenerationConfig& config, const TokenCallback& on_token = nullptr);

// ---- the token choice, on one row of logits ---------------------------------------------

// Hugging Face's TopKLogitsWarper: keeps every logit >= the k-th largest (ties
// at the threshold are all kept), sets the rest to -inf. k <= 0 or k >= size
// leaves the logits unchanged.
void top_k_filter(std::vector<double>& logits, int64_t k);
// Hugging Face's TopPLogitsWarper with min_tokens_to_keep = 1: sort ascending,
// cumulative softmax, set to -inf every token whose cumulative probability is
// <= 1 - top_p, but never the largest one. Equal logits are ordered by id so
// that the lowest id is dropped last (torch's sort leaves their order open).
// top_p >= 1 leaves the logits unchanged.
void top_p_filter(std::vector<double>& logits, double top_p);

// Chooses each next token of one sequence from its last logits.
class TokenSampler {
 public:
  explicit TokenSampler(const GenerationConfig& config);
  // logits [V] or [1, V] or [1, 1, V] (any float dtype, any device) -> the id.
  // Greedy: argmax, the lowest id on ties (torch.argmax). Sampling: softmax
  // of logits / temperature after the top-k and top-p filters, then one
  // uniform draw u in [0, 1) from the Philox generator seeded with `seed`,
  // and the first id (in id order) whose cumulative probability exceeds u.
  int64_t next(const Tensor& logits);
  // The sampling rule on host logits (what next() does after reading them back).
  int64_t sample(std::vector<double> logits);

 private:
  GenerationConfig config_;
  Generator gen_;
};

}  // namespace vlmc::nn
