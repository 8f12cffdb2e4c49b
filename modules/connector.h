// The connector interface and factory: every connector of the seed maps
// visual features [B, N, Dv] to visual tokens [B, N', Dllm], and is built by
// name from the seed's constructor arguments.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/random.h"
#include "modules/module.h"

namespace vlmc::nn {

// The seed's constructor arguments (and their defaults) for every connector.
struct ConnectorConfig {
  std::string type = "mlp";  // one of connector_types()
  int64_t dim_vision = 1024;
  int64_t dim_llm = 4096;
  std::optional<int64_t> dim_hidden;  // mlp: default dim_llm; perceiver: default 3.5 * dim_llm; honeybee: default dim_vision
  int64_t grid_size = 24;             // downsample, c-abstractor
  int64_t target_size = 12;           // downsample, c-abstractor
  int64_t num_conv_layers = 2;        // c-abstractor
  int64_t max_tokens = 576;           // dynamic
  int64_t min_tokens = 64;            // dynamic
  int64_t max_visual_tokens = 1024;   // ocr
  bool score_weighting = false;       // dynamic: scale kept tokens by their score (off = the seed)
  // The connectors after LLaVA (modules/connectors_post_llava.h):
  int64_t merge_size = 2;             // patch-merger, pixel-shuffle: r x r neighbours become one token
  int64_t num_latents = 64;           // perceiver: learned queries = visual tokens (Idefics2: 64)
  int64_t resampler_depth = 3;        // perceiver: cross-attention layers (Idefics2: 3)
  int64_t resampler_heads = 16;       // perceiver: query heads (Idefics2: 16)
  int64_t resampler_head_dim = 96;    // perceiver: width of each head (Idefics2: 96)
  int64_t resampler_kv_heads = 4;     // perceiver: key/value heads, dividing resampler_heads (Idefics2: 4)
  int64_t reg_depth = 3;              // honeybee: RegNet bottlenecks per stage (Honeybee: 3)
};

class Connector : public Module {
 public:
  // visual_features [B, N, Dv] -> [B, N', Dllm]. target_tokens is the dynamic
  // connector's forward argument; the other connectors refuse a value.
  virtual Tensor forward(const Tensor& visual_features,
                         std::optional<int64_t> target_tokens = std::nullopt) = 0;
};

// The names of connector_registry() (modules/connector_registry.h), in its
// order: "linear", "mlp", "downsample", "c-abstractor", "dynamic", "ocr".
const std::vector<std::string>& connector_types();

// Builds the connector config.type names through its registry row; an
// unknown type is an error that lists the known ones, and an optional field
// the type does not read (dim_hidden, score_weighting) is refused.
std::shared_ptr<Connector> make_connector(const ConnectorConfig& config,
                                          Generator& gen = default_generator());

}  // namespace vlmc::nn
