// The one table of connectors: every place that knows a connector by name
// (make_connector, the CLI's --type, `vlmc connector list`, `vlmc experiment
// connectors`, the FLOP count of `connector bench`, docs/connectors.md's
// table) reads its row here. A fork adds a connector by adding one row to
// connector_registry() in connector_registry.cpp; nothing else branches on
// the name, so a connector cannot be half-added.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modules/connector.h"

namespace vlmc::nn {

// Multiply-adds of the matmuls and convolutions only (2 FLOPs each);
// pooling, GELU, normalisation and top-k are a rounding error beside them.
struct ConnectorFlops {
  double forward = 0;
  // The weight gradient of every layer (as much as its forward) and the input
  // gradient of every layer whose input needs one (as much again). The
  // visual features need none (the encoder is frozen), so a first layer
  // applied to them costs 1x, not 2x.
  double backward = 0;
  void layer(double flops, bool input_grad) {
    forward += flops;
    backward += input_grad ? 2 * flops : flops;
  }
};

struct ConnectorKind {
  std::string name;         // connector.type, --type
  std::string class_name;   // the seed's (or the paper's) PyTorch class
  std::string description;  // one line: what it does to the tokens
  // ConnectorConfig fields it reads besides dim_vision and dim_llm. An
  // optional field set for a connector that does not list it is refused.
  std::vector<std::string> options;
  // N' as a formula of the options, for the docs ("N", "target_size²").
  std::string tokens_formula;

  std::function<std::shared_ptr<Connector>(const ConnectorConfig&, Generator&)> make;
  // Closed form of make(c)->num_parameters() (tests check the two agree).
  std::function<int64_t(const ConnectorConfig&)> parameters;
  // N' for `tokens` visual features and the forward's target_tokens.
  std::function<int64_t(const ConnectorConfig&, int64_t tokens, std::optional<int64_t> target_tokens)>
      visual_tokens;
  // One forward (and backward) on [batch, tokens, Dv].
  std::function<ConnectorFlops(const ConnectorConfig&, int64_t batch, int64_t tokens,
                               std::optional<int64_t> target_tokens)>
      flops;
};

// In the order the docs and `vlmc experiment connectors` list them.
const std::vector<ConnectorKind>& connector_registry();
// The row named `name`; an unknown name is an error listing the known ones.
const ConnectorKind& connector_kind(const std::string& name);

// The registry as the Markdown table docs/connectors.md holds (parameters at
// the seed's defaults: LLaVA-1.5's 1024 -> 4096 on 576 patches); `vlmc
// connector list` prints it and a test keeps the docs equal to it.
std::string connector_table_markdown();

}  // namespace vlmc::nn
