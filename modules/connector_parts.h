// Pieces every connector shares: the argument checks whose errors name the
// connector, the Linear -> GELU -> Linear block most of them end in, and a
// container for modules that only name their children (PyTorch's plain
// nn.Module attribute and nn.ModuleList), so state_dict keys can follow a
// paper's code exactly.
#pragma once

#include <memory>
#include <optional>

#include "modules/layers.h"

namespace vlmc::nn {

// visual_features must be [B, N, dim]; names the connector in the error.
void check_features(const char* connector, const Tensor& x, int64_t dim);
// Grid connectors need exactly grid_size² tokens.
void check_grid(const char* connector, const Tensor& x, int64_t grid_size);
// Only the dynamic connector's forward takes target_tokens.
void refuse_target(const char* connector, std::optional<int64_t> target_tokens);
void check_positive(const char* connector, const char* what, int64_t value);

const Linear& linear_at(const Sequential& seq, size_t i);
// Linear -> GELU -> Linear held as seq[first], seq[first+1], seq[first+2]; the
// first two run as one fused linear_gelu.
Tensor mlp_gelu(const Sequential& seq, size_t first, const Tensor& x);
// Linear(in, hidden) -> GELU -> Linear(hidden, out), children "0", "1", "2".
std::shared_ptr<Sequential> make_mlp(int64_t in, int64_t hidden, int64_t out, Generator& gen);

// A module that holds only what is registered into it.
class Container : public Module {
 public:
  using Module::register_buffer;
  using Module::register_module;
  using Module::register_parameter;
};

}  // namespace vlmc::nn
