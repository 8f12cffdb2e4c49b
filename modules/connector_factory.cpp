// make_connector: the seed's connectors by name, from their constructor arguments.
#include <algorithm>

#include "modules/connector.h"
#include "modules/connectors.h"

namespace vlmc::nn {

const std::vector<std::string>& connector_types() {
  static const std::vector<std::string> types = {"linear", "mlp", "downsample", "c-abstractor", "dynamic", "ocr"};
  return types;
}

std::shared_ptr<Connector> make_connector(const ConnectorConfig& c, Generator& gen) {
  const auto& types = connector_types();
  if (std::find(types.begin(), types.end(), c.type) == types.end()) {
    std::string known;
    for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
    throw Error("make_connector: unknown connector type \"" + c.type + "\" (known: " + known + ")");
  }
  // Options only one connector reads are refused elsewhere rather than ignored.
  VLMC_CHECK(!c.dim_hidden || c.type == "mlp", "make_connector: dim_hidden applies only to type mlp, not ",
             c.type);
  VLMC_CHECK(!c.score_weighting || c.type == "dynamic",
             "make_connector: score_weighting applies only to type dynamic, not ", c.type);
  if (c.type == "linear") return std::make_shared<LinearProjection>(c.dim_vision, c.dim_llm, gen);
  if (c.type == "mlp") return std::make_shared<MLPConnector>(c.dim_vision, c.dim_llm, c.dim_hidden, gen);
  if (c.type == "downsample")
    return std::make_shared<DownsamplingConnector>(c.dim_vision, c.dim_llm, c.grid_size, c.target_size, gen);
  if (c.type == "c-abstractor")
    return std::make_shared<CAbstractor>(c.dim_vision, c.dim_llm, c.grid_size, c.target_size, c.num_conv_layers,
                                         gen);
  if (c.type == "dynamic")
    return std::make_shared<DynamicResolutionConnector>(c.dim_vision, c.dim_llm, c.max_tokens, c.min_tokens,
                                                        c.score_weighting, gen);
  return std::make_shared<OCRProjectionConnector>(c.dim_vision, c.dim_llm, c.max_visual_tokens, gen);
}

}  // namespace vlmc::nn
