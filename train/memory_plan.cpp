#include "train/memory_plan.h"
#include "train/llava_sources.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/autocast.h"
#include "core/cgroup.h"
#include "core/error.h"
#include "core/ops.h"
#include "modules/hf_config.h"
#include "modules/llava.h"
#include "train/mosaic.h"
#include "train/tokenizer.h"

namespace vlmc::train {
namespace {

constexpr double kF32 = 4, kBf16 = 2;
// Layers' worth of input gradients alive at the backward's peak (see
// decoder_activation_terms), fitted to the host allocator's high-water mark
// of live tensors in one step (tests/train/test_memory_plan.cpp), which is
// exact and the same on every CPU: the four measured steps need 0.22-0.35
// (docs/plan.md). It was fitted to the peak RSS (1.4, then 1.2) while
// malloc's arenas kept freed activations resident; the host allocator now
// maps large blocks itself and the resident set follows the live tensors.
constexpr double kBackwardLayers = 0.4;
const std::string kInFlight =
    str("gradients in flight: about ", kBackwardLayers, " layers' input gradients (measured factor)");

void add(std::vector<MemoryTerm>& terms, const std::string& category, const std::string& name, double bytes) {
  if (bytes > 0) terms.push_back({category, name, bytes});
}

// The attention form core/ops/attention.cpp picks: products under autocast,
// and on CUDA from 64 x 64 scores on; the fused kernel otherwise.
bool uses_products(const StepMode& mode, int64_t length) {
  return mode.bf16 || (mode.cuda && static_cast<double>(length) * length >= 64.0 * 64.0);
}

// Whether the CPU's fused attention keeps P for the backward (core/ops.h).
bool keeps_probs(const StepMode& mode, int64_t length, int64_t head_dim) {
  return !mode.cuda && attention_keeps_probs(length, head_dim);
}

// Bytes of one element of an autocast copy (core/autocast.h autocast_operand):
// bf16 bits, or f32 values of bf16's precision on a CPU with no bf16 kernel
// (this machine's, read here: the plan is for a run on it).
double copy_bytes(const StepMode& mode) {
  return autocast_operand_dtype(mode.cuda ? Device::cuda() : Device::cpu()) == DType::f32 ? kF32 : kBf16;
}

}  // namespace

// ---- parameters ------------------------------------------------------------------------

double decoder_parameters(const DecoderShape& s) {
  const double d = static_cast<double>(s.hidden), kv = static_cast<double>(s.kv_hidden());
  const double i = static_cast<double>(s.intermediate), v = static_cast<double>(s.vocab);
  const double layer = d * d * 2 + d * kv * 2 + 3 * d * i + 2 * d;  // q, o; k, v; gate, up, down; two norms
  return v * d * (s.tied ? 1 : 2) + static_cast<double>(s.layers) * layer + d;  // + the final norm
}

double encoder_parameters(const EncoderShape& s) {
  const double d = static_cast<double>(s.hidden), i = static_cast<double>(s.intermediate);
  const double embeddings = static_cast<double>(s.channels * s.patch * s.patch) * d + d +
                            static_cast<double>(s.tokens()) * d;  // patch conv (no bias), class, positions
  const double layer = 4 * (d * d + d) + 2 * d * i + i + d + 4 * d;  // attention; fc1, fc2; two layer norms
  return embeddings + 2 * d /* pre_layrnorm */ + static_cast<double>(s.layers) * layer + 2 * d /* post_layernorm */;
}

double mlp_projector_parameters(int64_t dim_vision, int64_t dim_llm, int64_t depth) {
  const double dv = static_cast<double>(dim_vision), d = static_cast<double>(dim_llm);
  if (depth == 0) return 0;  // identity
  return dv * d + d + static_cast<double>(depth - 1) * (d * d + d);
}

// ---- activations -----------------------------------------------------------------------

std::vector<MemoryTerm> decoder_activation_terms(const DecoderShape& s, int64_t batch, int64_t length,
                                                 const StepMode& mode) {
  std::vector<MemoryTerm> t;
  const double n = static_cast<double>(s.layers), tokens = static_cast<double>(batch) * static_cast<double>(length);
  const double per = n * tokens;  // layer-positions
  const double d = static_cast<double>(s.hidden), kv = static_cast<double>(s.kv_hidden());
  const double i = static_cast<double>(s.intermediate), h = static_cast<double>(s.heads);
  const bool train = mode.trains_weights, bf16 = mode.bf16;
  const bool products = uses_products(mode, length);
  const double copy = copy_bytes(mode);
  // With grouped heads the product form repeats each KV head for its queries.
  const double kv_in_products = s.kv_heads < s.heads ? d : kv;
  const std::string a = "activations";

  if (mode.checkpointing) {
    // Only every layer's input survives the forward; one layer is recomputed
    // (with its own saved tensors) at a time during the backward.
    add(t, a, "decoder: every layer's input (kept for the recompute)", per * d * kF32);
    StepMode one = mode;
    one.checkpointing = false;
    DecoderShape single = s;
    single.layers = 1;
    for (const MemoryTerm& term : decoder_activation_terms(single, batch, length, one))
      if (term.name.rfind("decoder:", 0) == 0 && term.name.find("rotary cos") == std::string::npos &&
          term.name.find("bf16 copies") == std::string::npos)  // shared by the layers: counted once below
        add(t, "backward", "recompute of one layer: " + term.name.substr(9),
                                                   term.bytes);
  } else {
    // rms_norm keeps its input and 1/rms per row (both norms); the attention its log-sum-exp.
    add(t, a, "decoder: layer input and residual h (input_layernorm, post_attention_layernorm)", per * 2 * d * kF32);
    add(t, a, "decoder: norm statistics and attention log-sum-exp", per * (2 + (products ? 0 : h)) * kF32);
    // Linears keep their input only when their weight trains (core/ops/linalg.cpp):
    // f32 as it is, or under autocast one rounded copy per linear.
    if (train) {
      add(t, a, "decoder: normed inputs of q/k/v and gate/up projections", per * d * (bf16 ? 5 * copy : 2 * kF32));
      add(t, a, "decoder: attention output (o_proj input, the transposed copy)", per * d * (bf16 ? copy : kF32));
      add(t, a, "decoder: SiLU(gate) * up (down_proj input)", per * i * (bf16 ? copy : kF32));
    }
    // Rotary: one op on the CPU that keeps nothing but the shared tables; on
    // CUDA x * cos + cat(-x2, x1) * sin from recorded ops, and mul keeps both operands.
    if (mode.cuda)
      add(t, a, "decoder: q and k projections and their rotated halves (rotary's mul)", per * (d + kv) * 2 * kF32);
    if (products) {
      // matmul keeps the operands it read (bf16 copies under autocast); the
      // softmax its f32 output, which the second product reads (as a bf16
      // copy under autocast); masked_fill its u8 mask [B, 1, T, S]; the final
      // mul by "row sees a key" the attention output.
      add(t, a, "decoder: q, k, v as the products read them", per * (d + 2 * kv_in_products) * (bf16 ? copy : kF32));
      add(t, a, "decoder: attention probabilities [B, H, T, S]",
          per * h * static_cast<double>(length) * (bf16 ? kF32 + copy : kF32));
      add(t, a, "decoder: padding mask of the scores (u8 [B, 1, T, S]) and attention output",
          per * (static_cast<double>(length) + d * kF32));
    } else {
      add(t, a, "decoder: q, k after rotary and v (the fused attention keeps them)", per * (d + 2 * kv) * kF32);
      if (keeps_probs(mode, length, s.head_dim()))
        add(t, a, "decoder: attention probabilities [B, H, T, S] (the CPU kernel keeps them for rows of at most Dh keys)",
            per * h * static_cast<double>(length) * kF32);
    }
    // swiglu: one op on the CPU that keeps gate and up; on CUDA silu(gate) * up
    // from recorded ops, and mul keeps the SiLU output besides.
    if (mode.cuda)
      add(t, a, "decoder: gate (SiLU input), SiLU output and up (mul operands)", per * 3 * i * kF32);
    else
      add(t, a, "decoder: gate and up (swiglu's operands)", per * 2 * i * kF32);
  }
  // Shared by the layers: rotary's cos and sin gathered per position
  // [B, 1, L, Dh] (mul keeps them), the key mask, positions and labels (i64).
  add(t, a, "decoder: rotary cos and sin [B, 1, L, Dh], masks, position ids and labels",
      tokens * (2 * static_cast<double>(s.head_dim()) * kF32 + 3 * 8));
  // The head: the final norm keeps its input; lm_head its input when it trains.
  add(t, a, "final norm input" + std::string(train ? " and output (lm_head input)" : ""),
      tokens * d * (kF32 + (train ? (bf16 ? copy : kF32) : 0)));
  // causal_lm_loss: logits[:, :-1] reshaped (a copy for B > 1), kept by cross_entropy.
  const double logits = static_cast<double>(batch) * static_cast<double>(std::max<int64_t>(length - 1, 1)) *
                        static_cast<double>(s.vocab) * kF32;
  add(t, a, "logits [B, L-1, V] (cross_entropy keeps a contiguous copy)", logits);
  // The backward's first steps: cross_entropy's dl [B(L-1), V], then the
  // narrow's gradient [B, L, V], both alive at once.
  add(t, "backward", "gradient of the logits (dl and the narrow's [B, L, V])", 2 * logits);
  // Then layer by layer: every saved tensor stays until the backward ends
  // (core/autograd.cpp releases the graph after the last node), and on top
  // of it the input gradients of one layer's ops, pending residual sums and
  // the blocks the host allocator keeps for reuse. One layer's gradients are
  // about 8 D + 4 Dkv + 4 I floats a position (+25 % of bf16 copies under
  // autocast, +50 % of f32-held ones); the peak holds kBackwardLayers of them, a factor measured on
  // the CPU (tests/train/test_memory_plan.cpp), not derived.
  add(t, "backward", kInFlight,
      kBackwardLayers * tokens * (8 * d + 4 * kv + 4 * i) * kF32 * (bf16 ? 1.0 + copy / 8 : 1.0));
  // Autocast's bf16 copies of the decoder's matrices: cached for a trained
  // leaf, kept by each linear whose input needs a gradient otherwise. A
  // frozen bf16 weight on the CPU is read as it is; on CUDA (f32 products)
  // it is widened to f32 per use and the graph keeps the copy.
  const double matrices = decoder_parameters(s) - static_cast<double>(s.layers * 2 + 1) * d -
                          (s.tied ? 0 : static_cast<double>(s.vocab) * d);  // the embedding is gathered, not multiplied
  if (bf16 && !(mode.frozen_lowp && !train && !mode.cuda))
    add(t, a, "decoder: bf16 copies of the weight matrices (autocast)", matrices * copy);
  if (!bf16 && mode.frozen_lowp && !train && mode.cuda)
    add(t, a, "decoder: frozen bf16 weights widened to f32 for the products (kept by the graph)", matrices * kF32);
  return t;
}

std::vector<MemoryTerm> encoder_activation_terms(const EncoderShape& s, int64_t batch, const StepMode& mode) {
  std::vector<MemoryTerm> t;
  const double tokens = static_cast<double>(batch) * static_cast<double>(s.tokens());
  const double per = static_cast<double>(s.layers) * tokens;
  const double d = static_cast<double>(s.hidden), i = static_cast<double>(s.intermediate);
  const bool bf16 = mode.bf16, products = uses_products(mode, s.tokens());
  const std::string a = "activations";
  const double copy = copy_bytes(mode);
  const double lin = bf16 ? copy : kF32;  // what a trained linear keeps of its input
  // The step holds the pixels; the patch embedding, a matmul over the
  // flattened patches, keeps that copy as its input when its weight trains.
  const double side = static_cast<double>(s.image / s.patch * s.patch);  // the pixels the patches cover
  const double grid_pixels = static_cast<double>(s.channels) * side * side;
  add(t, a, "encoder: pixels [B, C, H, W] and the flattened patches (patch linear input)",
      static_cast<double>(batch) *
          (static_cast<double>(s.channels * s.image * s.image) + (mode.trains_weights ? grid_pixels : 0)) * kF32);
  add(t, a, "encoder: embeddings (pre_layrnorm input)", tokens * d * kF32);
  add(t, a, "encoder: layer input and residual h (layer_norm1, layer_norm2)", per * (2 * d + 4) * kF32);
  add(t, a, "encoder: normed inputs of q/k/v and fc1", per * d * (bf16 ? 4 * copy : 2 * kF32));
  if (products) {
    add(t, a, "encoder: q, k, v as the products read them", per * 3 * d * lin);
    add(t, a, "encoder: attention probabilities [B, H, T, T]",
        per * static_cast<double>(s.heads) * static_cast<double>(s.tokens()) * (kF32 + (bf16 ? copy : kF32)));
  } else {
    add(t, a, "encoder: q, k, v (contiguous copies the fused attention keeps) and log-sum-exp",
        per * (3 * d + static_cast<double>(s.heads)) * kF32);
    if (keeps_probs(mode, s.tokens(), s.head_dim()))
      add(t, a, "encoder: attention probabilities [B, H, T, T] (the CPU kernel keeps them for rows of at most Dh keys)",
          per * static_cast<double>(s.heads) * static_cast<double>(s.tokens()) * kF32);
  }
  add(t, a, "encoder: attention output (out_proj input)", per * d * lin);
  // linear_gelu keeps z = x·Wᵀ + b; fc2 its input GELU(z).
  add(t, a, "encoder: fc1 pre-activation and GELU output (fc2 input)", per * i * (kF32 + lin));
  if (mode.trains_weights)
    add(t, "backward", kInFlight,
        kBackwardLayers * tokens * (8 * d + 2 * i) * kF32 * (bf16 ? 1.0 + copy / 8 : 1.0));
  return t;
}

// ---- a stage ---------------------------------------------------------------------------

double StagePlan::sum(const std::string& category) const {
  double total = 0;
  for (const MemoryTerm& t : terms)
    if (t.category == category) total += t.bytes;
  return total;
}

double StagePlan::peak() const {
  return sum("weights") + sum("gradients") + sum("optimizer") + sum("data") +
         std::max(sum("activations") + sum("backward"), sum("transient"));
}

namespace {

// The longest "<bos> prompt answer <eos>" the sample templates can make, in
// tokens with <image> counted once: every class combination's caption, and
// every question kind over them (the draws cover every template).
struct TextLengths {
  int64_t caption = 0, question = 0;
};

TextLengths longest_texts(const Tokenizer& tokenizer, int64_t grid) {
  // 2x2: every one of the 10^4 class combinations. 4x4 (10^16 of them): every
  // word is one token, so a text's length depends only on its kind and on
  // which class and cell it names; 100 mosaics (a class in cell 0, another in
  // the rest) and 10 with ten classes name each class and cell in each role.
  const int64_t cells = grid * grid;
  std::vector<int64_t> classes;
  if (grid == 2) {
    for (int64_t m = 0; m < 10 * 10 * 10 * 10; ++m)
      for (int64_t q = 0, rest = m; q < 4; ++q, rest /= 10) classes.push_back(rest % 10);
  } else {
    for (int64_t a = 0; a < 10; ++a)
      for (int64_t b = 0; b < 10; ++b)
        for (int64_t q = 0; q < cells; ++q) classes.push_back(q == 0 ? a : b);
    for (int64_t r = 0; r < 10; ++r)
      for (int64_t q = 0; q < cells; ++q) classes.push_back((q + r) % 10);
  }
  MosaicSet set;
  set.grid = grid;
  set.classes = Tensor::from_vector(classes, {static_cast<int64_t>(classes.size()) / cells, cells});
  auto longest = [&](const std::vector<Sample>& samples) {
    size_t out = 0;
    for (const Sample& s : samples)
      out = std::max(out, tokenizer.encode(s.prompt, {.bos = true}).size() +
                              tokenizer.encode(s.answer, {.eos = true}).size());
    return static_cast<int64_t>(out);
  };
  TextLengths lengths;
  lengths.caption = longest(caption_samples(set));
  for (QuestionKind kind : {QuestionKind::what, QuestionKind::where, QuestionKind::count, QuestionKind::exists}) {
    Generator gen(1);
    lengths.question = std::max(lengths.question, longest(instruction_samples(set, 1, gen, kind)));
  }
  return lengths;
}

StepMode mode_of(const TrainConfig& c, bool trains) {
  StepMode m;
  m.trains_weights = trains;
  m.bf16 = c.precision == "bf16";
  m.cuda = c.device.rfind("cuda", 0) == 0;
  return m;
}

void add_training_state(StagePlan& p, double trained, int world, int64_t zero_stage) {
  p.trained_parameters = trained;
  add(p.terms, "gradients", "f32 gradients of the trained parameters", trained * kF32);
  const double shards = zero_stage == 1 ? static_cast<double>(world) : 1.0;
  add(p.terms, "optimizer",
      std::string("AdamW m and v (f32)") + (zero_stage == 1 ? " / " + std::to_string(world) + " (ZeRO-1)" : ""),
      trained * 2 * kF32 / shards);
}

}  // namespace

std::vector<StagePlan> plan_training(const TrainConfig& c, int world) {
  VLMC_CHECK(world >= 1, "plan: ", world, " processes");
  const Tokenizer tokenizer(c.mosaic_grid);
  const double side = static_cast<double>(c.mosaic_side());  // pixels: 56, or 112 for 4x4 mosaics
  const EncoderShape enc{c.vision_hidden_size, c.vision_intermediate_size, c.vision_num_hidden_layers,
                         c.vision_num_attention_heads, 1, c.vision_patch_size, c.mosaic_side()};
  const DecoderShape dec{c.lm_hidden_size, c.lm_intermediate_size, c.lm_num_hidden_layers, c.lm_num_attention_heads,
                         c.lm_num_key_value_heads, tokenizer.vocab_size(), false};
  // The connector: built at its (small) size, as validate() does, for its
  // parameters and its visual tokens.
  Generator scratch(0);
  const auto connector =
      nn::make_projector(c.connector, c.vision_hidden_size, c.lm_hidden_size, c.connector_config(), scratch);
  const int64_t grid = c.patch_grid(), patches = grid * grid;
  int64_t visual_tokens = 0;
  {
    NoGradGuard no_grad;
    connector->eval();
    visual_tokens = connector->forward(Tensor::zeros({1, patches, c.vision_hidden_size})).size(1);
  }
  const double connector_params = static_cast<double>(connector->num_parameters());
  const double head_params = static_cast<double>(c.vision_hidden_size * 10 + 10);
  const double vision_params = encoder_parameters(enc), lm_params = decoder_parameters(dec);
  const TextLengths text = longest_texts(tokenizer, c.mosaic_grid);
  const double M = static_cast<double>(c.train_mosaics);

  auto base = [&](const std::string& stage, const std::string& key, int64_t batch) {
    StagePlan p;
    p.stage = stage;
    p.batch_key = key;
    p.data_key = "data.train_mosaics";
    p.model_keys = "vision.*, language.*";
    p.batch_value = batch;
    p.micro_batch = batch / world;  // run_training refuses a batch that does not split
    add(p.terms, "weights", "f32 parameters: vision tower, quadrant head, connector, language model",
        (vision_params + head_params + connector_params + lm_params) * kF32);
    add(p.terms, "data", "Fashion-MNIST train split (u8 images, i64 labels)", 60000.0 * (28 * 28 + 8));
    return p;
  };
  auto length_of = [&](int64_t text_tokens, int64_t slots) {
    return std::min(text_tokens - 1 + slots, c.lm_max_position_embeddings);
  };
  const double cells = static_cast<double>(c.mosaic_grid * c.mosaic_grid);
  const double pool_images = M * side * side * kF32 + M * cells * 8 * 2;  // f32 mosaics, i64 classes and sources
  std::vector<StagePlan> plans;

  {  // stage 0, vision: the encoder and the quadrant head train on fresh mosaics
    StagePlan p = base("stage0.vision", "stage0.vision.batch_size", c.stage0_vision.batch_size);
    add(p.terms, "data", "mosaic pool [M, S, S] f32 (until the features are cached)", pool_images);
    add_training_state(p, vision_params + head_params, world, c.zero_stage);
    for (MemoryTerm& t : encoder_activation_terms(enc, p.micro_batch, mode_of(c, true))) p.terms.push_back(t);
    const double B = static_cast<double>(p.micro_batch);
    add(p.terms, "activations", "the selected hidden state (the features)",
        B * static_cast<double>(patches * c.vision_hidden_size) * kF32);
    add(p.terms, "activations", "the step's mosaics [B, S, S] f32 (make_mosaics)", B * side * side * kF32);
    plans.push_back(std::move(p));
  }
  {  // stage 0, language: the decoder reads class words in the image slots
    StagePlan p = base("stage0.language", "stage0.language.batch_size", c.stage0_language.batch_size);
    p.length = length_of(std::max(text.caption, text.question), patches);
    add(p.terms, "data", "mosaic pool [M, S, S] f32 (until the features are cached)", pool_images);
    add_training_state(p, lm_params, world, c.zero_stage);
    for (MemoryTerm& t : decoder_activation_terms(dec, p.micro_batch, p.length, mode_of(c, true)))
      p.terms.push_back(t);
    plans.push_back(std::move(p));
  }
  const double features = M * static_cast<double>(patches * c.vision_hidden_size) * kF32;
  for (int stage : {1, 2}) {
    const StageSettings& s = stage == 1 ? c.stage1 : c.stage2;
    const std::string name = stage == 1 ? "stage1" : "stage2";
    StagePlan p = base(name, name + ".batch_size", s.batch_size);
    p.length = length_of(stage == 1 ? text.caption : text.question, visual_tokens);
    add(p.terms, "data", "frozen feature cache [M, N, Dv] f32 (features_of)", features);
    add(p.terms, "data", "the step's sample indices and its text batch (i64 ids, labels, mask)",
        static_cast<double>(s.batch_size) * 8 + static_cast<double>(p.micro_batch * p.length) * 3 * 8);
    add_training_state(p, connector_params + (stage == 2 ? lm_params : 0), world, c.zero_stage);
    // Before stage 1: features_of runs the encoder over the pool in chunks
    // of 256 without a graph, then concatenates them: the pool, the chunks
    // and the cache are alive together, with one chunk's hidden states.
    if (stage == 1)
      add(p.terms, "transient", "computing the feature cache: the pool, the chunks and one chunk's hidden states",
          pool_images + features +
              std::min(M, 256.0) * static_cast<double>(enc.tokens() * c.vision_hidden_size) *
                  static_cast<double>(c.vision_num_hidden_layers + 3) * kF32);
    const double B = static_cast<double>(p.micro_batch);
    // The step's features (index_select: a copy) are the connector's input;
    // an MLP projector keeps that, and per layer its pre-activation and output.
    add(p.terms, "activations", "connector: input features [B, N, Dv] and what its layers keep",
        B * (static_cast<double>(patches * c.vision_hidden_size) +
             static_cast<double>(visual_tokens * c.lm_hidden_size) * 2) * kF32);
    for (MemoryTerm& t : decoder_activation_terms(dec, p.micro_batch, p.length, mode_of(c, stage == 2)))
      p.terms.push_back(t);
    plans.push_back(std::move(p));
  }
  return plans;
}

// ---- real LLaVA sizes ------------------------------------------------------------------

std::vector<std::string> llava_presets() { return {"llava-1.5-7b", "llava-1.5-13b", "tinyllama-clip-b16"}; }

LlavaDescription llava_preset(const std::string& name) {
  LlavaDescription m;
  m.name = name;
  const EncoderShape clip_l336{1024, 4096, 24, 16, 3, 14, 336};  // CLIP ViT-L/14-336
  if (name == "llava-1.5-7b") {
    m.language = {4096, 11008, 32, 32, 32, 32000, false};  // Vicuna-7B
    m.vision = clip_l336;
  } else if (name == "llava-1.5-13b") {
    m.language = {5120, 13824, 40, 40, 40, 32000, false};  // Vicuna-13B
    m.vision = clip_l336;
  } else if (name == "tinyllama-clip-b16") {
    m.language = {2048, 5632, 22, 32, 4, 32000, false};  // TinyLlama-1.1B
    m.vision = {768, 3072, 12, 12, 3, 16, 224};          // CLIP ViT-B/16
  } else {
    std::string names;
    for (const std::string& p : llava_presets()) names += (names.empty() ? "" : ", ") + p;
    throw Error(str("plan: unknown preset '", name, "' (presets: ", names, ")"));
  }
  m.visual_tokens = m.vision.patches();
  return m;
}

LlavaDescription llava_from_hf_config(const std::string& path) {
  // A folder, or its config.json.
  namespace fs = std::filesystem;
  const fs::path given(path);
  const std::string dir = fs::is_directory(given) ? path : given.parent_path().string();
  VLMC_CHECK(fs::is_directory(given) || given.filename() == "config.json", "plan: --model-config '", path,
             "' must be a model folder or its config.json");
  const nn::HfModelConfig hf = nn::read_hf_config(dir.empty() ? "." : dir);
  LlavaDescription m = llava_preset("llava-1.5-7b");  // the tower LLaVA-1.5 uses, when the file has none
  m.name = hf.path;
  VLMC_CHECK(hf.kind != nn::HfKind::clip_vision && hf.kind != nn::HfKind::clip, "plan: ", hf.path, " is a ",
             nn::hf_kind_name(hf.kind), ": a vision tower alone, not a LLaVA or a LLaMA");
  const nn::LlamaConfig& t = hf.text;
  m.language = {t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
                t.num_key_value_heads, t.vocab_size, t.tie_word_embeddings};
  if (hf.kind == nn::HfKind::llava) {
    const nn::CLIPVisionConfig& v = hf.vision;
    m.vision = {v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads, v.num_channels,
                v.patch_size, v.image_size};
  }
  if (hf.kind == nn::HfKind::llava || hf.kind == nn::HfKind::llava_original) {
    const std::string& type = hf.llava.projector_type;
    VLMC_CHECK(type == "linear" || type == "identity" || (type.rfind("mlp", 0) == 0 && type.size() > 9),
               "plan: ", hf.path,
               ": projector '", type, "' is not one `vlmc plan` counts (linear, mlp{N}x_gelu)");
    m.projector_depth = type == "identity" ? 0 : type == "linear" ? 1 : std::stoll(type.substr(3, type.find('x') - 3));
  }
  m.visual_tokens = m.vision.patches() + (hf.llava.keep_cls ? 1 : 0);
  return m;
}

StagePlan plan_llava_run(const TrainConfig& c, int world) {
  const LlavaSources sources = resolve_llava_sources(c);
  const nn::HfModelConfig& tower = sources.tower;
  const nn::HfModelConfig& lm = sources.language;
  LlavaDescription m;
  m.name = sources.pretrained.empty() ? c.model_vision_tower + " + " + c.model_language_model : sources.pretrained;
  const nn::LlamaConfig& t = lm.text;
  m.language = {t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
                t.num_key_value_heads, t.vocab_size, t.tie_word_embeddings};
  const nn::CLIPVisionConfig& v = tower.vision;
  m.vision = {v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads, v.num_channels,
              v.patch_size, v.image_size};
  m.visual_tokens = m.vision.patches() + (c.model_vision_select_feature == "cls_patch" ? 1 : 0);
  const StageSettings& s = c.llava_stage();
  const std::string stage = c.model_stage == 2 ? "stage2" : "stage1";
  VLMC_CHECK(s.batch_size % world == 0, stage, ".batch_size ", s.batch_size, " does not split over ", world,
             " processes");
  LlavaPlanSettings p;
  p.stage = static_cast<int>(c.model_stage);
  p.batch = s.batch_size / world;
  p.length = c.data_model_max_length;
  p.accumulation = s.gradient_accumulation_steps;
  p.processes = world;
  p.zero_stage = static_cast<int>(c.zero_stage);
  p.frozen_bf16 = c.model_weights_dtype != "f32";
  p.bf16_autocast = c.precision == "bf16";
  p.cuda = c.device.rfind("cuda", 0) == 0;
  p.checkpointing = c.model_gradient_checkpointing;
  StagePlan plan = plan_llava(m, p);
  plan.batch_key = stage + ".batch_size";
  plan.batch_value = s.batch_size;
  plan.model_keys = "model.vision_tower, model.language_model, data.model_max_length";
  return plan;
}

StagePlan plan_llava(const LlavaDescription& m, const LlavaPlanSettings& s) {
  VLMC_CHECK(s.stage == 1 || s.stage == 2, "plan: --stage must be 1 or 2, got ", s.stage);
  VLMC_CHECK(s.batch >= 1 && s.length >= 2 && s.processes >= 1 && s.accumulation >= 1,
             "plan: --batch, --seq (>= 2), --processes and --accumulation must be positive");
  VLMC_CHECK(s.zero_stage == 0 || s.zero_stage == 1, "plan: --zero-stage must be 0 or 1, got ", s.zero_stage);
  StagePlan p;
  p.stage = "stage" + std::to_string(s.stage);
  p.batch_key = "--batch";
  p.model_keys = m.name;
  p.batch_value = s.batch;
  p.micro_batch = s.batch;
  p.length = s.length;
  const double lm = decoder_parameters(m.language), tower = encoder_parameters(m.vision);
  const double projector = mlp_projector_parameters(m.vision.hidden, m.language.hidden, m.projector_depth);
  const double frozen = s.frozen_bf16 ? kBf16 : kF32;
  const std::string frozen_name = s.frozen_bf16 ? "bf16" : "f32";
  add(p.terms, "weights", "vision tower (frozen, " + frozen_name + ")", tower * frozen);
  add(p.terms, "weights",
      s.stage == 1 ? "language model (frozen, " + frozen_name + ")" : "language model (trained: f32 masters)",
      lm * (s.stage == 1 ? frozen : kF32));
  add(p.terms, "weights", "projector (trained: f32)", projector * kF32);
  add_training_state(p, projector + (s.stage == 2 ? lm : 0), static_cast<int>(s.processes), s.zero_stage);

  StepMode mode;
  mode.trains_weights = s.stage == 2;
  mode.bf16 = s.bf16_autocast;
  mode.cuda = s.cuda;
  mode.checkpointing = s.checkpointing;
  mode.frozen_lowp = s.frozen_bf16;
  const double B = static_cast<double>(s.batch), N = static_cast<double>(m.visual_tokens);
  const double dv = static_cast<double>(m.vision.hidden), d = static_cast<double>(m.language.hidden);
  const double lin = s.bf16_autocast ? copy_bytes(mode) : kF32;
  add(p.terms, "activations", "projector: input features, pre-activation, GELU output",
      B * N * (dv * lin + d * (kF32 + lin)) + (s.bf16_autocast ? projector * copy_bytes(mode) : 0));
  for (MemoryTerm& t : decoder_activation_terms(m.language, s.batch, s.length, mode)) p.terms.push_back(t);
  // The frozen tower runs each step without a graph: every hidden state is
  // returned (vision_features picks one), plus one layer's working set.
  const double tokens = B * static_cast<double>(m.vision.tokens());
  add(p.terms, "transient", "vision tower forward (no graph): all hidden states + one layer's work",
      tokens * dv * kF32 * static_cast<double>(m.vision.layers + 1) +
          tokens * (6 * dv + 2 * static_cast<double>(m.vision.intermediate)) * kF32 +
          (uses_products(mode, m.vision.tokens())
               ? tokens * static_cast<double>(m.vision.heads * m.vision.tokens()) * (2 * kF32 + copy_bytes(mode))
               : 0));
  return p;
}

// ---- units and limits ------------------------------------------------------------------

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000 && u < 6) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

double parse_bytes(const std::string& text, const std::string& what) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  std::string unit(end);
  unit.erase(0, unit.find_first_not_of(' '));
  for (char& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const std::vector<std::pair<std::string, double>> units = {
      {"", 1},          {"b", 1},           {"kb", 1e3},        {"mb", 1e6},        {"gb", 1e9},
      {"tb", 1e12},     {"kib", 1024.0},    {"mib", 1048576.0}, {"gib", 1073741824.0},
      {"tib", 1099511627776.0}, {"k", 1e3}, {"m", 1e6},         {"g", 1e9},         {"t", 1e12}};
  VLMC_CHECK(end != begin && std::isfinite(value) && value > 0, what, ": '", text,
             "' is not a positive size such as 141GB or 80GiB");
  for (const auto& [name, scale] : units)
    if (unit == name) return value * scale;
  throw Error(str(what, ": '", text, "' has an unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"));
}

namespace {

double meminfo_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

}  // namespace

AvailableMemory available_memory() {
  if (const char* env = std::getenv("VLMC_MEMORY_LIMIT"); env && *env)
    return {std::string(env) == "off" ? 0 : parse_bytes(env, "VLMC_MEMORY_LIMIT"), "VLMC_MEMORY_LIMIT"};
  // The cgroup's headroom where it is below the machine's MemAvailable (or
  // that is unknown): a container's limit leaves /proc/meminfo showing the host.
  const double machine = meminfo_available_bytes();
  if (const std::optional<CgroupMemory> cgroup = cgroup_memory_available();
      cgroup && (machine <= 0 || cgroup->available_bytes < machine))
    return {cgroup->available_bytes, "the cgroup's limit less its usage (" + cgroup->limit_file + ")"};
  return {machine, "MemAvailable in /proc/meminfo"};
}

void check_plan_fits(const std::vector<StagePlan>& plans, double available, const std::string& where) {
  if (available <= 0) return;
  for (const StagePlan& p : plans) {
    if (p.peak() <= available) continue;
    std::ostringstream parts;
    const char* order[] = {"weights", "gradients", "optimizer", "activations", "backward", "data", "transient"};
    bool first = true;
    for (const char* category : order) {
      const double bytes = p.sum(category);
      if (bytes < p.peak() * 0.01) continue;
      parts << (first ? "" : ", ") << category << " " << format_bytes(bytes);
      first = false;
    }
    // Name what drives the largest part: the batch (activations), the data
    // set, or the models' sizes.
    const double batch_part = p.sum("activations") + p.sum("backward");
    const double model_part = p.sum("weights") + p.sum("gradients") + p.sum("optimizer");
    const double data_part = p.sum("data") + p.sum("transient");
    const std::string sequences = p.length > 0 ? str(" for sequences of ", p.length, " positions") : std::string();
    const std::string estimate = str(p.stage, " needs an estimated ", format_bytes(p.peak()), " per process (",
                                     parts.str(), ")", sequences, ", more than the ", format_bytes(available),
                                     " available (", where, "); ");
    if (batch_part >= model_part && batch_part >= data_part)
      throw Error(str(p.batch_key, " ", p.batch_value, ": ", estimate, "lower ", p.batch_key,
                      " (raise its gradient_accumulation_steps to keep the effective batch). `vlmc plan` prints "
                      "the estimate."));
    if (data_part >= model_part && !p.data_key.empty())
      throw Error(str(p.data_key, ": ", estimate, "lower ", p.data_key, ". `vlmc plan` prints the estimate."));
    throw Error(str(p.stage, ": ", estimate, "the models' sizes (", p.model_keys,
                    ") are too large for this machine. `vlmc plan` prints the estimate."));
  }
}

}  // namespace vlmc::train
