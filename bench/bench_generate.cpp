// Greedy decoding of a random LLaMA on the CPU, f32: generate() with its KV
// cache against generate_without_cache() (the whole forward over the prompt
// and every token so far, each step; the head over the last position only in
// both, so the difference is the cache's). Default shape: hidden 512, 8
// layers, 8 heads over 4 KV heads, intermediate 1408, vocab 32000; prompt 64
// tokens, 64 new tokens (--prompt, --new change them).
//
// Validation: both versions must choose the same ids. The measure is the
// decode (every token after the first): median ms per token over the repeats,
// and for the cached version the GB/s of the weights it must read per token
// (batch 1 decode is a matrix-vector product per weight, memory-bound) against
// memcpy. Prefill seconds and tokens/s are printed beside the table.
//
// --quick: hidden 64, 2 layers, vocab 1000, prompt 8, 8 new tokens.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/ops.h"
#include "modules/generation.h"
#include "modules/llama.h"

using namespace vlmc;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  int64_t prompt_len = 0, new_tokens = 0;
  try {
    if (!bench::parse_common_flags(
            argc, argv,
            "usage: bench_generate [--threads N] [--repeats N] [--json PATH] [--quick] [--prompt T] [--new N]", flags))
      return 0;
    for (size_t i = 0; i < flags.rest.size(); ++i) {
      const std::string& arg = flags.rest[i];
      if ((arg == "--prompt" || arg == "--new") && i + 1 < flags.rest.size()) {
        const int64_t value = std::stoll(flags.rest[++i]);
        if (value < 1) throw std::runtime_error(arg + " must be at least 1");
        (arg == "--prompt" ? prompt_len : new_tokens) = value;
      } else {
        throw std::runtime_error("unknown flag '" + arg + "'");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 2;
  }
  nn::LlamaConfig c;
  c.vocab_size = flags.quick ? 1000 : 32000;
  c.hidden_size = flags.quick ? 64 : 512;
  c.intermediate_size = flags.quick ? 176 : 1408;
  c.num_hidden_layers = flags.quick ? 2 : 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 2048;
  if (prompt_len == 0) prompt_len = flags.quick ? 8 : 64;
  if (new_tokens == 0) new_tokens = flags.quick ? 8 : 64;
  if (prompt_len + new_tokens > c.max_position_embeddings) {
    std::fprintf(stderr, "bench_generate: --prompt + --new must be at most %lld\n",
                 static_cast<long long>(c.max_position_embeddings));
    return 2;
  }

  Generator gen(1);
  nn::LlamaForCausalLM lm(c, gen);
  std::vector<int64_t> ids(static_cast<size_t>(prompt_len));
  for (int64_t i = 0; i < prompt_len; ++i) ids[static_cast<size_t>(i)] = (i * 7919 + 13) % c.vocab_size;
  Tensor prompt;
  {
    NoGradGuard no_grad;
    prompt = embedding(lm.embed_tokens(), Tensor::from_vector(ids, {1, prompt_len}));
  }
  nn::GenerationConfig config;
  config.max_new_tokens = new_tokens;  // no EOS: every run makes all of them

  // Weights one decode step reads: every layer's and the head's (of the
  // embedding table only one row, unless the head is tied to it).
  double weight_bytes = c.tie_word_embeddings ? 4.0 * static_cast<double>(c.vocab_size * c.hidden_size) : 0.0;
  for (const auto& [name, p] : lm.named_parameters())
    if (name != "model.embed_tokens.weight") weight_bytes += 4.0 * static_cast<double>(p.numel());
  std::printf("weights read per decode token: %.1f MB\n", weight_bytes / 1e6);
  const double ceiling = bench::host_copy_gbps(size_t(256) << 20);

  const std::string shape = "D=" + std::to_string(c.hidden_size) + " L=" + std::to_string(c.num_hidden_layers) +
                            " V=" + std::to_string(c.vocab_size) + " T=" + std::to_string(prompt_len) + "+" +
                            std::to_string(new_tokens);
  bench::Report report("greedy generation, random LLaMA, f32");
  struct Version {
    const char* name;
    nn::GenerationResult (*run)(nn::LlamaForCausalLM&, const Tensor&, const nn::GenerationConfig&,
                                const nn::TokenCallback&);
  };
  const std::vector<Version> versions{{"vlmc kv cache", &nn::generate}, {"no cache (full forward)", &nn::generate_without_cache}};
  std::vector<int64_t> reference;
  for (const Version& v : versions) {
    bench::Row row;
    row.kernel = "generate_greedy";
    row.version = v.name;
    row.device = "cpu";
    row.shape = shape;
    std::vector<double> per_token_ms, prefill_s, tokens_per_s;
    // The first run validates (and warms up) unless quick, where it is the one timed.
    const int runs = flags.warmup(1) + flags.repeats;
    for (int r = 0; r < runs; ++r) {
      const nn::GenerationResult out = v.run(lm, prompt, config, nullptr);
      if (reference.empty()) reference = out.ids;
      row.valid = out.ids == reference && static_cast<int64_t>(out.ids.size()) == new_tokens;
      row.max_rel_error = row.valid ? 0 : 1;
      if (!row.valid) break;
      if (r < flags.warmup(1)) continue;
      per_token_ms.push_back(1000.0 / out.decode_tokens_per_second());
      prefill_s.push_back(out.prefill_seconds);
      tokens_per_s.push_back(out.decode_tokens_per_second());
    }
    if (row.valid) {
      row.timing.median_ms = median(per_token_ms);
      row.timing.min_ms = *std::min_element(per_token_ms.begin(), per_token_ms.end());
      row.timing.repeats = static_cast<int>(per_token_ms.size());
      if (v.run == &nn::generate) {
        row.gbps = weight_bytes / (row.timing.median_ms * 1e6);
        row.ceiling = ceiling;
        row.ceiling_name = "memcpy GB/s";
      }
      std::printf("%-26s decode %8.2f tokens/s (median of %zu), prefill %.3f s\n", v.name, median(tokens_per_s),
                  tokens_per_s.size(), median(prefill_s));
    }
    report.add(row);
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_generate");
}
