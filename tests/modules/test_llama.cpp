// The LLaMA decoder (modules/llama.h): Hugging Face's parameter names, the
// golden forward/backward/loss of tests/golden/llama.safetensors (written by
// make_golden_llama.py from the architecture in plain torch), rotary
// positions, causality and padding, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/io/tensor_io.h"
#include "modules/llama.h"
#include "tests/support/check.h"
#include "tests/support/golden.h"

using namespace vlmc;
using test::section;
using json = nlohmann::json;

namespace {

constexpr double kTolerance = 1e-5;
const std::string kFile = std::string(VLMC_GOLDEN_DIR) + "/llama.safetensors";

nn::LlamaConfig small_config(bool tied = false) {
  nn::LlamaConfig c;
  c.vocab_size = 23;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = tied;
  return c;
}

nn::LlamaConfig config_of(const json& args) {
  nn::LlamaConfig c;
  c.vocab_size = args.at("vocab_size").get<int64_t>();
  c.hidden_size = args.at("hidden_size").get<int64_t>();
  c.intermediate_size = args.at("intermediate_size").get<int64_t>();
  c.num_hidden_layers = args.at("num_hidden_layers").get<int64_t>();
  c.num_attention_heads = args.at("num_attention_heads").get<int64_t>();
  c.num_key_value_heads = args.at("num_key_value_heads").get<int64_t>();
  c.max_position_embeddings = args.at("max_position_embeddings").get<int64_t>();
  c.rms_norm_eps = args.at("rms_norm_eps").get<double>();
  c.rope_theta = args.at("rope_theta").get<double>();
  c.tie_word_embeddings = args.at("tie_word_embeddings").get<bool>();
  return c;
}

std::set<std::string> keys_of(const std::map<std::string, Tensor>& m) {
  std::set<std::string> out;
  for (const auto& [k, v] : m) out.insert(k);
  return out;
}

void check_case(const std::string& name, const json& args, const std::map<std::string, Tensor>& all) {
  INFO("case " << name << " " << args.dump());
  Generator gen(7);
  nn::LlamaForCausalLM lm(config_of(args), gen);
  const auto state = section(all, name + ".state.");
  CHECK(keys_of(lm.state_dict()) == keys_of(state));  // HF's names, nothing more or less
  lm.load_state_dict(state);

  const Tensor ids = all.at(name + ".in.input_ids");
  const Tensor mask = all.at(name + ".in.attention_mask");
  const Tensor positions = all.at(name + ".in.position_ids");
  const Tensor logits = lm.forward_ids(ids, mask, positions);
  CHECK_REL(logits, all.at(name + ".out.logits"), kTolerance);

  // HF's causal LM loss with -100 labels on the padding.
  const Tensor loss = nn::causal_lm_loss(logits, all.at(name + ".in.labels"));
  CHECK_REL(loss, all.at(name + ".loss"), kTolerance);

  sum(logits * all.at(name + ".proj")).backward();
  const auto grads = section(all, name + ".grad.");
  int checked = 0;
  for (const auto& [pname, p] : lm.named_parameters()) {
    INFO("parameter " << pname);
    REQUIRE(p.grad().defined());
    CHECK_REL(p.grad(), grads.at(pname), kTolerance);
    ++checked;
  }
  CHECK(checked == static_cast<int>(grads.size()));
}

// A two-layer stand-in vision tower: images [n, P, 6] -> hidden states [n, 1+P, 8].
class TinyVision : public nn::VisionEncoder {
 public:
  explicit TinyVision(Generator& gen) {
    patch = register_module("patch", std::make_shared<nn::Linear>(6, 8, true, gen));
    cls = Tensor::randn({1, 1, 8}, gen);
    register_parameter("cls", &cls);
  }
  std::vector<Tensor> hidden_states(const Tensor& images) override {
    const Tensor h = cat({cls.expand({images.size(0), 1, 8}), patch->forward(images)}, 1);
    return {h, tanh(h)};
  }
  int64_t hidden_size() const override { return 8; }
  std::shared_ptr<nn::Linear> patch;
  Tensor cls;
};

}  // namespace

TEST_CASE("llama matches the plain-torch LLaMA reference: logits, loss and every parameter gradient",
          "[llama][modules][golden]") {
  const auto all = io::load_safetensors(kFile);
  const auto metadata = io::load_safetensors_metadata(kFile);
  REQUIRE(metadata.at("format") == "vlmc-golden");
  REQUIRE(metadata.at("family") == "llama");
  int cases = 0;
  bool tied = false;
  for (const std::string name : {"gqa", "tied"}) {
    const json args = json::parse(metadata.at(name + ".args"));
    tied = tied || args.at("tie_word_embeddings").get<bool>();
    SECTION(name) { check_case(name, args, all); }
    ++cases;
  }
  CHECK(cases == 2);
  CHECK(tied);
}

TEST_CASE("llama state_dict uses Hugging Face's parameter names and shapes", "[llama][modules]") {
  const nn::LlamaConfig c = small_config();
  nn::LlamaForCausalLM lm(c);
  const auto state = lm.state_dict();
  std::map<std::string, Shape> expected = {
      {"model.embed_tokens.weight", {23, 16}}, {"model.norm.weight", {16}}, {"lm_head.weight", {23, 16}}};
  for (int i = 0; i < 2; ++i) {
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    expected[pre + "self_attn.q_proj.weight"] = {16, 16};
    expected[pre + "self_attn.k_proj.weight"] = {8, 16};  // 2 KV heads of 4 dims
    expected[pre + "self_attn.v_proj.weight"] = {8, 16};
    expected[pre + "self_attn.o_proj.weight"] = {16, 16};
    expected[pre + "mlp.gate_proj.weight"] = {24, 16};
    expected[pre + "mlp.up_proj.weight"] = {24, 16};
    expected[pre + "mlp.down_proj.weight"] = {16, 24};
    expected[pre + "input_layernorm.weight"] = {16};
    expected[pre + "post_attention_layernorm.weight"] = {16};
  }
  REQUIRE(state.size() == expected.size());
  int64_t count = 0;
  for (const auto& [name, shape] : expected) {
    INFO(name);
    REQUIRE(state.count(name) == 1);
    CHECK(state.at(name).shape() == shape);
    count += shape_numel(shape);
  }
  CHECK(lm.num_parameters() == count);
  CHECK(lm.vocab_size() == 23);
  CHECK(lm.hidden_size() == 16);
  // Norm weights start at one, the rest at N(0, initializer_range).
  CHECK(max(abs(state.at("model.norm.weight") - 1.0)).item() == 0.0);
  CHECK(max(abs(state.at("model.layers.0.mlp.up_proj.weight"))).item() < 0.02 * 6);

  // Tied: no lm_head parameter; the head reads the embedding table.
  nn::LlamaForCausalLM tied(small_config(true));
  CHECK(tied.state_dict().count("lm_head.weight") == 0);
  CHECK(tied.lm_head == nullptr);
  CHECK(tied.head_weight().same(tied.embed_tokens()));
  CHECK(tied.num_parameters() == count - 23 * 16);
}

TEST_CASE("llama rotary positions: identity at 0, norm-preserving, relative, differentiable", "[llama][modules]") {
  const Tensor pos = Tensor::from_vector(std::vector<int64_t>{0, 1, 5, 0, 2, 3}, {2, 3});
  const auto t = nn::rotary_tables(pos, 8, 10000.0, 8, DType::f64, Device::cpu());
  CHECK(t.cos.shape() == Shape{2, 1, 3, 8});
  // Positions beyond the table (max_position_embeddings) are refused, naming them.
  REQUIRE_THROWS_WITH(nn::rotary_tables(pos, 8, 10000.0, 5, DType::f64, Device::cpu()),
                      Catch::Contains("position_ids [2,3] hold position 5, outside [0, 5)"));
  // cos/sin by hand: position 5, frequency index 1 of 4 (inv_freq = 10000^(-2/8)) and its repeat at 5.
  const double angle = 5.0 * std::pow(10000.0, -2.0 / 8.0);
  CHECK(t.cos.select(0, 0).select(0, 0).select(0, 2).select(0, 1).item() == Approx(std::cos(angle)));
  CHECK(t.sin.select(0, 0).select(0, 0).select(0, 2).select(0, 5).item() == Approx(std::sin(angle)));

  const Tensor x = test::leaf({2, 2, 3, 8}, 11);
  const Tensor r = nn::apply_rotary(x, t);
  // Position 0 (row 0 of sample 0) is left unchanged.
  CHECK(test::max_abs_error(r.narrow(0, 0, 1).narrow(2, 0, 1), x.narrow(0, 0, 1).narrow(2, 0, 1)) < 1e-15);
  // A rotation of each (j, j + Dh/2) pair keeps the norm.
  CHECK(test::rel_error(sum(r * r, {-1}), sum(x * x, {-1})) < 1e-12);

  // q·k after rotation depends on the position difference only: (1, 3) == (3, 5).
  const Tensor q = test::leaf({1, 1, 1, 8}, 12), k = test::leaf({1, 1, 1, 8}, 13);
  auto dot_at = [&](int64_t m, int64_t n) {
    auto tm = nn::rotary_tables(Tensor::from_vector(std::vector<int64_t>{m}, {1, 1}), 8, 100.0, 8, DType::f64,
                                Device::cpu());
    auto tn = nn::rotary_tables(Tensor::from_vector(std::vector<int64_t>{n}, {1, 1}), 8, 100.0, 8, DType::f64,
                                Device::cpu());
    return sum(nn::apply_rotary(q, tm) * nn::apply_rotary(k, tn)).item();
  };
  CHECK(dot_at(1, 3) == Approx(dot_at(3, 5)).epsilon(1e-12));
  CHECK(dot_at(1, 3) != Approx(dot_at(1, 4)).epsilon(1e-6));

  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return nn::apply_rotary(in[0], t); },
                  {test::leaf({2, 2, 3, 8}, 14)});
  // A non-contiguous input (heads and positions swapped, as the attention's views give).
  CHECK_GRADIENTS([&](const std::vector<Tensor>& in) { return nn::apply_rotary(in[0].transpose(1, 2), t); },
                  {test::leaf({2, 3, 2, 8}, 15)});
}

TEST_CASE("llama rotary positions on a projection's heads, split across threads, match the composed rotation",
          "[llama][modules]") {
  // [3, 37, 5, 64] viewed as heads [3, 5, 37, 64]: 35,520 elements, over the kernel's one-thread
  // grain, so each thread starts its share of rows mid-sample, mid-head.
  Generator gen(16);
  std::vector<int64_t> positions(3 * 37);
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int64_t>((i * 7) % 40);
  const Tensor pos = Tensor::from_vector(positions, {3, 37});
  const auto t = nn::rotary_tables(pos, 64, 10000.0, 40, DType::f64, Device::cpu());
  const Tensor x0 = Tensor::randn({3, 37, 5, 64}, gen, DType::f64), w = Tensor::randn({3, 5, 37, 64}, gen, DType::f64);
  auto run = [&](bool fused) {
    Tensor x = x0.detach().set_requires_grad(true);
    const Tensor heads = x.transpose(1, 2);
    // y = x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1]
    const Tensor y = fused ? nn::apply_rotary(heads, t)
                           : heads * t.cos + cat({-heads.narrow(3, 32, 32), heads.narrow(3, 0, 32)}, 3) * t.sin;
    sum(y * w).backward();
    return std::vector<Tensor>{y, x.grad()};
  };
  const std::vector<Tensor> got = run(true), want = run(false);
  CHECK_REL(got[0], want[0], 1e-14);
  CHECK_REL(got[1], want[1], 1e-14);
}

TEST_CASE("llama is causal, ignores padded keys, and defaults mask and positions", "[llama][modules]") {
  Generator gen(3);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor embeds = Tensor::randn({2, 6, 16}, gen);
  const Tensor mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 6});
  const Tensor pos = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 0}, {2, 6});
  const Tensor logits = lm.forward(embeds, mask, pos);
  CHECK(logits.shape() == Shape{2, 6, 23});

  // Changing the last position changes no earlier logit (causal).
  Tensor later = embeds.clone();
  later.narrow(1, 5, 1).fill_(3.0);
  const Tensor changed = lm.forward(later, mask, pos);
  CHECK(test::max_abs_error(changed.narrow(1, 0, 5), logits.narrow(1, 0, 5)) == 0.0);
  CHECK(test::max_abs_error(changed.narrow(1, 5, 1), logits.narrow(1, 5, 1)) > 1e-3);

  // Sample 1's padding (positions 4, 5) reaches none of its real tokens.
  Tensor padded = embeds.clone();
  padded.narrow(0, 1, 1).narrow(1, 4, 2).fill_(-2.0);
  const Tensor repad = lm.forward(padded, mask, pos);
  CHECK(test::max_abs_error(repad.narrow(0, 1, 1).narrow(1, 0, 4), logits.narrow(0, 1, 1).narrow(1, 0, 4)) == 0.0);

  // Undefined mask and positions mean all real, 0..L-1.
  const Tensor ones = Tensor::ones({2, 6}, DType::i64);
  const Tensor arange = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}, {2, 6});
  CHECK(test::max_abs_error(lm.forward(embeds, Tensor(), Tensor()), lm.forward(embeds, ones, arange)) == 0.0);

  // A sample shifted by its position ids alone: the same tokens at positions
  // 10.. give the same logits (rotary attention is relative).
  const Tensor first = embeds.narrow(0, 0, 1).contiguous();
  const Tensor at0 = lm.forward(first, Tensor(), Tensor());
  const Tensor at10 = lm.forward(first, Tensor(), Tensor::from_vector(std::vector<int64_t>{10, 11, 12, 13, 14, 15}, {1, 6}));
  CHECK(test::rel_error(at10, at0) < 1e-5);

  // As LlavaModel sees it.
  std::shared_ptr<nn::LanguageModel> base = std::make_shared<nn::LlamaForCausalLM>(small_config(), gen);
  CHECK(base->forward(embeds, mask, pos).shape() == Shape{2, 6, 23});
  CHECK(base->embed_tokens().requires_grad());
}

TEST_CASE("llama argument errors name the problem and the shapes", "[llama][modules]") {
  nn::LlamaConfig c = small_config();
  c.num_attention_heads = 5;
  REQUIRE_THROWS_WITH(nn::LlamaForCausalLM(c), Catch::Contains("hidden_size 16 must be a multiple of num_attention_heads 5"));
  c = small_config();
  c.num_key_value_heads = 3;
  REQUIRE_THROWS_WITH(nn::LlamaForCausalLM(c), Catch::Contains("must be a multiple of num_key_value_heads 3"));
  c = small_config();
  c.num_attention_heads = 16;
  c.num_key_value_heads = 16;
  REQUIRE_THROWS_WITH(nn::LlamaForCausalLM(c), Catch::Contains("head dim 1"));

  nn::LlamaForCausalLM lm(small_config());
  const Tensor embeds = Tensor::randn({2, 5, 16});
  REQUIRE_THROWS_WITH(lm.forward(Tensor::randn({2, 5, 8}), Tensor(), Tensor()),
                      Catch::Contains("LlamaModel: inputs_embeds [2,5,8] must be [B, L, 16]"));
  REQUIRE_THROWS_WITH(lm.forward(embeds, Tensor::ones({2, 4}, DType::i64), Tensor()),
                      Catch::Contains("LlamaModel: attention_mask [2,4] must be [B, L] = [2,5]"));
  REQUIRE_THROWS_WITH(lm.forward(embeds, Tensor(), Tensor::zeros({2, 5})),
                      Catch::Contains("LlamaModel: position_ids [2,5] must be i64 [B, L]"));
  REQUIRE_THROWS_WITH(lm.forward_ids(Tensor::zeros({2, 5})), Catch::Contains("LlamaForCausalLM: input_ids"));

  // A checkpoint of another shape is refused by name.
  nn::LlamaForCausalLM other([] {
    nn::LlamaConfig o = small_config();
    o.intermediate_size = 20;
    return o;
  }());
  REQUIRE_THROWS_WITH(lm.load_state_dict(other.state_dict()), Catch::Contains("model.layers.0.mlp.up_proj.weight"));
}

TEST_CASE("llama serves as LlavaModel's language model", "[llama][modules]") {
  Generator gen(5);
  auto llm = std::make_shared<nn::LlamaForCausalLM>(small_config(), gen);
  nn::LlavaModel llava(std::make_shared<TinyVision>(gen), llm, nn::LlavaConfig{}, gen);
  // Sample 0: <image> then text; sample 1: text only, padded.
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, -200, 4, 5, 6, 2, 7, 8, 0, 0}, {2, 5});
  const Tensor text_mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5});
  const Tensor images = Tensor::randn({1, 3, 6}, gen);  // 3 patches
  const nn::LlavaOutput out = llava.forward(ids, images, ids, text_mask);
  CHECK(out.logits.shape() == Shape{2, 7, 23});  // 4 text tokens + 3 visual tokens
  REQUIRE(out.loss.defined());
  CHECK(std::isfinite(out.loss.item()));
  out.loss.backward();
  // Stage 2: the gradient reaches the connector and every LLaMA parameter.
  for (const auto& [name, p] : llm->named_parameters()) {
    INFO(name);
    CHECK(p.grad().defined());
  }
  for (const Tensor& p : llava.connector->parameters()) CHECK(p.grad().defined());
}

namespace {

// Logits and every gradient of pack_padding against the padded forward: the
// real positions' agree, the padding's come out as zeros.
void check_packing(nn::LlamaForCausalLM& lm, const Tensor& embeds, const Tensor& mask, const Tensor& pos,
                   Generator& gen) {
  const int64_t B = embeds.size(0), L = embeds.size(1);
  const Tensor weights = Tensor::randn({B, L, 23}, gen) * mask.to(DType::f32).unsqueeze(2);  // real positions only
  for (const bool checkpointing : {false, true}) {
    INFO("gradient checkpointing " << checkpointing);
    lm.model->gradient_checkpointing = checkpointing;
    auto run = [&](bool pack) {
      lm.model->pack_padding = pack;
      lm.zero_grad();
      Tensor x = embeds.clone().set_requires_grad(true);
      const Tensor logits = lm.forward(x, mask, pos);
      sum(logits * weights).backward();
      std::vector<Tensor> out{logits, x.grad()};
      for (const auto& [name, p] : lm.named_parameters())
        if (p.grad().defined()) out.push_back(p.grad().clone());  // the table is not read: inputs_embeds are given
      return out;
    };
    const std::vector<Tensor> padded = run(false), packed = run(true);
    const Tensor real = mask.to(DType::f32).unsqueeze(2);
    CHECK_REL(packed[0] * real, padded[0] * real, 1e-5);         // the real positions' logits
    CHECK(test::max_abs_error(packed[0] * (1.0 - real), Tensor::zeros({B, L, 23})) == 0.0);  // zeros at the padding
    for (size_t i = 1; i < padded.size(); ++i) {
      INFO("gradient " << i << " (1: inputs_embeds, then the parameters in order)");
      CHECK_REL(packed[i], padded[i], 1e-5);
    }
  }
  lm.model->gradient_checkpointing = false;
}

}  // namespace

TEST_CASE("llama with pack_padding: the padded forward's real positions and gradients, zeros at the padding",
          "[llama][modules]") {
  Generator gen(9);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const int64_t B = 3, L = 7, D = 16;
  const Tensor embeds = Tensor::randn({B, L, D}, gen);
  // Sample 0 full, sample 1 right-padded by 3, sample 2 left-padded by 2 (positions from 0 at its first token).
  // 16 real tokens: a whole multiple of kPackedRowMultiple, no extra rows.
  const Tensor mask = Tensor::from_vector(
      std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}, {B, L});
  const Tensor pos = Tensor::from_vector(
      std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, {B, L});
  check_packing(lm, embeds, mask, pos, gen);
  // No padding in the mask: the plain forward, bit for bit.
  lm.model->gradient_checkpointing = false;
  const Tensor ones = Tensor::ones({B, L}, DType::i64);
  lm.model->pack_padding = true;
  const Tensor a = lm.forward(embeds, ones, pos);
  lm.model->pack_padding = false;
  CHECK(a.to_vector<float>() == lm.forward(embeds, ones, pos).to_vector<float>());
}

TEST_CASE("llama with pack_padding: rows rounded up with a padding position's copies change nothing real",
          "[llama][modules]") {
  Generator gen(10);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const int64_t B = 4, L = 8, D = 16;
  static_assert(nn::kPackedRowMultiple == 16, "13 real tokens must leave 3 extra rows below B * L = 32");
  const Tensor embeds = Tensor::randn({B, L, D}, gen);
  // 13 real tokens (5 + 3 + 1 + 4, right-padded): 16 packed rows, three of them copies of position 5.
  const Tensor mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 1, 0, 0, 0,  //
                                                               1, 1, 1, 0, 0, 0, 0, 0,  //
                                                               1, 0, 0, 0, 0, 0, 0, 0,  //
                                                               1, 1, 1, 1, 0, 0, 0, 0},
                                          {B, L});
  std::vector<int64_t> positions;
  for (int64_t i = 0; i < B * L; ++i) positions.push_back(i % L);
  check_packing(lm, embeds, mask, Tensor::from_vector(positions, {B, L}), gen);
}
