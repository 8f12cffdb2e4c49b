// Greedy decoding of a Hugging Face LLaMA folder on the CPU, its weights held
// in the file's dtype (bf16 for a BF16 checkpoint: kernels/gemm_lowp_weight.h)
// and in f32: prefill and decode tokens/s, and the GB/s of the weights one
// decode token reads against memcpy. bench/generate_hf.py runs this and
// transformers' generate on the same folder and threads and prints the ratio.
//
//   bench_generate_hf --model DIR [--weights file,f32,file+bf16-prefill] [--prompt 32] [--new 64]
//                     [--threads N] [--repeats N]
//
// A weights entry "W+bf16-prefill" runs the prompt's products in bf16, as
// `vlmc generate --prefill-precision bf16` does; its logits are validated at 5e-2.
//
// The prompt is `prompt` token ids drawn from a fixed sequence (i * 7919 + 13
// mod vocab, the first one BOS); no EOS stops the run, so every run makes
// all `new` tokens (transformers' side forces the same with min_new_tokens).
//
// Validation: every weights mode after the first must give the first's
// prompt logits within 1e-4 (relative) when both hold the same values (a
// BF16 file: bf16 and f32 are exact copies), else within bf16 rounding
// (2e-2); whether the greedy ids agree is printed (a near-tie may flip one).
//
// --quick (ctest): no folder; a random tiny LLaMA in f32 against the same
// model converted to bf16 (nn::convert_frozen_weights) and compared with an
// f32 copy holding the rounded values (logits within 1e-5, ids equal).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/ops.h"
#include "modules/generation.h"
#include "modules/hf_checkpoint.h"
#include "modules/llama.h"

using namespace vlmc;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Model {
  std::string name;  // "file (bf16)", "f32", ...
  std::shared_ptr<nn::LlamaForCausalLM> lm;
  double load_seconds = 0;
  bool prefill_bf16 = false;  // the prompt's products in bf16 (vlmc generate --prefill-precision bf16)
};

// Prompt logits with the products in bf16 against f32 ones: every product's
// operands rounded to bf16, through all the layers.
constexpr double kBf16Tolerance = 5e-2;

// Bytes of weights one decode token reads: every parameter but the
// embedding table (one row of it), unless the head is the table.
double decode_bytes(const nn::LlamaForCausalLM& lm) {
  double bytes = 0;
  for (const auto& [name, p] : lm.named_parameters())
    if (name != "model.embed_tokens.weight" || lm.config().tie_word_embeddings)
      bytes += static_cast<double>(p.nbytes());
  return bytes;
}

std::string dtypes_of(const nn::LlamaForCausalLM& lm) {
  std::map<std::string, int64_t> n;
  for (const auto& p : lm.parameters()) n[dtype_name(p.dtype())] += p.numel();
  std::string out;
  for (const auto& [d, c] : n) out += (out.empty() ? "" : "+") + d;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  int64_t prompt_len = 32, new_tokens = 64;
  std::string model_dir, weights_list = "file,f32";
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_generate_hf --model DIR [--weights file,f32,file+bf16-prefill] "
                                   "[--prompt T] [--new N] [--threads N] [--repeats N] [--json PATH] [--quick]",
                                   flags))
      return 0;
    for (size_t i = 0; i < flags.rest.size(); ++i) {
      const std::string& arg = flags.rest[i];
      if ((arg == "--prompt" || arg == "--new") && i + 1 < flags.rest.size()) {
        const int64_t value = std::stoll(flags.rest[++i]);
        if (value < 1) throw std::runtime_error(arg + " must be at least 1");
        (arg == "--prompt" ? prompt_len : new_tokens) = value;
      } else if (arg == "--model" && i + 1 < flags.rest.size()) {
        model_dir = flags.rest[++i];
      } else if (arg == "--weights" && i + 1 < flags.rest.size()) {
        weights_list = flags.rest[++i];
      } else {
        throw std::runtime_error("unknown flag '" + arg + "'");
      }
    }
    if (!flags.quick && model_dir.empty()) throw std::runtime_error("--model DIR is required (or --quick)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate_hf: %s\n", e.what());
    return 2;
  }

  // The models to time, in order; the first is the validation reference.
  std::vector<Model> models;
  std::shared_ptr<nn::LlamaForCausalLM> rounded;  // --quick: f32 with the bf16 values
  double same_values_tolerance = 1e-4;
  try {
    if (flags.quick) {
      nn::LlamaConfig c;
      c.vocab_size = 1000;
      c.hidden_size = 64;
      c.intermediate_size = 176;
      c.num_hidden_layers = 2;
      c.num_attention_heads = 8;
      c.num_key_value_heads = 4;
      c.max_position_embeddings = 256;
      prompt_len = 8;
      new_tokens = 8;
      auto make = [&c] {
        Generator gen(1);
        return std::make_shared<nn::LlamaForCausalLM>(c, gen);
      };
      rounded = make();
      auto low = make();
      nn::convert_frozen_weights(*low, DType::bf16);
      {
        NoGradGuard no_grad;
        for (const auto& [name, p] : rounded->named_parameters())
          if (nn::keeps_low_precision(name, p)) Tensor(p).copy_(p.to(DType::bf16));
      }
      models.push_back({"f32 (bf16 values)", rounded, 0});
      models.push_back({"bf16", low, 0});
      models.push_back({"bf16, bf16 prefill", low, 0, true});
      same_values_tolerance = 1e-5;
    } else {
      std::stringstream list(weights_list);
      for (std::string w; std::getline(list, w, ',');) {
        // "file+bf16-prefill": the file's weights, the prompt's products in bf16.
        const size_t plus = w.find('+');
        const bool prefill_bf16 = plus != std::string::npos;
        if (prefill_bf16 && w.substr(plus) != "+bf16-prefill")
          throw std::runtime_error("--weights: '" + w + "': the only mode after '+' is bf16-prefill");
        nn::PretrainedOptions options;
        options.weights = nn::parse_weights_dtype(w.substr(0, plus));
        nn::PretrainedModel m = nn::load_pretrained(model_dir, options);
        if (!m.llama) throw std::runtime_error(model_dir + " has no language model");
        std::printf("%s\n", m.report.summary().c_str());
        const std::string name = w.substr(0, plus) + " (" + dtypes_of(*m.llama) + ")";
        models.push_back({prefill_bf16 ? name + ", bf16 prefill" : name, m.llama, m.report.seconds, prefill_bf16});
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate_hf: %s\n", e.what());
    return 2;
  }

  const nn::LlamaConfig& c = models.front().lm->config();
  std::vector<int64_t> ids(static_cast<size_t>(prompt_len));
  for (int64_t i = 0; i < prompt_len; ++i)
    ids[static_cast<size_t>(i)] = i == 0 && c.vocab_size > 1 ? 1 : (i * 7919 + 13) % c.vocab_size;
  const Tensor prompt_ids = Tensor::from_vector(ids, {1, prompt_len});
  nn::GenerationConfig config;
  config.max_new_tokens = new_tokens;  // no EOS: every run makes all of them
  // The first run of each model keeps the prompt's logits for the validation
  // (the head over all T rows); the timed runs take the head over the last row.
  nn::GenerationConfig validate = config;
  validate.keep_prompt_logits = true;

  const double ceiling = bench::host_copy_gbps(size_t(256) << 20);
  const std::string shape = "D=" + std::to_string(c.hidden_size) + " L=" + std::to_string(c.num_hidden_layers) +
                            " V=" + std::to_string(c.vocab_size) + " T=" + std::to_string(prompt_len) + "+" +
                            std::to_string(new_tokens);
  bench::Report report("greedy generation of a Hugging Face LLaMA, CPU");
  Tensor reference_logits;
  std::vector<int64_t> reference_ids;
  for (const Model& m : models) {
    bench::Row row;
    row.kernel = "generate_greedy";
    row.version = "vlmc " + m.name;
    row.device = "cpu";
    row.shape = shape;
    std::vector<double> decode_tps, prefill_s;
    const int runs = flags.warmup(1) + flags.repeats;
    bool ids_equal = true;
    nn::GenerationConfig timed = config, first = validate;
    timed.prefill_bf16 = first.prefill_bf16 = m.prefill_bf16;
    for (int r = 0; r < runs; ++r) {
      const nn::GenerationResult out = nn::generate_from_ids(*m.lm, prompt_ids, r == 0 ? first : timed);
      if (r == 0) {
        if (!reference_logits.defined()) {
          reference_logits = out.prompt_logits;
          reference_ids = out.ids;
          row.valid = true;
        } else {
          row.max_rel_error = bench::rel_error(out.prompt_logits, reference_logits);
          row.valid = row.max_rel_error < (m.prefill_bf16 ? kBf16Tolerance : same_values_tolerance);
          ids_equal = out.ids == reference_ids;
          if (flags.quick && !m.prefill_bf16) row.valid = row.valid && ids_equal;
        }
        row.valid = row.valid && static_cast<int64_t>(out.ids.size()) == new_tokens;
        if (!row.valid) break;
      }
      if (r < flags.warmup(1)) continue;
      decode_tps.push_back(out.decode_tokens_per_second());
      prefill_s.push_back(out.prefill_seconds);
    }
    if (row.valid) {
      std::vector<double> ms;
      for (double t : decode_tps) ms.push_back(1000.0 / t);
      row.timing.median_ms = median(ms);
      row.timing.min_ms = *std::min_element(ms.begin(), ms.end());
      row.timing.repeats = static_cast<int>(ms.size());
      row.gbps = decode_bytes(*m.lm) / (row.timing.median_ms * 1e6);
      row.ceiling = ceiling;
      row.ceiling_name = "memcpy GB/s";
      std::printf("%-24s decode %8.2f tokens/s (median of %zu), prefill %.3f s (%.1f tokens/s), %.0f MB per "
                  "token, loaded in %.2f s%s\n",
                  row.version.c_str(), median(decode_tps), decode_tps.size(), median(prefill_s),
                  static_cast<double>(prompt_len) / median(prefill_s), decode_bytes(*m.lm) / 1e6, m.load_seconds,
                  &m == &models.front() ? "" : ids_equal ? ", ids equal to the first" : ", ids DIFFER from the first");
    }
    report.add(row);
  }
  report.print();
  if (!flags.json.empty()) report.write_json(flags.json);
  return bench::exit_status(report, flags, "bench_generate_hf");
}
