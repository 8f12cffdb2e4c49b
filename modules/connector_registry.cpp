#include "modules/connector_registry.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/text.h"
#include "modules/connectors.h"
#include "modules/connectors_honeybee.h"
#include "modules/connectors_post_llava.h"

namespace vlmc::nn {
namespace {

// Linear(in, out) with bias.
int64_t linear_params(int64_t in, int64_t out) { return in * out + out; }
// Linear(in, hidden) -> GELU -> Linear(hidden, out).
int64_t mlp_params(int64_t in, int64_t hidden, int64_t out) {
  return linear_params(in, hidden) + linear_params(hidden, out);
}
void add_mlp_flops(ConnectorFlops& f, double rows, double in, double hidden, double out, bool input_grad) {
  f.layer(2.0 * rows * in * hidden, input_grad);
  f.layer(2.0 * rows * hidden * out, true);
}

double d(int64_t v) { return static_cast<double>(v); }

int64_t dynamic_keep(const ConnectorConfig& c, int64_t tokens, std::optional<int64_t> target) {
  return target.value_or(std::min(tokens, c.max_tokens));
}

int64_t same_tokens(const ConnectorConfig&, int64_t tokens, std::optional<int64_t>) { return tokens; }
int64_t merged_tokens(const ConnectorConfig& c, int64_t tokens, std::optional<int64_t>) {
  return tokens / (c.merge_size * c.merge_size);
}
int64_t perceiver_hidden(const ConnectorConfig& c) {
  return c.dim_hidden && *c.dim_hidden != 0 ? *c.dim_hidden : perceiver_default_hidden(c.dim_llm);
}
int64_t honeybee_hidden(const ConnectorConfig& c) {
  return c.dim_hidden && *c.dim_hidden != 0 ? *c.dim_hidden : c.dim_vision;
}
// One RegNet bottleneck (connectors_honeybee.h): 1x1 convs and a depthwise
// 3x3 without biases, a LayerNorm (weight, bias) after each, the
// squeeze-excite's two 1x1 convs with biases, a 1x1 shortcut when in != out.
int64_t bottleneck_params(int64_t in, int64_t out) {
  const int64_t rd = squeeze_channels(in);
  return (in * out + 2 * out) + (9 * out + 2 * out) + (out * rd + rd + rd * out + out) + (out * out + 2 * out) +
         (in != out ? in * out + 2 * out : 0);
}
int64_t reg_stage_params(int64_t depth, int64_t in, int64_t out) {
  return bottleneck_params(in, out) + (depth - 1) * bottleneck_params(out, out);
}
void add_reg_stage_flops(ConnectorFlops& f, double rows, int64_t depth, int64_t in, int64_t out) {
  for (int64_t i = 0; i < depth; ++i) {
    const double cin = d(i == 0 ? in : out), cout = d(out);
    f.layer(2.0 * rows * cin * cout, true);   // conv1 (the positions make the features need a gradient)
    f.layer(2.0 * rows * cout * 9.0, true);   // depthwise conv2
    f.layer(2.0 * rows * cout * cout, true);  // conv3
    if (i == 0 && in != out) f.layer(2.0 * rows * cin * cout, true);  // the shortcut's 1x1
  }
}
int64_t pooled_tokens(const ConnectorConfig& c, int64_t, std::optional<int64_t>) {
  return c.target_size * c.target_size;
}

std::vector<ConnectorKind> build_registry() {
  std::vector<ConnectorKind> r;

  r.push_back({"linear", "LinearProjection", "LLaVA v1: one Linear(Dv, Dllm) per token", {}, "N",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<LinearProjection>(c.dim_vision, c.dim_llm, g);
               },
               [](const ConnectorConfig& c) { return linear_params(c.dim_vision, c.dim_llm); }, same_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 f.layer(2.0 * d(batch) * d(tokens) * d(c.dim_vision) * d(c.dim_llm), false);
                 return f;
               }});

  r.push_back({"mlp", "MLPConnector", "LLaVA-1.5: Linear -> GELU -> Linear per token", {"dim_hidden"}, "N",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<MLPConnector>(c.dim_vision, c.dim_llm, c.dim_hidden, g);
               },
               [](const ConnectorConfig& c) {
                 return mlp_params(c.dim_vision, c.dim_hidden.value_or(c.dim_llm), c.dim_llm);
               },
               same_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 add_mlp_flops(f, d(batch) * d(tokens), d(c.dim_vision), d(c.dim_hidden.value_or(c.dim_llm)),
                               d(c.dim_llm), false);
                 return f;
               }});

  r.push_back({"downsample", "DownsamplingConnector",
               "adaptive average pooling of the patch grid, then the MLP", {"grid_size", "target_size"},
               "target_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<DownsamplingConnector>(c.dim_vision, c.dim_llm, c.grid_size,
                                                                c.target_size, g);
               },
               [](const ConnectorConfig& c) { return mlp_params(c.dim_vision, c.dim_llm, c.dim_llm); },
               pooled_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t, std::optional<int64_t>) {
                 ConnectorFlops f;
                 add_mlp_flops(f, d(batch) * d(c.target_size * c.target_size), d(c.dim_vision), d(c.dim_llm),
                               d(c.dim_llm), false);
                 return f;
               }});

  r.push_back({"c-abstractor", "CAbstractor",
               "3x3 Conv2d + BatchNorm2d + GELU blocks on the grid, adaptive pooling, then the MLP",
               {"grid_size", "target_size", "num_conv_layers"}, "target_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<CAbstractor>(c.dim_vision, c.dim_llm, c.grid_size, c.target_size,
                                                      c.num_conv_layers, g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t Dv = c.dim_vision;
                 const int64_t conv = Dv * Dv * 9 + Dv, batchnorm = 2 * Dv;  // BN buffers are not parameters
                 return c.num_conv_layers * (conv + batchnorm) + mlp_params(Dv, c.dim_llm, c.dim_llm);
               },
               pooled_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t, std::optional<int64_t>) {
                 ConnectorFlops f;
                 int64_t side = c.grid_size;  // 3x3 kernels, padding 1, Dv -> Dv channels
                 for (int64_t i = 0; i < c.num_conv_layers; ++i) {
                   side = (side - 1) / c_abstractor_stride(c.grid_size, c.target_size, i) + 1;
                   f.layer(2.0 * d(batch) * d(side * side) * d(c.dim_vision) * d(c.dim_vision) * 9.0, i > 0);
                 }
                 add_mlp_flops(f, d(batch) * d(c.target_size * c.target_size), d(c.dim_vision), d(c.dim_llm),
                               d(c.dim_llm), c.num_conv_layers > 0);
                 return f;
               }});

  r.push_back({"dynamic", "DynamicResolutionConnector",
               "keeps the target_tokens best-scored tokens (sigmoid of a Linear(Dv, 1)), then the MLP",
               {"max_tokens", "min_tokens", "score_weighting"}, "target_tokens, or min(N, max_tokens)",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<DynamicResolutionConnector>(c.dim_vision, c.dim_llm, c.max_tokens,
                                                                     c.min_tokens, c.score_weighting, g);
               },
               [](const ConnectorConfig& c) {
                 return mlp_params(c.dim_vision, c.dim_llm, c.dim_llm) + linear_params(c.dim_vision, 1);
               },
               [](const ConnectorConfig& c, int64_t tokens, std::optional<int64_t> target) {
                 return std::min(tokens, dynamic_keep(c, tokens, target));
               },
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t> target) {
                 ConnectorFlops f;
                 const int64_t keep = dynamic_keep(c, tokens, target);
                 if (tokens <= keep) {
                   add_mlp_flops(f, d(batch) * d(tokens), d(c.dim_vision), d(c.dim_llm), d(c.dim_llm), false);
                   return f;
                 }
                 // The scorer gets a gradient only with score weighting (off: the seed).
                 if (c.score_weighting) f.layer(2.0 * d(batch) * d(tokens) * d(c.dim_vision), false);
                 else f.forward += 2.0 * d(batch) * d(tokens) * d(c.dim_vision);
                 add_mlp_flops(f, d(batch) * d(keep), d(c.dim_vision), d(c.dim_llm), d(c.dim_llm), false);
                 return f;
               }});

  r.push_back({"ocr", "OCRProjectionConnector",
               "learned positions added (stretched when N > max_visual_tokens), LayerNorm, then the MLP",
               {"max_visual_tokens"}, "N",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<OCRProjectionConnector>(c.dim_vision, c.dim_llm, c.max_visual_tokens, g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t positions = c.max_visual_tokens * c.dim_vision, layer_norm = 2 * c.dim_vision;
                 return positions + layer_norm + mlp_params(c.dim_vision, c.dim_llm, c.dim_llm);
               },
               same_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;  // features + pos_embed: the positions need a gradient
                 add_mlp_flops(f, d(batch) * d(tokens), d(c.dim_vision), d(c.dim_llm), d(c.dim_llm), true);
                 return f;
               }});

  // ---- after LLaVA (modules/connectors_post_llava.h) ----

  r.push_back({"patch-merger", "PatchMerger",
               "Qwen2-VL: LayerNorm per patch, each merge_size² window concatenated, then an MLP at that width",
               {"grid_size", "merge_size"}, "N / merge_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<PatchMerger>(c.dim_vision, c.dim_llm, c.grid_size, c.merge_size, g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t merged = c.dim_vision * c.merge_size * c.merge_size;
                 return 2 * c.dim_vision + mlp_params(merged, merged, c.dim_llm);
               },
               merged_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;  // the LayerNorm's parameters make its output need a gradient
                 const double merged = d(c.dim_vision * c.merge_size * c.merge_size);
                 add_mlp_flops(f, d(batch) * d(merged_tokens(c, tokens, {})), merged, merged, d(c.dim_llm), true);
                 return f;
               }});

  r.push_back({"pixel-shuffle", "InternVLChatModel.mlp1",
               "InternVL: each merge_size² window concatenated (space-to-depth), then LayerNorm -> Linear -> GELU -> Linear",
               {"grid_size", "merge_size"}, "N / merge_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<PixelShuffleConnector>(c.dim_vision, c.dim_llm, c.grid_size, c.merge_size,
                                                                g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t merged = c.dim_vision * c.merge_size * c.merge_size;
                 return 2 * merged + mlp_params(merged, c.dim_llm, c.dim_llm);
               },
               merged_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 add_mlp_flops(f, d(batch) * d(merged_tokens(c, tokens, {})),
                               d(c.dim_vision * c.merge_size * c.merge_size), d(c.dim_llm), d(c.dim_llm), true);
                 return f;
               }});

  r.push_back({"ldp-v2", "LDPNetV2Projector",
               "MobileVLM V2: the MLP per patch, adaptive average pooling to target_size², then x + 3x3 depthwise conv (PEG)",
               {"grid_size", "target_size"}, "target_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<LDPv2Connector>(c.dim_vision, c.dim_llm, c.grid_size, c.target_size, g);
               },
               [](const ConnectorConfig& c) {
                 return mlp_params(c.dim_vision, c.dim_llm, c.dim_llm) + c.dim_llm * 9 + c.dim_llm;
               },
               pooled_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 add_mlp_flops(f, d(batch) * d(tokens), d(c.dim_vision), d(c.dim_llm), d(c.dim_llm), false);
                 f.layer(2.0 * d(batch) * d(c.target_size * c.target_size) * d(c.dim_llm) * 9.0, true);
                 return f;
               }});

  r.push_back({"honeybee", "CAbstractor (Honeybee)",
               "Honeybee: learned positions, RegNet bottlenecks (depthwise 3x3, squeeze-excite, LayerNorm, SiLU), "
               "adaptive pooling to target_size², more bottlenecks, Linear -> SiLU -> Linear",
               {"grid_size", "target_size", "dim_hidden", "reg_depth"}, "target_size²",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<HoneybeeCAbstractor>(c.dim_vision, c.dim_llm, c.grid_size, c.target_size,
                                                              honeybee_hidden(c), c.reg_depth, g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t H = honeybee_hidden(c);
                 return c.grid_size * c.grid_size * c.dim_vision + reg_stage_params(c.reg_depth, c.dim_vision, H) +
                        reg_stage_params(c.reg_depth, H, H) + linear_params(H, c.dim_llm) +
                        linear_params(c.dim_llm, c.dim_llm);
               },
               pooled_tokens,
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 const int64_t H = honeybee_hidden(c);
                 add_reg_stage_flops(f, d(batch) * d(tokens), c.reg_depth, c.dim_vision, H);
                 const double pooled = d(batch) * d(c.target_size * c.target_size);
                 add_reg_stage_flops(f, pooled, c.reg_depth, H, H);
                 f.layer(2.0 * pooled * d(H) * d(c.dim_llm), true);
                 f.layer(2.0 * pooled * d(c.dim_llm) * d(c.dim_llm), true);
                 return f;
               }});

  r.push_back({"perceiver", "Idefics2Connector",
               "Idefics2: SwiGLU projection, then num_latents learned queries cross-attending to the patches, "
               "resampler_depth layers",
               {"dim_hidden", "num_latents", "resampler_depth", "resampler_heads", "resampler_head_dim",
                "resampler_kv_heads"},
               "num_latents",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<PerceiverResamplerConnector>(
                     c.dim_vision, c.dim_llm, perceiver_hidden(c), c.num_latents, c.resampler_depth,
                     c.resampler_heads, c.resampler_head_dim, c.resampler_kv_heads, g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t D = c.dim_llm, q = c.resampler_heads * c.resampler_head_dim,
                               kv = c.resampler_kv_heads * c.resampler_head_dim;
                 const int64_t layer = 3 * D + D * q + 2 * D * kv + q * D + 12 * D * D;  // norms, attention, SwiGLU(D, 4D)
                 const int64_t hidden = perceiver_hidden(c);
                 return 2 * c.dim_vision * hidden + hidden * D + c.num_latents * D + c.resampler_depth * layer + D;
               },
               [](const ConnectorConfig& c, int64_t, std::optional<int64_t>) { return c.num_latents; },
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 const double B = d(batch), N = d(tokens), L = d(c.num_latents), D = d(c.dim_llm),
                              hidden = d(perceiver_hidden(c)), q = d(c.resampler_heads * c.resampler_head_dim),
                              kv = d(c.resampler_kv_heads * c.resampler_head_dim);
                 f.layer(2.0 * 2.0 * B * N * d(c.dim_vision) * hidden, false);  // gate and up
                 f.layer(2.0 * B * N * hidden * D, true);                        // down
                 for (int64_t i = 0; i < c.resampler_depth; ++i) {
                   f.layer(2.0 * B * L * D * q, true);                 // q_proj
                   f.layer(2.0 * 2.0 * B * (N + L) * D * kv, true);    // k_proj, v_proj
                   f.layer(2.0 * 2.0 * B * L * (N + L) * q, true);     // scores and their average
                   f.layer(2.0 * B * L * q * D, true);                 // o_proj
                   f.layer(2.0 * B * L * 12.0 * D * D, true);          // SwiGLU(D, 4D, D)
                 }
                 return f;
               }});

  r.push_back({"qwen-resampler", "Resampler + ln_post + proj",
               "Qwen-VL: num_latents learned queries, one cross-attention layer with 2D sin-cos positions, "
               "then LayerNorm and a projection",
               {"num_latents", "resampler_heads"}, "num_latents",
               [](const ConnectorConfig& c, Generator& g) -> std::shared_ptr<Connector> {
                 return std::make_shared<QwenVLResampler>(c.dim_vision, c.dim_llm, c.num_latents, c.resampler_heads,
                                                          g);
               },
               [](const ConnectorConfig& c) {
                 const int64_t D = c.dim_llm;
                 const int64_t kv_proj = c.dim_vision != D ? c.dim_vision * D : 0;  // else nn.Identity
                 // query, kv_proj, MultiheadAttention (stacked q/k/v + out_proj), 3 LayerNorms, proj;
                 // the fixed pos_embed is a buffer
                 return c.num_latents * D + kv_proj + (3 * D * D + 3 * D) + (D * D + D) + 3 * 2 * D + D * D;
               },
               [](const ConnectorConfig& c, int64_t, std::optional<int64_t>) { return c.num_latents; },
               [](const ConnectorConfig& c, int64_t batch, int64_t tokens, std::optional<int64_t>) {
                 ConnectorFlops f;
                 const double B = d(batch), N = d(tokens), L = d(c.num_latents), D = d(c.dim_llm);
                 if (c.dim_vision != c.dim_llm) f.layer(2.0 * B * N * d(c.dim_vision) * D, false);  // kv_proj
                 f.layer(2.0 * 2.0 * B * N * D * D, true);  // keys and values
                 f.layer(2.0 * B * L * D * D, true);        // queries
                 f.layer(2.0 * 2.0 * B * L * N * D, true);  // scores and their average
                 f.layer(2.0 * B * L * D * D, true);        // out_proj
                 f.layer(2.0 * B * L * D * D, true);        // proj
                 return f;
               }});
  return r;
}

// The optional ConnectorConfig fields a caller can tell apart from "not
// given": set for a connector that does not read them, they are refused
// rather than ignored.
struct OptionalField {
  const char* name;
  bool (*is_set)(const ConnectorConfig&);
};
constexpr OptionalField kOptionalFields[] = {
    {"dim_hidden", [](const ConnectorConfig& c) { return c.dim_hidden.has_value(); }},
    {"score_weighting", [](const ConnectorConfig& c) { return c.score_weighting; }},
};

std::string readers_of(const std::string& option) {
  std::vector<std::string> readers;
  for (const ConnectorKind& k : connector_registry())
    if (std::find(k.options.begin(), k.options.end(), option) != k.options.end()) readers.push_back(k.name);
  return join(readers);
}

}  // namespace

const std::vector<ConnectorKind>& connector_registry() {
  static const std::vector<ConnectorKind> registry = build_registry();
  return registry;
}

const ConnectorKind& connector_kind(const std::string& name) {
  for (const ConnectorKind& k : connector_registry())
    if (k.name == name) return k;
  throw Error("unknown connector type \"" + name + "\" (known: " + join(connector_types()) + ")");
}

const std::vector<std::string>& connector_types() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const ConnectorKind& k : connector_registry()) out.push_back(k.name);
    return out;
  }();
  return names;
}

std::shared_ptr<Connector> make_connector(const ConnectorConfig& c, Generator& gen) {
  const ConnectorKind* kind = nullptr;
  try {
    kind = &connector_kind(c.type);
  } catch (const Error& e) {
    throw Error(std::string("make_connector: ") + e.what());
  }
  for (const OptionalField& field : kOptionalFields) {
    const bool reads = std::find(kind->options.begin(), kind->options.end(), field.name) != kind->options.end();
    const std::string readers = readers_of(field.name);
    VLMC_CHECK(!field.is_set(c) || reads, "make_connector: ", field.name, " applies only to type",
               readers.find(',') == std::string::npos ? " " : "s ", readers, ", not ", c.type);
  }
  return kind->make(c, gen);
}

std::string connector_table_markdown() {
  std::string out =
      "| type | class | N' | options | parameters at the defaults | what it does |\n"
      "| --- | --- | --- | --- | ---: | --- |\n";
  const ConnectorConfig defaults;
  for (const ConnectorKind& k : connector_registry()) {
    std::vector<std::string> quoted;
    for (const std::string& o : k.options) quoted.push_back("`" + o + "`");
    const std::string options = join(quoted);
    ConnectorConfig c = defaults;
    c.type = k.name;
    out += "| `" + k.name + "` | `" + k.class_name + "` | " + k.tokens_formula + " | " +
           (options.empty() ? "-" : options) + " | " + with_commas(k.parameters(c)) + " | " + k.description +
           " |\n";
  }
  return out;
}

}  // namespace vlmc::nn
