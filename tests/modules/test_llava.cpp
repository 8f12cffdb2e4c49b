// LlavaModel: projector factory, vision layer selection, splice, loss and the
// seed's two training stages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "modules/llava.h"
#include "tests/support/check.h"

using namespace vlmc;
using Catch::Contains;

namespace {

// A stand-in vision tower: images [B, P, Dp] (already cut into patches) ->
// CLS + P tokens of width Dv, through `layers` Linear + tanh blocks.
class TestVisionEncoder : public nn::VisionEncoder {
 public:
  TestVisionEncoder(int64_t patch_dim, int64_t dim, int64_t layers, Generator& gen) : dim_(dim) {
    patch = register_module("patch", std::make_shared<nn::Linear>(patch_dim, dim, true, gen));
    cls = Tensor::randn({1, 1, dim}, gen);
    register_parameter("cls", &cls);
    for (int64_t i = 0; i < layers; ++i)
      blocks.push_back(register_module("block" + std::to_string(i), std::make_shared<nn::Linear>(dim, dim, true, gen)));
  }
  std::vector<Tensor> hidden_states(const Tensor& images) override {
    Tensor h = cat({cls.expand({images.size(0), 1, dim_}), patch->forward(images)}, 1);  // [B, 1+P, Dv]
    std::vector<Tensor> out = {h};
    for (auto& b : blocks) {
      h = tanh(b->forward(h));
      out.push_back(h);
    }
    return out;
  }
  int64_t hidden_size() const override { return dim_; }

  std::shared_ptr<nn::Linear> patch;
  std::vector<std::shared_ptr<nn::Linear>> blocks;
  Tensor cls;

 private:
  int64_t dim_;
};

constexpr int64_t kPatchDim = 3, kDv = 6, kPatches = 4, kVocab = 11, kDllm = 8, kImg = -200;

std::shared_ptr<nn::LlavaModel> make_model(Generator& gen, nn::LlavaConfig config = {}) {
  return std::make_shared<nn::LlavaModel>(std::make_shared<TestVisionEncoder>(kPatchDim, kDv, 3, gen),
                                          std::make_shared<nn::TinyLanguageModel>(kVocab, kDllm, gen), config, gen);
}

std::vector<std::string> keys(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.named_parameters()) out.push_back(name);
  return out;
}

// A batch of two samples: the first with two images, the second text only
// and right-padded.
struct Batch {
  Tensor input_ids = Tensor::from_vector(std::vector<int64_t>{3, kImg, 4, 5, kImg, 6,  //
                                                              7, 8, 9, 0, 0, 0},
                                         {2, 6});
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, -100, 2, 10, -100, 4,  //
                                                           7, 8, 9, 0, 0, 0},
                                      {2, 6});
  Tensor text_mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 1, 1,  //
                                                              1, 1, 1, 0, 0, 0},
                                         {2, 6});
  Tensor images;
  explicit Batch(Generator& gen) : images(Tensor::randn({2, kPatches, kPatchDim}, gen)) {}
};

std::vector<float> row(const Tensor& x, int64_t b, int64_t t) { return x.select(0, b).select(0, t).to_vector<float>(); }

}  // namespace

TEST_CASE("make_projector builds LLaVA's projectors and the seed's connectors", "[modules][llava]") {
  Generator gen(1);
  CHECK(keys(*nn::make_projector("mlp2x_gelu", 5, 7, {}, gen)) ==
        std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  const auto mlp3 = nn::make_projector("mlp3x_gelu", 5, 7, {}, gen);
  CHECK(keys(*mlp3) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"});
  CHECK(mlp3->named_parameters()[0].second.shape() == Shape{7, 5});
  CHECK(mlp3->named_parameters()[2].second.shape() == Shape{7, 7});
  CHECK(keys(*nn::make_projector("mlp1x_gelu", 5, 7, {}, gen)) == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(keys(*nn::make_projector("mlp", 5, 7, {}, gen)) ==
        std::vector<std::string>{"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"});
  CHECK(keys(*nn::make_projector("linear", 5, 7, {}, gen)) == std::vector<std::string>{"proj.weight", "proj.bias"});
  CHECK(keys(*nn::make_projector("identity", 7, 7, {}, gen)).empty());
  // LLaVA-1.5 7B's projector: 20,979,712 parameters, as the seed's MLPConnector.
  CHECK(nn::make_projector("mlp2x_gelu", 1024, 4096, {}, gen)->num_parameters() == 20979712);

  // The seed's grid connector through make_connector: 4x4 grid pooled to 2x2.
  nn::ConnectorConfig grid;
  grid.grid_size = 4;
  grid.target_size = 2;
  CHECK(nn::make_projector("downsample", 5, 7, grid, gen)->forward(Tensor::randn({2, 16, 5}, gen)).shape() ==
        Shape{2, 4, 7});

  REQUIRE_THROWS_WITH(nn::make_projector("identity", 5, 7), Contains("identity needs dim_vision == dim_llm, got 5 and 7"));
  REQUIRE_THROWS_WITH(nn::make_projector("mlp0x_gelu", 5, 7), Contains("depth must be at least 1"));
  REQUIRE_THROWS_WITH(nn::make_projector("qformer", 5, 7),
                      Contains("unknown projector 'qformer'") && Contains("mlp{N}x_gelu, identity"));
}

TEST_CASE("mlp3x_gelu computes Linear GELU Linear GELU Linear", "[modules][llava]") {
  Generator gen(2);
  const auto p = nn::make_projector("mlp3x_gelu", 5, 7, {}, gen);
  const Tensor x = Tensor::randn({2, 3, 5}, gen);
  const auto params = p->named_parameters();
  auto w = [&](size_t i) { return params[i].second; };
  const Tensor expected = linear(gelu(linear(gelu(linear(x, w(0), w(1))), w(2), w(3))), w(4), w(5));
  CHECK_REL(p->forward(x), expected, 1e-6);
  CHECK(p->forward(x).shape() == Shape{2, 3, 7});
  REQUIRE_THROWS_WITH(p->forward(Tensor::randn({2, 3, 4}, gen)), Contains("[2,3,4] have width 4 but dim_vision is 5"));
  REQUIRE_THROWS_WITH(p->forward(x, 4), Contains("target_tokens"));
  // identity passes its input through.
  const Tensor y = Tensor::randn({2, 3, 7}, gen);
  CHECK(nn::make_projector("identity", 7, 7)->forward(y).same(y));
}

TEST_CASE("LlavaModel names its parts as the seed and freezes them per stage", "[modules][llava]") {
  Generator gen(3);
  auto model = make_model(gen);
  const auto names = keys(*model);
  CHECK(names.front() == "vision_encoder.cls");  // own parameters before children
  CHECK(names[1] == "vision_encoder.patch.weight");
  CHECK(std::find(names.begin(), names.end(), "connector.0.weight") != names.end());
  CHECK(names.back() == "llm.lm_head.weight");

  auto flags = [](const nn::Module& m) {
    std::vector<bool> out;
    for (const Tensor& p : m.parameters()) out.push_back(p.requires_grad());
    return out;
  };
  auto all = [](const std::vector<bool>& v, bool value) {
    return !v.empty() && std::all_of(v.begin(), v.end(), [&](bool b) { return b == value; });
  };
  // The default is the seed's constructor (freeze_vision=True, freeze_llm=False): stage 2.
  CHECK(model->stage() == 2);
  CHECK(all(flags(*model->vision_encoder), false));
  CHECK(all(flags(*model->connector), true));
  CHECK(all(flags(*model->llm), true));

  model->set_stage(1);
  CHECK(all(flags(*model->vision_encoder), false));
  CHECK(all(flags(*model->connector), true));
  CHECK(all(flags(*model->llm), false));
  CHECK(model->trainable_parameters().size() == 4);

  model->set_stage(2);
  CHECK(all(flags(*model->vision_encoder), false));
  CHECK(all(flags(*model->llm), true));
  CHECK(model->trainable_parameters().size() == 6);

  REQUIRE_THROWS_WITH(model->set_stage(3), Contains("stage 3 must be 1"));
}

TEST_CASE("LlavaModel backward reaches only what the stage trains", "[modules][llava]") {
  Generator gen(4);
  const Batch batch(gen);
  for (int stage : {1, 2}) {
    nn::LlavaConfig config;
    config.stage = stage;
    auto model = make_model(gen, config);
    const nn::LlavaOutput out = model->forward(batch.input_ids, batch.images, batch.labels, batch.text_mask);
    REQUIRE(out.loss.defined());
    out.loss.backward();
    INFO("stage " << stage);
    for (const auto& [name, p] : model->vision_encoder->named_parameters()) {
      INFO(name);
      CHECK(!p.grad().defined());
    }
    for (const auto& [name, p] : model->connector->named_parameters()) {
      INFO(name);
      REQUIRE(p.grad().defined());
      CHECK(max(abs(p.grad())).item() > 0);
    }
    for (const auto& [name, p] : model->llm->named_parameters()) {
      INFO(name);
      CHECK(p.grad().defined() == (stage == 2));
    }
  }
}

TEST_CASE("encode_images reads the selected hidden state without CLS", "[modules][llava]") {
  Generator gen(5);
  const Tensor images = Tensor::randn({2, kPatches, kPatchDim}, gen);
  for (int64_t layer : {-2, -1, 1}) {
    for (bool keep_cls : {false, true}) {
      nn::LlavaConfig config;
      config.select_layer = layer;
      config.keep_cls = keep_cls;
      auto model = make_model(gen, config);
      const auto hidden = model->vision_encoder->hidden_states(images);  // 4 states, [2, 5, Dv]
      const Tensor chosen = hidden[static_cast<size_t>(layer < 0 ? 4 + layer : layer)];
      const Tensor features = keep_cls ? chosen : chosen.narrow(1, 1, kPatches).contiguous();
      const Tensor tokens = model->encode_images(images);
      INFO("select_layer " << layer << " keep_cls " << keep_cls);
      CHECK(tokens.shape() == Shape{2, keep_cls ? kPatches + 1 : kPatches, kDllm});
      CHECK_REL(tokens, model->connector->forward(features), 1e-6);
    }
  }
  nn::LlavaConfig bad;
  bad.select_layer = -5;
  REQUIRE_THROWS_WITH(make_model(gen, bad)->encode_images(images),
                      Contains("select_layer -5 is out of range for a vision encoder with 4 hidden states"));
}

TEST_CASE("prepare_inputs splices two images and a text-only sample as LLaVA", "[modules][llava]") {
  Generator gen(6);
  const Batch batch(gen);
  auto model = make_model(gen);
  const Tensor visual = model->encode_images(batch.images);  // [2, 4, D]
  const SpliceResult r = model->prepare_inputs(batch.input_ids, batch.images, batch.labels, batch.text_mask);
  const int64_t length = 6 - 2 + 2 * kPatches;  // the longest sample
  REQUIRE(r.inputs_embeds.shape() == Shape{2, length, kDllm});
  CHECK(r.truncated == 0);

  const Tensor table = model->llm->embed_tokens();
  auto embed = [&](int64_t id) { return table.select(0, id).to_vector<float>(); };
  auto image_row = [&](int64_t image, int64_t t) { return row(visual, image, t); };
  // Sample 0: 3 <image> 4 5 <image> 6.
  std::vector<std::vector<float>> expected = {embed(3)};
  for (int64_t t = 0; t < kPatches; ++t) expected.push_back(image_row(0, t));
  for (int64_t id : {4, 5}) expected.push_back(embed(id));
  for (int64_t t = 0; t < kPatches; ++t) expected.push_back(image_row(1, t));
  expected.push_back(embed(6));
  for (int64_t t = 0; t < length; ++t) {
    INFO("sample 0 position " << t);
    CHECK(row(r.inputs_embeds, 0, t) == expected[static_cast<size_t>(t)]);
  }
  // Sample 1: 7 8 9, then padding (zeros).
  for (int64_t t = 0; t < length; ++t) {
    INFO("sample 1 position " << t);
    CHECK(row(r.inputs_embeds, 1, t) == (t < 3 ? embed(7 + t) : std::vector<float>(kDllm, 0.0f)));
  }

  const std::vector<int64_t> n4(kPatches, -100);
  std::vector<int64_t> labels0 = {1};
  labels0.insert(labels0.end(), n4.begin(), n4.end());
  labels0.insert(labels0.end(), {2, 10});
  labels0.insert(labels0.end(), n4.begin(), n4.end());
  labels0.push_back(4);
  std::vector<int64_t> labels1 = {7, 8, 9};
  labels1.resize(length, -100);
  labels0.insert(labels0.end(), labels1.begin(), labels1.end());
  CHECK(r.labels.to_vector<int64_t>() == labels0);

  std::vector<int64_t> mask(2 * length, 0), positions(2 * length, 0);
  for (int64_t t = 0; t < length; ++t) {
    mask[t] = 1;
    positions[t] = t;
  }
  for (int64_t t = 0; t < 3; ++t) {
    mask[length + t] = 1;
    positions[length + t] = t;
  }
  CHECK(r.attention_mask.to_vector<int64_t>() == mask);
  CHECK(r.position_ids.to_vector<int64_t>() == positions);
}

TEST_CASE("prepare_inputs refuses a placeholder count that differs from the image count", "[modules][llava]") {
  Generator gen(7);
  const Batch batch(gen);
  auto model = make_model(gen);
  REQUIRE_THROWS_WITH(model->prepare_inputs(batch.input_ids, batch.images.narrow(0, 0, 1), batch.labels, batch.text_mask),
                      Contains("input_ids [2,6] hold 2 <image> placeholders (id -200) but 1 images were given"));
  REQUIRE_THROWS_WITH(model->prepare_inputs(batch.input_ids, Tensor(), batch.labels, batch.text_mask),
                      Contains("hold 2 <image> placeholders (id -200) but 0 images were given"));
  const Tensor text_only = batch.input_ids.narrow(0, 1, 1).contiguous();
  const Tensor text_mask = batch.text_mask.narrow(0, 1, 1).contiguous();
  REQUIRE_THROWS_WITH(model->prepare_inputs(text_only, batch.images, Tensor(), text_mask),
                      Contains("hold 0 <image> placeholders (id -200) but 2 images were given"));
  // A text-only batch needs no images at all.
  const SpliceResult r = model->prepare_inputs(text_only, Tensor(), Tensor(), text_mask);
  CHECK(r.inputs_embeds.shape() == Shape{1, 3, kDllm});
  CHECK(r.labels.to_vector<int64_t>() == std::vector<int64_t>{-100, -100, -100});
}

TEST_CASE("LlavaModel forward gives the shifted cross-entropy and reports truncation", "[modules][llava]") {
  Generator gen(8);
  const Batch batch(gen);
  auto model = make_model(gen);
  const nn::LlavaOutput out = model->forward(batch.input_ids, batch.images, batch.labels, batch.text_mask);
  const int64_t length = out.logits.size(1);
  REQUIRE(out.logits.shape() == Shape{2, length, kVocab});

  // By hand: position t predicts label t + 1; -100 is skipped; mean over the rest.
  const std::vector<double> logits = out.logits.to_vector<double>();
  const std::vector<int64_t> labels = out.inputs.labels.to_vector<int64_t>();
  double total = 0;
  int64_t count = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t + 1 < length; ++t) {
      const int64_t target = labels[b * length + t + 1];
      if (target == -100) continue;
      const double* z = &logits[(b * length + t) * kVocab];
      double m = z[0], s = 0;
      for (int64_t v = 0; v < kVocab; ++v) m = std::max(m, z[v]);
      for (int64_t v = 0; v < kVocab; ++v) s += std::exp(z[v] - m);
      total += m + std::log(s) - z[target];
      ++count;
    }
  REQUIRE(count == 5);  // sample 0: 2, 10, 4 (its first label is never a target); sample 1: 8, 9
  CHECK(out.loss.item() == Approx(total / count).epsilon(1e-5));
  CHECK(!model->forward(batch.input_ids, batch.images, Tensor(), batch.text_mask).loss.defined());

  nn::LlavaConfig capped;
  capped.splice.max_length = 8;
  const nn::LlavaOutput cut = make_model(gen, capped)->forward(batch.input_ids, batch.images, batch.labels, batch.text_mask);
  CHECK(cut.logits.size(1) == 8);
  CHECK(cut.inputs.truncated == length - 8);
}

TEST_CASE("LlavaModel trains through every connector type in stage 1", "[modules][llava]") {
  Generator gen(9);
  const Batch batch(gen);
  for (const std::string type : {"linear", "mlp", "mlp2x_gelu", "mlp3x_gelu", "downsample", "c-abstractor", "dynamic", "ocr"}) {
    INFO(type);
    nn::LlavaConfig config;
    config.projector_type = type;
    config.stage = 1;
    config.connector.grid_size = 2;  // kPatches = 2 x 2
    config.connector.target_size = 1;
    auto model = make_model(gen, config);
    const nn::LlavaOutput out = model->forward(batch.input_ids, batch.images, batch.labels, batch.text_mask);
    CHECK(std::isfinite(out.loss.item()));
    out.loss.backward();
    bool connector_grad = false;
    for (const Tensor& p : model->connector->parameters()) connector_grad |= p.grad().defined();
    CHECK(connector_grad);
    for (const Tensor& p : model->vision_encoder->parameters()) CHECK(!p.grad().defined());
    for (const Tensor& p : model->llm->parameters()) CHECK(!p.grad().defined());
  }
}
