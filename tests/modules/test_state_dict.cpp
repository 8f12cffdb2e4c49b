// Module::state_dict and load_state_dict: PyTorch's names (buffers included),
// dtype conversion, strict error listing and all-or-nothing loading.
#include <catch2/catch.hpp>

#include <cstdio>

#include "core/io/tensor_io.h"
#include "modules/connectors.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {
std::vector<std::string> keys(const std::map<std::string, Tensor>& m) {
  std::vector<std::string> out;
  for (const auto& [k, v] : m) out.push_back(k);
  return out;
}
}  // namespace

TEST_CASE("state_dict holds parameters and buffers by PyTorch's names", "[modules][state_dict]") {
  nn::CAbstractor cabs(6, 5, 7, 2, 2);
  const auto state = cabs.state_dict();
  CHECK(keys(state) == std::vector<std::string>{
                           "conv_layers.0.bias", "conv_layers.0.weight", "conv_layers.1.bias",
                           "conv_layers.1.num_batches_tracked", "conv_layers.1.running_mean",
                           "conv_layers.1.running_var", "conv_layers.1.weight", "conv_layers.3.bias",
                           "conv_layers.3.weight", "conv_layers.4.bias", "conv_layers.4.num_batches_tracked",
                           "conv_layers.4.running_mean", "conv_layers.4.running_var", "conv_layers.4.weight",
                           "proj.0.bias", "proj.0.weight", "proj.2.bias", "proj.2.weight"});
  const Tensor& tracked = state.at("conv_layers.1.num_batches_tracked");
  CHECK(tracked.dtype() == DType::i64);
  CHECK(tracked.shape() == Shape{});  // PyTorch saves it 0-dim
  CHECK(state.at("conv_layers.0.weight").shape() == Shape{6, 6, 3, 3});
  CHECK_FALSE(state.at("proj.0.weight").requires_grad());  // detached
  CHECK(cabs.named_buffers().size() == 6);
}

TEST_CASE("load_state_dict round-trips through safetensors", "[modules][state_dict]") {
  Generator g1(1), g2(2);
  nn::CAbstractor a(6, 5, 7, 2, 2, g1), b(6, 5, 7, 2, 2, g2);
  const Tensor x = Tensor::randn({2, 49, 6}, g1);
  a.forward(x);  // moves a's running statistics, so the buffers differ from b's
  const std::string path = "state_dict_roundtrip.safetensors";
  io::save_safetensors(path, a.state_dict());
  b.load_state_dict(io::load_safetensors(path));
  std::remove(path.c_str());
  CHECK(b.conv_layers->norms[0]->num_batches_tracked.item() == 1);
  a.eval();
  b.eval();
  CHECK_REL(b.forward(x), a.forward(x), 0.0);
  // Parameters are still the same trainable leaves.
  for (const Tensor& p : b.parameters()) {
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
}

TEST_CASE("load_state_dict converts F16, BF16 and F64 values", "[modules][state_dict]") {
  for (DType dtype : {DType::f16, DType::bf16, DType::f64, DType::f32}) {
    INFO(dtype_name(dtype));
    nn::MLPConnector m(4, 3);
    std::map<std::string, Tensor> state;
    Generator gen(5);
    for (const auto& [name, t] : m.state_dict()) state[name] = Tensor::randn(t.shape(), gen).to(dtype);
    m.load_state_dict(state);
    for (const auto& [name, t] : m.state_dict()) {
      CHECK(t.dtype() == DType::f32);
      CHECK_REL(t, state.at(name).to(DType::f32), 0.0);
    }
  }
}

TEST_CASE("load_state_dict names every bad key and changes nothing", "[modules][state_dict]") {
  nn::MLPConnector m(4, 3);
  const auto before = m.state_dict();
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : before) state[name] = Tensor::zeros(t.shape());
  state.erase("mlp.0.bias");
  state.erase("mlp.2.bias");
  state["mlp.1.weight"] = Tensor::zeros({3});
  state["mlp.0.weight"] = Tensor::zeros({4, 3});
  try {
    m.load_state_dict(state);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("Missing key(s) in state_dict: \"mlp.0.bias\", \"mlp.2.bias\"."));
    CHECK_THAT(what, Catch::Contains("Unexpected key(s) in state_dict: \"mlp.1.weight\"."));
    CHECK_THAT(what, Catch::Contains("size mismatch for mlp.0.weight: copying a param with shape [4,3] from "
                                     "checkpoint, the shape in current model is [3,4]"));
  }
  // mlp.2.weight matched but was not loaded: all or nothing.
  for (const auto& [name, t] : m.state_dict()) CHECK_REL(t, before.at(name), 0.0);

  // Not strict: missing and unexpected keys are allowed, shapes still checked.
  state["mlp.0.weight"] = Tensor::ones({3, 4});
  m.load_state_dict(state, /*strict=*/false);
  CHECK_REL(m.state_dict().at("mlp.0.weight"), Tensor::ones({3, 4}), 0.0);
  CHECK_REL(m.state_dict().at("mlp.0.bias"), before.at("mlp.0.bias"), 0.0);
  state["mlp.2.weight"] = Tensor::zeros({1});
  REQUIRE_THROWS_WITH(m.load_state_dict(state, false), Catch::Contains("size mismatch for mlp.2.weight"));
}

TEST_CASE("load_state_dict refuses floats for integer buffers", "[modules][state_dict]") {
  nn::BatchNorm2d bn(3);
  auto state = bn.state_dict();
  state["num_batches_tracked"] = Tensor::scalar(2.0);
  REQUIRE_THROWS_WITH(bn.load_state_dict(state),
                      Catch::Contains("dtype mismatch for num_batches_tracked: cannot load f32 into i64"));
  state["num_batches_tracked"] = Tensor::full({}, 7, DType::i64);
  bn.load_state_dict(state);
  CHECK(bn.num_batches_tracked.item() == 7);
}
