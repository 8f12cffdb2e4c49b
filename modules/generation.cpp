#include "modules/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/shape.h"
#include "modules/kv_cache.h"

namespace vlmc::nn {

namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void check_prompt(const char* where, const LlamaForCausalLM& model, const Tensor& inputs_embeds,
                  const GenerationConfig& config) {
  config.validate();
  const LlamaConfig& c = model.config();
  VLMC_CHECK(inputs_embeds.dim() == 3 && inputs_embeds.size(0) == 1 && inputs_embeds.size(1) >= 1 &&
                 inputs_embeds.size(2) == c.hidden_size,
             where, ": inputs_embeds ", shape_str(inputs_embeds.shape()), " must be [1, T, ", c.hidden_size,
             "] with T >= 1 (one sequence)");
  const int64_t t = inputs_embeds.size(1);
  VLMC_CHECK(t + config.max_new_tokens <= c.max_position_embeddings, where, ": the prompt's ", t,
             " tokens + max_new_tokens ", config.max_new_tokens, " = ", t + config.max_new_tokens,
             " positions exceed the model's max_position_embeddings ", c.max_position_embeddings);
}

// The new tokens as they come: recorded, streamed, and checked for an EOS.
struct Emitter {
  GenerationResult& result;
  const GenerationConfig& config;
  const TokenCallback& on_token;

  // Returns true when generation must stop after `id`.
  bool emit(int64_t id) {
    result.ids.push_back(id);
    if (on_token) on_token(id);
    const auto& eos = config.eos_token_ids;
    result.stopped_by_eos = std::find(eos.begin(), eos.end(), id) != eos.end();
    return result.stopped_by_eos || static_cast<int64_t>(result.ids.size()) >= config.max_new_tokens;
  }
};

// The embedding row of one token id: [1, 1, D] on the model's device.
Tensor embed_one(LlamaForCausalLM& model, int64_t id) {
  const Tensor table = model.embed_tokens();
  VLMC_CHECK(id >= 0 && id < table.size(0), "generate: token id ", id, " outside the vocabulary [0, ",
             table.size(0), ")");
  return embedding(table, Tensor::from_vector(std::vector<int64_t>{id}, {1, 1}).to(table.device()));
}

}  // namespace

// ---- config and result --------------------------------------------------------------------

void GenerationConfig::validate() const {
  VLMC_CHECK(max_new_tokens >= 0, "GenerationConfig: max_new_tokens ", max_new_tokens, " must be >= 0");
  VLMC_CHECK(std::isfinite(temperature) && temperature >= 0, "GenerationConfig: temperature ", temperature,
             " must be >= 0 (0 = greedy)");
  VLMC_CHECK(top_p > 0 && top_p <= 1, "GenerationConfig: top_p ", top_p, " must be in (0, 1]");
  VLMC_CHECK(top_k >= 0, "GenerationConfig: top_k ", top_k, " must be >= 0 (0 = no top-k filter)");
}

double GenerationResult::decode_tokens_per_second() const {
  if (ids.size() < 2 || decode_seconds <= 0) return 0;
  return static_cast<double>(ids.size() - 1) / decode_seconds;
}

// ---- filters and the sampler -------------------------------------------------------------

void top_k_filter(std::vector<double>& logits, int64_t k) {
  const auto n = static_cast<int64_t>(logits.size());
  if (k <= 0 || k >= n) return;
  // The k-th largest value; everything strictly below it goes.
  std::vector<double> sorted = logits;
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<double>());
  const double threshold = sorted[static_cast<size_t>(k - 1)];
  for (double& x : logits)
    if (x < threshold) x = kMinusInf;
}

void top_p_filter(std::vector<double>& logits, double top_p) {
  if (top_p >= 1 || logits.empty()) return;
  const size_t n = logits.size();
  // Ascending by logit; among equal logits the higher id first, so that the
  // lowest id is the last of them to go.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return logits[a] < logits[b] || (logits[a] == logits[b] && a > b);
  });
  const double top = logits[order.back()];
  if (top == kMinusInf) return;  // nothing to rank; the sampler reports it
  // Softmax in sorted order, then its running sum.
  std::vector<double> cumulative(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    total += std::exp(logits[order[i]] - top);
    cumulative[i] = total;
  }
  const double threshold = 1 - top_p;
  // The last (largest) token is always kept: min_tokens_to_keep = 1.
  for (size_t i = 0; i + 1 < n; ++i)
    if (cumulative[i] / total <= threshold) logits[order[i]] = kMinusInf;
}

TokenSampler::TokenSampler(const GenerationConfig& config) : config_(config), gen_(config.seed) {
  config_.validate();
}

int64_t TokenSampler::next(const Tensor& logits) {
  VLMC_CHECK(logits.dim() >= 1 && logits.numel() == logits.size(-1) && logits.numel() > 0,
             "TokenSampler: logits ", shape_str(logits.shape()), " must hold one row [V] (or [1, V], [1, 1, V])");
  NoGradGuard no_grad;
  const Tensor row = logits.reshape({logits.numel()});
  if (config_.temperature == 0) return static_cast<int64_t>(argmax(row, 0).item());  // on the logits' device
  return sample(row.to_vector<double>());
}

int64_t TokenSampler::sample(std::vector<double> logits) {
  VLMC_CHECK(!logits.empty(), "TokenSampler: no logits");
  for (size_t i = 0; i < logits.size(); ++i)
    VLMC_CHECK(!std::isnan(logits[i]) && logits[i] != std::numeric_limits<double>::infinity(),
               "TokenSampler: logit ", logits[i], " of token ", i, " (sampling needs finite logits or -inf)");
  if (config_.temperature == 0)  // greedy on the host: the first maximum
    return static_cast<int64_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (double& x : logits) x /= config_.temperature;
  top_k_filter(logits, config_.top_k);
  top_p_filter(logits, config_.top_p);
  const double top = *std::max_element(logits.begin(), logits.end());
  VLMC_CHECK(top != kMinusInf, "TokenSampler: every one of the ", logits.size(), " logits is -inf");
  // Unnormalised probabilities and their running sum, in id order.
  std::vector<double> cumulative(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    total += std::exp(logits[i] - top);  // exp(-inf) = 0: filtered tokens add nothing
    cumulative[i] = total;
  }
  // One draw per token, from the seeded stream: the same seed gives the same ids.
  const double u = Tensor::rand({1}, gen_, DType::f64).item() * total;
  // The first id whose cumulative mass exceeds u: a token of zero mass never
  // is, since its cumulative equals its predecessor's; u < total, so one is.
  const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), u);
  return static_cast<int64_t>(std::min<size_t>(static_cast<size_t>(it - cumulative.begin()), logits.size() - 1));
}

// ---- generation ----------------------------------------------------------------------------

GenerationResult generate(LlamaForCausalLM& model, const Tensor& inputs_embeds, const GenerationConfig& config,
                          const TokenCallback& on_token) {
  check_prompt("generate", model, inputs_embeds, config);
  GenerationResult result;
  if (config.max_new_tokens == 0 && !config.keep_prompt_logits) return result;
  NoGradGuard no_grad;
  const int64_t t = inputs_embeds.size(1);
  // Room for the prompt and every new token (the last one is never fed back,
  // but the bound is the one the caller knows).
  KVCache cache = make_kv_cache(model, 1, t + config.max_new_tokens);
  TokenSampler sampler(config);
  Emitter out{result, config, on_token};

  // Prefill: the whole prompt in one forward; the head over the last position
  // only, unless the prompt's logits are wanted.
  const auto start = std::chrono::steady_clock::now();
  Tensor logits;
  {
    std::optional<AutocastGuard> bf16;  // only when asked: a caller's own autocast is left as it is
    if (config.prefill_bf16) bf16.emplace(true);
    logits = model.forward_cached(inputs_embeds, cache, /*last_only=*/!config.keep_prompt_logits);
  }
  if (config.keep_prompt_logits) {
    result.prompt_logits = logits;
    logits = logits.narrow(1, t - 1, 1);
  }
  if (config.max_new_tokens == 0) {
    result.prefill_seconds = seconds_since(start);
    return result;
  }
  int64_t id = sampler.next(logits);
  bool done = out.emit(id);
  result.prefill_seconds = seconds_since(start);

  // Decode: one token per forward, its key and value appended to the cache.
  const auto decode_start = std::chrono::steady_clock::now();
  while (!done) {
    logits = model.forward_cached(embed_one(model, id), cache, /*last_only=*/true);  // [1, 1, V]
    id = sampler.next(logits);
    done = out.emit(id);
  }
  result.decode_seconds = seconds_since(decode_start);
  return result;
}

GenerationResult generate_from_ids(LlamaForCausalLM& model, const Tensor& input_ids, const GenerationConfig& config,
                                   const TokenCallback& on_token) {
  VLMC_CHECK(input_ids.dim() == 2 && input_ids.size(0) == 1 && input_ids.dtype() == DType::i64,
             "generate_from_ids: input_ids ", describe(input_ids), " must be i64 [1, T]");
  NoGradGuard no_grad;
  const Tensor table = model.embed_tokens();
  const Tensor embeds = embedding(table, input_ids.to(table.device()));  // [1, T, D]; checks the ids' range
  return generate(model, embeds, config, on_token);
}

GenerationResult generate_without_cache(LlamaForCausalLM& model, const Tensor& inputs_embeds,
                                        const GenerationConfig& config, const TokenCallback& on_token) {
  check_prompt("generate_without_cache", model, inputs_embeds, config);
  GenerationResult result;
  NoGradGuard no_grad;
  TokenSampler sampler(config);
  Emitter out{result, config, on_token};
  const int64_t t = inputs_embeds.size(1);
  const Tensor head = model.head_weight();
  Tensor sequence = inputs_embeds;  // [1, L, D], the prompt and every token chosen so far
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0;; ++step) {
    // The whole sequence again, every step; the head over the last position
    // only (as the cached path), so that the comparison times the cache alone.
    const Tensor hidden = model.model->forward(sequence, Tensor(), Tensor());  // [1, L, D]
    const int64_t l = hidden.size(1);
    Tensor logits;
    if (step == 0 && config.keep_prompt_logits) {
      result.prompt_logits = linear(hidden, head);  // [1, T, V]
      logits = result.prompt_logits.narrow(1, t - 1, 1);
    } else {
      logits = linear(hidden.narrow(1, l - 1, 1), head);  // [1, 1, V]
    }
    if (config.max_new_tokens == 0) {
      result.prefill_seconds = seconds_since(start);
      break;
    }
    const int64_t id = sampler.next(logits);
    const bool done = out.emit(id);
    if (step == 0) {
      result.prefill_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    } else {
      result.decode_seconds = seconds_since(start);
    }
    if (done) break;
    sequence = cat({sequence, embed_one(model, id)}, 1);
  }
  return result;
}

}  // namespace vlmc::nn
