// The connector registry: every row's closed forms agree with the module it
// builds, nothing else keeps its own list of names, and docs/connectors.md
// holds the registry's table as `vlmc connector list` prints it.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>

#include "modules/connector_registry.h"
#include "train/experiment.h"

using namespace vlmc;

namespace {

// Small sizes that satisfy every connector (grid 6 -> 2 by pooling or 3 by
// 2x2 merging, 2 conv layers, a 1-layer perceiver with grouped KV heads, a
// 2x2 grid of Qwen-VL queries whose positions are resized to the 6x6 patches).
nn::ConnectorConfig small_config(const std::string& type) {
  nn::ConnectorConfig c;
  c.type = type;
  c.dim_vision = 6;
  c.dim_llm = 12;
  c.grid_size = 6;
  c.target_size = 2;
  c.num_conv_layers = 2;
  c.max_tokens = 7;
  c.min_tokens = 2;
  c.max_visual_tokens = 9;
  c.num_latents = 4;
  c.resampler_depth = 1;
  c.resampler_heads = 2;
  c.resampler_head_dim = 3;
  c.resampler_kv_heads = 1;
  if (type == "mlp" || type == "perceiver") c.dim_hidden = 4;
  if (type == "honeybee") {
    c.dim_hidden = 5;  // squeeze-excite widths round(6/4) = 2 and round(5/4) = 1
    c.reg_depth = 2;
  }
  return c;
}

// Built at the defaults only below this many parameters: the perceiver's
// defaults are Idefics2-8B's 740M (its count is checked in test_connectors.cpp).
constexpr int64_t kBuildAtDefaultsBelow = 100'000'000;

}  // namespace

TEST_CASE("connector registry: each row's parameter count and visual tokens are the module's", "[modules]") {
  const std::set<std::string> fields = {"dim_hidden",        "grid_size",       "target_size",
                                        "num_conv_layers",   "max_tokens",      "min_tokens",
                                        "max_visual_tokens", "score_weighting", "merge_size",
                                        "num_latents",       "resampler_depth", "resampler_heads",
                                        "resampler_head_dim", "resampler_kv_heads", "reg_depth"};
  std::set<std::string> names;
  for (const nn::ConnectorKind& kind : nn::connector_registry()) {
    INFO(kind.name);
    CHECK(names.insert(kind.name).second);  // names are unique
    CHECK(!kind.class_name.empty());
    CHECK(!kind.description.empty());
    for (const std::string& option : kind.options) CHECK(fields.count(option) == 1);

    const nn::ConnectorConfig c = small_config(kind.name);
    Generator gen(7);
    const auto connector = nn::make_connector(c, gen);
    CHECK(kind.parameters(c) == connector->num_parameters());
    nn::ConnectorConfig defaults;  // the seed's LLaVA-1.5 shapes
    defaults.type = kind.name;
    if (kind.parameters(defaults) < kBuildAtDefaultsBelow)
      CHECK(kind.parameters(defaults) == nn::make_connector(defaults, gen)->num_parameters());

    const Tensor x = Tensor::randn({2, 36, c.dim_vision}, gen);  // 36 tokens = grid 6 x 6
    CHECK(connector->forward(x).size(1) == kind.visual_tokens(c, 36, std::nullopt));
    if (kind.name == "dynamic") CHECK(connector->forward(x, 3).size(1) == kind.visual_tokens(c, 36, 3));

    const nn::ConnectorFlops f = kind.flops(c, 2, 36, std::nullopt);
    CHECK(f.forward > 0);
    CHECK(f.backward >= f.forward);
  }
  CHECK(nn::connector_types().size() == nn::connector_registry().size());
}

TEST_CASE("connector registry: the experiment compares every registered connector", "[modules]") {
  CHECK(train::experiment_connectors() == nn::connector_types());
}

TEST_CASE("connector registry: an option is refused for a type that does not read it", "[modules]") {
  nn::ConnectorConfig c = small_config("ocr");
  c.score_weighting = true;
  CHECK_THROWS_WITH(nn::make_connector(c), Catch::Contains("score_weighting applies only to type dynamic, not ocr"));
  CHECK_THROWS_WITH(nn::connector_kind("qformer"),
                    Catch::Contains("unknown connector type \"qformer\" (known: linear, mlp, downsample"));
}

TEST_CASE("docs/connectors.md holds the registry's table", "[modules][docs]") {
  const std::string path = std::string(VLMC_GOLDEN_DIR) + "/../../docs/connectors.md";
  std::ifstream in(path);
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  INFO("regenerate it with: vlmc connector list");
  CHECK_THAT(text.str(), Catch::Contains(nn::connector_table_markdown()));
}
