// One LLaVA stage-1 training step, end to end, timed: vision features
// [B, 576, 1024] (random: the frozen encoder's output is an input here) ->
// LLaVA's mlp2x_gelu connector (1024 -> hidden) -> spliced at an <image>
// placeholder into random text ids -> a LLaMA-shaped language model (frozen) ->
// the causal LM loss -> backward -> AdamW on the connector only.
//
// The default sizes are TinyLlama's (hidden 2048, intermediate 5632, 22
// layers, 32 heads, 4 KV heads, vocab 32000: about 1.1B parameters) at
// sequence 2048 (576 visual tokens, text filling the rest). bench/llava_step.py
// runs the same step in PyTorch eager with the same flags and prints the same
// fields, so the two are compared by scripts/gpu-check.sh.
//
// Validation before any timing: the loss of the first batch must be finite and
// within 20 % of ln(vocab) (a LLaMA-initialised model predicts nearly
// uniformly), and on CUDA the f32 loss must match the same model and batch run
// on the CPU within 1e-4 relative; a bf16 run's loss must also stay within
// 2e-2 of that f32 loss (bf16 operands move the loss in its third digit).
// A failed validation exits 1 without timing.
//
// Reported: tokens/s (B * seq over the median step), ms per step, parameters,
// and the CUDA allocator's peak bytes over the timed steps (n/a on the CPU).
// --quick: hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 512, seq 64, 16
// visual tokens of width 64 -- the same code paths in a second on the CPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "core/autocast.h"
#include "core/autograd.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/threads.h"
#include "modules/llama.h"
#include "modules/llava.h"
#include "optim/adamw.h"

using namespace vlmc;

namespace {

constexpr const char* kUsage =
    "usage: bench_llava_step [--device cpu|cuda] [--precision f32|bf16] [--batch B] [--seq L]\n"
    "                        [--image-tokens N] [--dim-vision Dv] [--hidden D] [--intermediate I]\n"
    "                        [--layers N] [--heads H] [--kv-heads Hkv] [--vocab V] [--warmup N]\n"
    "                        [--seed S] [--threads N] [--repeats N] [--json PATH] [--quick]\n"
    "  defaults: device cuda when a GPU is visible (else cpu), precision f32, batch 1, seq 2048,\n"
    "  image-tokens 576, dim-vision 1024, hidden 2048, intermediate 5632, layers 22, heads 32,\n"
    "  kv-heads 4, vocab 32000 (TinyLlama), warmup 2, seed 0; --quick: hidden 64, intermediate 176,\n"
    "  layers 2, heads 4, kv-heads 2, vocab 512, seq 64, image-tokens 16, dim-vision 64, no warm-up";

struct Options {
  std::string device;  // empty: cuda when visible
  std::string precision = "f32";
  int64_t batch = 1, seq = 2048, image_tokens = 576, dim_vision = 1024;
  int64_t hidden = 2048, intermediate = 5632, layers = 22, heads = 32, kv_heads = 4, vocab = 32000;
  int warmup = 2;
  uint64_t seed = 0;
};

int64_t parse_int(const std::string& flag, const std::string& value, int64_t min) {
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || n < min)
    throw std::runtime_error(flag + " expects an integer >= " + std::to_string(min) + ", got '" + value + "'");
  return n;
}

// The flags the harness left over, as "--flag value" pairs. --quick changes
// the defaults only: a size given explicitly wins.
Options parse_options(const std::vector<std::string>& rest, bool quick) {
  Options o;
  if (quick) {
    o.hidden = 64, o.intermediate = 176, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.vocab = 512;
    o.seq = 64, o.image_tokens = 16, o.dim_vision = 64, o.warmup = 0;
  }
  const std::map<std::string, int64_t*> sizes = {
      {"--batch", &o.batch},         {"--seq", &o.seq},       {"--image-tokens", &o.image_tokens},
      {"--dim-vision", &o.dim_vision}, {"--hidden", &o.hidden}, {"--intermediate", &o.intermediate},
      {"--layers", &o.layers},       {"--heads", &o.heads},   {"--kv-heads", &o.kv_heads},
      {"--vocab", &o.vocab}};
  for (size_t i = 0; i < rest.size(); ++i) {
    const std::string& flag = rest[i];
    if (i + 1 >= rest.size()) throw std::runtime_error("unknown flag or missing value: '" + flag + "'");
    const std::string& value = rest[++i];
    if (const auto it = sizes.find(flag); it != sizes.end()) {
      *it->second = parse_int(flag, value, 1);
    } else if (flag == "--warmup") {
      o.warmup = static_cast<int>(parse_int(flag, value, 0));
    } else if (flag == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(flag, value, 0));
    } else if (flag == "--device") {
      o.device = value;
    } else if (flag == "--precision") {
      if (value != "f32" && value != "bf16") throw std::runtime_error("--precision expects f32 or bf16, got '" + value + "'");
      o.precision = value;
    } else {
      throw std::runtime_error("unknown flag '" + flag + "'");
    }
  }
  if (o.seq <= o.image_tokens)
    throw std::runtime_error("--seq " + std::to_string(o.seq) + " must exceed --image-tokens " +
                             std::to_string(o.image_tokens) + " (the text fills the rest)");
  return o;
}

// The frozen vision tower's place in LlavaModel. The step reads precomputed
// features (prepare_inputs_from_features), so this encoder only states their
// width; asking it to encode images is a usage error.
class GivenFeatures : public nn::VisionEncoder {
 public:
  explicit GivenFeatures(int64_t width) : width_(width) {}
  std::vector<Tensor> hidden_states(const Tensor&) override {
    throw Error("bench_llava_step: the vision features are given; there is no encoder to run");
  }
  int64_t hidden_size() const override { return width_; }

 private:
  int64_t width_;
};

// The model and one batch, built on the CPU from the seed (the CUDA run
// validates against this CPU state before moving it; see move_to).
struct Setup {
  std::shared_ptr<nn::LlavaModel> llava;
  Tensor features, input_ids, labels;

  void move_to(Device device) {
    llava->to(device);
    features = features.to(device);
  }
};

Setup build_on_cpu(const Options& o) {
  nn::LlamaConfig lc;
  lc.vocab_size = o.vocab;
  lc.hidden_size = o.hidden;
  lc.intermediate_size = o.intermediate;
  lc.num_hidden_layers = o.layers;
  lc.num_attention_heads = o.heads;
  lc.num_key_value_heads = o.kv_heads;
  lc.max_position_embeddings = std::max<int64_t>(2048, o.seq);
  lc.validate();
  Generator gen(o.seed);
  auto llm = std::make_shared<nn::LlamaForCausalLM>(lc, gen);
  nn::LlavaConfig config;
  config.projector_type = "mlp2x_gelu";
  config.stage = 1;  // connector trainable, language model frozen
  Setup s;
  s.llava = std::make_shared<nn::LlavaModel>(std::make_shared<GivenFeatures>(o.dim_vision), llm, config, gen);

  // One <image> per sample right after a BOS-like first token; random text
  // fills the rest so that each spliced sample is exactly `seq` long.
  const int64_t text = o.seq - o.image_tokens + 1;
  const Tensor ids_f = Tensor::rand({o.batch, text}, gen);
  std::vector<int64_t> ids;
  for (const float u : ids_f.to_vector<float>())
    ids.push_back(std::min<int64_t>(o.vocab - 1, static_cast<int64_t>(u * static_cast<float>(o.vocab))));
  for (int64_t b = 0; b < o.batch; ++b) {
    ids[static_cast<size_t>(b * text)] = 1;
    ids[static_cast<size_t>(b * text + 1)] = -200;
  }
  s.input_ids = Tensor::from_vector(ids, {o.batch, text});
  s.labels = s.input_ids;  // the splice sets -100 at the image tokens
  s.features = Tensor::randn({o.batch, o.image_tokens, o.dim_vision}, gen);
  return s;
}

// The forward: splice, language model, loss. With `bf16` under autocast.
Tensor step_loss(Setup& s, bool bf16) {
  AutocastGuard autocast(bf16);
  const SpliceResult in = s.llava->prepare_inputs_from_features(s.input_ids, s.features, s.labels);
  const Tensor logits = s.llava->llm->forward(in.inputs_embeds, in.attention_mask, in.position_ids);
  return nn::causal_lm_loss(logits, in.labels);
}

double loss_of(Setup& s, bool bf16) {
  NoGradGuard no_grad;
  return step_loss(s, bf16).item();
}

std::string json_number_or_null(bool have, double value) {
  if (!have) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", value);  // whole bytes
  return buf;
}

void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

int run(const Options& o, const bench::CommonFlags& flags) {
  const bool gpu_visible = cuda::is_available();
  const Device device = Device::parse(o.device.empty() ? (gpu_visible ? "cuda" : "cpu") : o.device);
  const bool on_gpu = device.is_cuda();
  const bool bf16 = o.precision == "bf16";
  const double uniform = std::log(static_cast<double>(o.vocab));

  // ---- validation ----
  // Each phase says how long it took (stderr, unbuffered), so a run cut by a
  // timeout still shows where its time went.
  auto phase_start = std::chrono::steady_clock::now();
  const auto phase = [&](const char* what) {
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "bench_llava_step: %s in %.1f s\n", what,
                 std::chrono::duration<double>(now - phase_start).count());
    phase_start = now;
  };
  Setup s = build_on_cpu(o);
  phase("model and batch built on the CPU");
  double reference = NAN;  // the CPU's f32 loss of the same model and batch
  if (on_gpu) {
    reference = loss_of(s, false);
    phase("CPU f32 reference loss");
    s.move_to(device);
    phase("moved to the device");
  }
  const double loss_f32 = loss_of(s, false);
  const double loss_run = bf16 ? loss_of(s, true) : loss_f32;
  phase("validation losses");
  std::string problem;
  if (!std::isfinite(loss_run) || std::fabs(loss_f32 - uniform) > 0.2 * uniform) {
    problem = "loss at init " + std::to_string(loss_f32) + " is not within 20 % of ln(vocab) = " + std::to_string(uniform);
  } else if (on_gpu && !(std::fabs(loss_f32 - reference) <= 1e-4 * std::fabs(reference))) {
    problem = "f32 loss on " + device.str() + " " + std::to_string(loss_f32) + " differs from the CPU's " +
              std::to_string(reference) + " by more than 1e-4 relative";
  } else if (bf16 && !(std::fabs(loss_run - loss_f32) <= 2e-2 * std::fabs(loss_f32))) {
    problem = "bf16 loss " + std::to_string(loss_run) + " differs from the f32 loss " + std::to_string(loss_f32) +
              " by more than 2e-2 relative";
  }
  if (!problem.empty()) {
    std::fprintf(stderr, "bench_llava_step: validation failed: %s\n", problem.c_str());
    return 1;
  }

  // ---- timing ----
  std::vector<optim::NamedTensor> named;
  for (const auto& [name, p] : s.llava->connector->named_parameters()) named.push_back({name, p});
  optim::GroupingOptions grouping;
  grouping.lr = 1e-3;  // LLaVA-1.5 stage 1: lr 1e-3, no weight decay
  optim::AdamW adamw(optim::make_param_groups(named, grouping), /*fused=*/true);
  const auto train_step = [&] {
    Tensor loss = step_loss(s, bf16);
    loss.backward();  // the ops captured the precision with their forward
    adamw.step();
    adamw.zero_grad();
    if (on_gpu) cuda::synchronize(device.index);
  };
  for (int i = 0; i < o.warmup; ++i) train_step();
  if (on_gpu) cuda::reset_peak_allocated(device.index);
  std::vector<double> ms;
  for (int r = 0; r < flags.repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    train_step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  const double tokens_per_s = static_cast<double>(o.batch * o.seq) / (median * 1e-3);
  const double peak = on_gpu ? static_cast<double>(cuda::allocator_stats(device.index).peak_allocated_bytes) : 0;
  const int64_t parameters = s.llava->llm->num_parameters() + s.llava->connector->num_parameters();
  const int64_t trainable = s.llava->connector->num_parameters();

  std::printf("LLaVA stage-1 step (vlmc) on %s, %s, %d threads\n", device.str().c_str(), o.precision.c_str(),
              num_threads());
  std::printf("  model:        hidden %lld, intermediate %lld, %lld layers, %lld heads (%lld KV), vocab %lld\n",
              static_cast<long long>(o.hidden), static_cast<long long>(o.intermediate),
              static_cast<long long>(o.layers), static_cast<long long>(o.heads), static_cast<long long>(o.kv_heads),
              static_cast<long long>(o.vocab));
  std::printf("  parameters:   %lld (%lld trainable: the connector)\n", static_cast<long long>(parameters),
              static_cast<long long>(trainable));
  std::printf("  batch %lld x seq %lld (%lld visual tokens of width %lld)\n", static_cast<long long>(o.batch),
              static_cast<long long>(o.seq), static_cast<long long>(o.image_tokens),
              static_cast<long long>(o.dim_vision));
  std::printf("  first loss:   %.6f (ln(vocab) %.6f%s)\n", loss_run, uniform,
              on_gpu ? (", CPU f32 " + std::to_string(reference)).c_str() : "");
  std::printf("  step:         median %.2f ms of %d after %d warm-up (min %.2f, max %.2f)\n", median,
              flags.repeats, o.warmup, ms.front(), ms.back());
  std::printf("  tokens/s:     %.1f\n", tokens_per_s);
  if (on_gpu) std::printf("  peak memory:  %.1f MiB\n", peak / (1024.0 * 1024.0));
  else std::printf("  peak memory:  n/a\n");

  if (!flags.json.empty()) {
    char buf[2048];
    std::snprintf(
        buf, sizeof buf,
        "{\"bench\": \"llava_step\", \"impl\": \"vlmc\", \"device\": \"%s\", \"precision\": \"%s\", "
        "\"batch\": %lld, \"seq\": %lld, \"image_tokens\": %lld, \"dim_vision\": %lld, \"hidden\": %lld, "
        "\"intermediate\": %lld, \"layers\": %lld, \"heads\": %lld, \"kv_heads\": %lld, \"vocab\": %lld, "
        "\"parameters\": %lld, \"trainable_parameters\": %lld, \"first_loss\": %.6f, \"repeats\": %d, "
        "\"warmup\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": %.4f, \"tokens_per_s\": %.3f, "
        "\"peak_memory_bytes\": %s, \"threads\": %d}\n",
        device.str().c_str(), o.precision.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.seq),
        static_cast<long long>(o.image_tokens), static_cast<long long>(o.dim_vision),
        static_cast<long long>(o.hidden), static_cast<long long>(o.intermediate), static_cast<long long>(o.layers),
        static_cast<long long>(o.heads), static_cast<long long>(o.kv_heads), static_cast<long long>(o.vocab),
        static_cast<long long>(parameters), static_cast<long long>(trainable), loss_run, flags.repeats, o.warmup,
        median, ms.front(), ms.back(), tokens_per_s, json_number_or_null(on_gpu, peak).c_str(), num_threads());
    write_atomically(flags.json, buf);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  Options options;
  try {
    if (!bench::parse_common_flags(argc, argv, kUsage, flags)) return 0;
    options = parse_options(flags.rest, flags.quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_llava_step: %s\n", e.what());
    return 2;
  }
  try {
    return run(options, flags);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_llava_step: %s\n", e.what());
    return 1;
  }
}
