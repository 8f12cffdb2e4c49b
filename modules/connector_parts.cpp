#include "modules/connector_parts.h"

namespace vlmc::nn {

// visual_features must be [B, N, dim]; names the connector in the error.
void check_features(const char* connector, const Tensor& x, int64_t dim) {
  VLMC_CHECK(x.dim() == 3, connector, ": visual_features ", shape_str(x.shape()),
             " must be [batch, tokens, dim_vision]");
  VLMC_CHECK(x.size(2) == dim, connector, ": visual_features ", shape_str(x.shape()),
             " have width ", x.size(2), " but dim_vision is ", dim);
}

// Grid connectors need exactly grid_size² tokens.
void check_grid(const char* connector, const Tensor& x, int64_t grid_size) {
  VLMC_CHECK(x.size(1) == grid_size * grid_size, connector, ": visual_features ", shape_str(x.shape()),
             " hold ", x.size(1), " tokens but grid_size ", grid_size, " needs ", grid_size * grid_size);
}

// Only the dynamic connector's forward takes target_tokens.
void refuse_target(const char* connector, std::optional<int64_t> target_tokens) {
  VLMC_CHECK(!target_tokens, connector, ": forward takes no target_tokens (got ", target_tokens.value_or(0),
             "); only the dynamic connector selects tokens");
}

void check_positive(const char* connector, const char* what, int64_t value) {
  VLMC_CHECK(value > 0, connector, ": ", what, " must be positive, got ", value);
}

const Linear& linear_at(const Sequential& seq, size_t i) { return static_cast<const Linear&>(seq[i]); }

// Linear -> GELU -> Linear held as seq[first], seq[first+1], seq[first+2]; the
// first two run as one fused linear_gelu.
Tensor mlp_gelu(const Sequential& seq, size_t first, const Tensor& x) {
  const Linear& a = linear_at(seq, first);
  const Linear& b = linear_at(seq, first + 2);
  return linear(linear_gelu(x, a.weight, a.bias), b.weight, b.bias);
}

std::shared_ptr<Sequential> make_mlp(int64_t in, int64_t hidden, int64_t out, Generator& gen) {
  auto seq = std::make_shared<Sequential>();
  seq->append(std::make_shared<Linear>(in, hidden, true, gen));
  seq->append(std::make_shared<GELU>());
  seq->append(std::make_shared<Linear>(hidden, out, true, gen));
  return seq;
}

}  // namespace vlmc::nn
