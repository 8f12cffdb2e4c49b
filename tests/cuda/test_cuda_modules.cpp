// Every module of modules/ on CUDA against the same module on the CPU (issue 6).
// Each test builds a module on the CPU from a seed, builds a second instance
// from another seed, loads the first one's state_dict into it and moves it to
// cuda:0 — so the copy is exactly what a user's checkpoint round trip gives —
// then feeds both the same fresh random inputs at two or three shapes (odd
// sizes included) and compares, in f32 at 1e-5 relative error (cuBLAS runs
// with TF32 off, kernels/gemm.h):
//   - the outputs (and the loss where there is one),
//   - EVERY parameter's gradient, matched by state_dict name (a gradient that
//     is undefined on one side must be undefined on the other),
//   - the input's gradient,
//   - every buffer afterwards (BatchNorm's running statistics and batch count
//     after a training forward).
// A separate test checks that Module::to moves every parameter and buffer.
// Without a GPU the suite's main exits 77 and ctest shows each test skipped.
#include <cmath>
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/ops.h"
#include "core/shape.h"
#include "modules/clip_vision.h"
#include "modules/connector.h"
#include "modules/connectors.h"
#include "modules/layers.h"
#include "modules/llama.h"
#include "modules/llava.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

const Device kGpu = Device::cuda(0);
const Device kCpu = Device::cpu();
constexpr double kTol = 1e-5;

// The same values as a CPU leaf and a cuda:0 leaf, both requiring grad.
struct Pair {
  Tensor cpu, gpu;
};
Pair leaves(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  const Tensor values = Tensor::randn(shape, gen);
  Pair p{values.clone(), values.to(kGpu)};
  p.cpu.set_requires_grad(true);
  p.gpu.set_requires_grad(true);
  return p;
}

// A fixed random tensor (no grad) and its cuda:0 copy, e.g. an output gradient.
Pair constants(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  const Tensor values = Tensor::randn(shape, gen);
  return {values, values.to(kGpu)};
}

// Token ids uniform in [0, vocab), on the CPU.
Tensor random_ids(const Shape& shape, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  for (int64_t& id : v) id = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab));
  return Tensor::from_vector(v, shape);
}

// `gpu` (built from another seed) takes `cpu`'s state and moves to cuda:0,
// in `cpu`'s mode.
void mirror_to_gpu(const nn::Module& cpu, nn::Module& gpu) {
  gpu.load_state_dict(cpu.state_dict());
  gpu.to(kGpu);
  gpu.train(cpu.is_training());
}

void check_output(const Tensor& gpu, const Tensor& cpu, const char* what) {
  INFO(what);
  REQUIRE(gpu.defined());
  REQUIRE(gpu.device() == kGpu);
  REQUIRE(gpu.shape() == cpu.shape());
  CHECK_REL(gpu.to(kCpu), cpu, kTol);
}

// Every parameter's gradient, by name. Returns how many were defined, so a
// caller can make sure the comparison was not vacuous.
//
// Some gradients are exactly 0 in exact arithmetic (a conv bias before
// training-mode BatchNorm, the key projection's bias under softmax): both
// devices return rounding noise there, so each gradient is judged against at
// least the norm a gradient of its size has at the RMS of the model's
// gradients (CHECK_REL_FLOOR).
size_t check_parameter_grads(const nn::Module& cpu, const nn::Module& gpu) {
  const auto a = cpu.named_parameters(), b = gpu.named_parameters();
  REQUIRE(a.size() == b.size());
  double sum_squares = 0, count = 0;
  for (const auto& [name, p] : a) {
    if (!p.grad().defined()) continue;
    for (const double g : p.grad().to_vector<double>()) sum_squares += g * g;
    count += static_cast<double>(p.grad().numel());
  }
  const double grad_rms = count > 0 ? std::sqrt(sum_squares / count) : 0.0;
  size_t defined = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("parameter " << a[i].first);
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(b[i].second.device() == kGpu);
    const Tensor ga = a[i].second.grad(), gb = b[i].second.grad();
    REQUIRE(ga.defined() == gb.defined());
    if (!ga.defined()) continue;
    ++defined;
    CHECK(gb.device() == kGpu);
    CHECK_REL_FLOOR(gb.to(kCpu), ga, grad_rms * std::sqrt(static_cast<double>(ga.numel())), kTol);
  }
  return defined;
}

// Every buffer, by name (floating ones at kTol, integer ones exactly).
void check_buffers(const nn::Module& cpu, const nn::Module& gpu) {
  const auto a = cpu.named_buffers(), b = gpu.named_buffers();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("buffer " << a[i].first);
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(b[i].second.device() == kGpu);
    REQUIRE(b[i].second.dtype() == a[i].second.dtype());
    if (is_floating(a[i].second.dtype()))
      CHECK_REL(b[i].second.to(kCpu), a[i].second, kTol);
    else
      CHECK(b[i].second.to_vector<int64_t>() == a[i].second.to_vector<int64_t>());
  }
}

// ---- connectors ---------------------------------------------------------------------------

struct ConnectorCase {
  nn::ConnectorConfig config;
  int64_t batch, tokens;
  std::optional<int64_t> target_tokens;
};

// One connector case, in train() or eval() mode: outputs, every gradient
// and every buffer after the forward.
void compare_connector(const ConnectorCase& c, bool training, uint64_t seed) {
  INFO("connector " << c.config.type << " batch " << c.batch << " tokens " << c.tokens << " dim_vision "
                    << c.config.dim_vision << " dim_llm " << c.config.dim_llm
                    << (training ? " train()" : " eval()"));
  Generator gen_cpu(seed), gen_gpu(seed + 1);
  const auto cpu = nn::make_connector(c.config, gen_cpu);
  const auto gpu = nn::make_connector(c.config, gen_gpu);
  cpu->train(training);
  mirror_to_gpu(*cpu, *gpu);

  const Pair x = leaves({c.batch, c.tokens, c.config.dim_vision}, seed + 2);
  const Tensor y_cpu = cpu->forward(x.cpu, c.target_tokens);
  const Tensor y_gpu = gpu->forward(x.gpu, c.target_tokens);
  check_output(y_gpu, y_cpu, "output");
  check_buffers(*cpu, *gpu);  // BatchNorm's running statistics move in train()

  const Pair g = constants(y_cpu.shape(), seed + 3);
  y_cpu.backward(g.cpu);
  y_gpu.backward(g.gpu);
  CHECK(check_parameter_grads(*cpu, *gpu) > 0);
  REQUIRE(x.gpu.grad().defined());
  INFO("input gradient");
  CHECK_REL(x.gpu.grad().to(kCpu), x.cpu.grad(), kTol);
}

nn::ConnectorConfig connector(const std::string& type, int64_t dim_vision, int64_t dim_llm) {
  nn::ConnectorConfig c;
  c.type = type;
  c.dim_vision = dim_vision;
  c.dim_llm = dim_llm;
  return c;
}

void run_cases(const std::vector<ConnectorCase>& cases, uint64_t seed) {
  for (const ConnectorCase& c : cases) {
    for (const bool training : {true, false}) {
      compare_connector(c, training, seed);
      seed += 10;
    }
  }
}

}  // namespace

TEST_CASE("cuda modules: LinearProjection and MLPConnector match the CPU", "[cuda][modules]") {
  std::vector<ConnectorCase> cases;
  for (const std::string type : {"linear", "mlp"}) {
    cases.push_back({connector(type, 24, 40), 2, 9, std::nullopt});
    cases.push_back({connector(type, 17, 33), 3, 13, std::nullopt});
    cases.push_back({connector(type, 5, 7), 1, 1, std::nullopt});
  }
  nn::ConnectorConfig hidden = connector("mlp", 19, 12);
  hidden.dim_hidden = 29;
  cases.push_back({hidden, 2, 7, std::nullopt});
  run_cases(cases, 100);
}

TEST_CASE("cuda modules: DownsamplingConnector matches the CPU", "[cuda][modules]") {
  auto grid = [](int64_t dv, int64_t dllm, int64_t g, int64_t t) {
    nn::ConnectorConfig c = connector("downsample", dv, dllm);
    c.grid_size = g;
    c.target_size = t;
    return c;
  };
  run_cases({{grid(16, 24, 6, 3), 2, 36, std::nullopt},
             {grid(13, 21, 7, 3), 3, 49, std::nullopt},   // windows that overlap
             {grid(8, 9, 5, 5), 1, 25, std::nullopt}},    // no pooling at all
            200);
}

TEST_CASE("cuda modules: CAbstractor matches the CPU in train and eval, running statistics included",
          "[cuda][modules]") {
  auto grid = [](int64_t dv, int64_t dllm, int64_t g, int64_t t, int64_t layers) {
    nn::ConnectorConfig c = connector("c-abstractor", dv, dllm);
    c.grid_size = g;
    c.target_size = t;
    c.num_conv_layers = layers;
    return c;
  };
  run_cases({{grid(16, 24, 8, 2, 2), 2, 64, std::nullopt},   // two stride-2 convs
             {grid(11, 19, 7, 3, 2), 3, 49, std::nullopt},   // stride 2 then 1, odd grid
             {grid(6, 10, 5, 2, 3), 2, 25, std::nullopt}},   // three conv layers
            300);
}

TEST_CASE("cuda modules: the connectors after LLaVA match the CPU", "[cuda][modules]") {
  auto with = [](const std::string& type, int64_t dv, int64_t dllm, int64_t grid) {
    nn::ConnectorConfig c = connector(type, dv, dllm);
    c.grid_size = grid;
    return c;
  };
  nn::ConnectorConfig merger3 = with("patch-merger", 5, 7, 6), shuffle3 = with("pixel-shuffle", 5, 7, 6);
  merger3.merge_size = shuffle3.merge_size = 3;
  nn::ConnectorConfig ldp = with("ldp-v2", 12, 10, 5);
  ldp.target_size = 3;  // windows that overlap
  nn::ConnectorConfig perceiver = connector("perceiver", 10, 16);
  perceiver.dim_hidden = 20;
  perceiver.num_latents = 5;
  perceiver.resampler_depth = 2;
  perceiver.resampler_heads = 4;
  perceiver.resampler_head_dim = 6;
  perceiver.resampler_kv_heads = 2;  // grouped KV heads
  nn::ConnectorConfig qwen = connector("qwen-resampler", 10, 12);
  qwen.num_latents = 16;
  qwen.resampler_heads = 3;
  nn::ConnectorConfig honeybee = with("honeybee", 12, 10, 6);
  honeybee.target_size = 3;
  honeybee.dim_hidden = 9;
  honeybee.reg_depth = 2;
  run_cases({{with("patch-merger", 16, 24, 4), 2, 16, std::nullopt},
             {honeybee, 2, 36, std::nullopt},
             {qwen, 2, 16, std::nullopt},
             {qwen, 2, 36, std::nullopt},  // key positions resized bicubically
             {merger3, 2, 36, std::nullopt},
             {with("pixel-shuffle", 16, 24, 4), 2, 16, std::nullopt},
             {shuffle3, 2, 36, std::nullopt},
             {ldp, 3, 25, std::nullopt},
             {perceiver, 2, 11, std::nullopt}},
            350);
}

TEST_CASE("cuda modules: CAbstractor running statistics after several training forwards", "[cuda][modules]") {
  nn::ConnectorConfig c = connector("c-abstractor", 12, 16);
  c.grid_size = 6;
  c.target_size = 3;
  Generator gen_cpu(7), gen_gpu(8);
  const auto cpu = nn::make_connector(c, gen_cpu);
  const auto gpu = nn::make_connector(c, gen_gpu);
  mirror_to_gpu(*cpu, *gpu);
  for (uint64_t step = 0; step < 3; ++step) {
    const Pair x = leaves({2, 36, 12}, 50 + step);
    check_output(gpu->forward(x.gpu), cpu->forward(x.cpu), "training output");
  }
  check_buffers(*cpu, *gpu);  // num_batches_tracked == 3 on both
  cpu->eval();
  gpu->eval();
  const Pair x = leaves({3, 36, 12}, 60);
  check_output(gpu->forward(x.gpu), cpu->forward(x.cpu), "eval output from the running statistics");
}

TEST_CASE("cuda modules: DynamicResolutionConnector top-k matches the CPU", "[cuda][modules]") {
  auto dynamic = [](int64_t dv, int64_t dllm, int64_t max_tokens, bool weighting) {
    nn::ConnectorConfig c = connector("dynamic", dv, dllm);
    c.max_tokens = max_tokens;
    c.min_tokens = 1;
    c.score_weighting = weighting;
    return c;
  };
  std::vector<ConnectorCase> cases;
  for (const bool weighting : {false, true}) {
    cases.push_back({dynamic(16, 24, 7, weighting), 2, 20, std::nullopt});  // top 7 of 20
    cases.push_back({dynamic(13, 9, 64, weighting), 3, 29, 11});          // explicit target
    cases.push_back({dynamic(8, 12, 9, weighting), 2, 5, std::nullopt});   // all tokens pass
  }
  run_cases(cases, 400);

  // The selection itself: the same indices on both devices.
  Generator gen(9);
  const auto cpu_model = std::make_shared<nn::DynamicResolutionConnector>(16, 24, 7, 1, false, gen);
  const auto gpu_model = std::make_shared<nn::DynamicResolutionConnector>(16, 24, 7, 1, false, gen);
  mirror_to_gpu(*cpu_model, *gpu_model);
  const Pair x = leaves({3, 31, 16}, 77);
  const Tensor on_cpu = topk_indices(cpu_model->token_selector->forward(x.cpu).squeeze(-1).detach(), 7);
  const Tensor on_gpu = topk_indices(gpu_model->token_selector->forward(x.gpu).squeeze(-1).detach(), 7);
  REQUIRE(on_gpu.device() == kGpu);
  CHECK(on_gpu.to_vector<int64_t>() == on_cpu.to_vector<int64_t>());
}

TEST_CASE("cuda modules: OCRProjectionConnector with fewer and more tokens than max_visual_tokens",
          "[cuda][modules]") {
  auto ocr = [](int64_t dv, int64_t dllm, int64_t max_tokens) {
    nn::ConnectorConfig c = connector("ocr", dv, dllm);
    c.max_visual_tokens = max_tokens;
    return c;
  };
  run_cases({{ocr(16, 24, 16), 2, 9, std::nullopt},    // fewer: the first 9 positions
             {ocr(16, 24, 16), 2, 16, std::nullopt},   // exactly max_visual_tokens
             {ocr(11, 17, 10), 3, 27, std::nullopt}},  // more: interpolated positions
            500);
}

// ---- layers -------------------------------------------------------------------------------

namespace {

// A UnaryModule on CPU and GPU: output, every parameter gradient, input gradient.
template <typename M, typename Make>
void compare_unary(Make make, const Shape& input_shape, uint64_t seed) {
  INFO("input " << shape_str(input_shape));
  const std::shared_ptr<M> cpu = make(seed), gpu = make(seed + 1);
  mirror_to_gpu(*cpu, *gpu);
  const Pair x = leaves(input_shape, seed + 2);
  const Tensor y_cpu = cpu->forward(x.cpu), y_gpu = gpu->forward(x.gpu);
  check_output(y_gpu, y_cpu, "output");
  const Pair g = constants(y_cpu.shape(), seed + 3);
  y_cpu.backward(g.cpu);
  y_gpu.backward(g.gpu);
  check_parameter_grads(*cpu, *gpu);
  REQUIRE(x.gpu.grad().defined());
  INFO("input gradient");
  CHECK_REL(x.gpu.grad().to(kCpu), x.cpu.grad(), kTol);
}

// LayerNorm and RMSNorm start at ones/zeros; random values make the
// comparison see the affine part.
template <typename M>
std::shared_ptr<M> randomized(std::shared_ptr<M> m, uint64_t seed) {
  Generator gen(seed);
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : m->named_parameters()) state[name] = Tensor::randn(t.shape(), gen) * 0.5 + 1.0;
  m->load_state_dict(state);
  return m;
}

}  // namespace

TEST_CASE("cuda modules: Linear, LayerNorm, LlamaRMSNorm, Sequential and CLIP blocks match the CPU",
          "[cuda][modules]") {
  for (const Shape& s : {Shape{2, 5, 17}, Shape{3, 1, 17}, Shape{7, 17}}) {
    const int64_t d = s.back();
    compare_unary<nn::Linear>([&](uint64_t seed) { Generator g(seed); return std::make_shared<nn::Linear>(d, 23, true, g); },
                              s, 600);
    compare_unary<nn::Linear>([&](uint64_t seed) { Generator g(seed); return std::make_shared<nn::Linear>(d, 9, false, g); },
                              s, 610);
    compare_unary<nn::LayerNorm>(
        [&](uint64_t seed) { return randomized(std::make_shared<nn::LayerNorm>(d), seed); }, s, 620);
    compare_unary<nn::LlamaRMSNorm>(
        [&](uint64_t seed) { return randomized(std::make_shared<nn::LlamaRMSNorm>(d, 1e-6), seed); }, s, 630);
    compare_unary<nn::Sequential>(
        [&](uint64_t seed) {
          Generator g(seed);
          return std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::UnaryModule>>{
              std::make_shared<nn::Linear>(d, 13, true, g), std::make_shared<nn::GELU>(),
              std::make_shared<nn::Linear>(13, 6, true, g), std::make_shared<nn::Sigmoid>()});
        },
        s, 640);
  }
  for (const std::string act : {"quick_gelu", "gelu"}) {
    nn::CLIPVisionConfig config;
    config.hidden_size = 12;
    config.intermediate_size = 19;
    config.num_attention_heads = 3;
    config.num_hidden_layers = 2;
    config.hidden_act = act;
    for (const Shape& s : {Shape{2, 5, 12}, Shape{1, 9, 12}}) {
      INFO("CLIP block, hidden_act " << act);
      compare_unary<nn::CLIPEncoderLayer>(
          [&](uint64_t seed) { Generator g(seed); return std::make_shared<nn::CLIPEncoderLayer>(config, g); }, s, 650);
      compare_unary<nn::LlamaMLP>(
          [&](uint64_t seed) {
            Generator g(seed);
            nn::LlamaConfig lc;
            lc.hidden_size = 12;
            lc.intermediate_size = 19;
            lc.num_attention_heads = 3;
            lc.num_key_value_heads = 3;
            return std::make_shared<nn::LlamaMLP>(lc, g);
          },
          s, 660);
    }
  }
}

TEST_CASE("cuda modules: Conv2d with BatchNorm2d (conv_bn) matches the CPU in train and eval", "[cuda][modules]") {
  struct Holder : nn::Module {
    Holder(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad, Generator& g) {
      conv = register_module("conv", std::make_shared<nn::Conv2d>(cin, cout, k, stride, pad, true, g));
      bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(cout));
    }
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::BatchNorm2d> bn;
  };
  struct Case {
    int64_t b, h, w, cin, cout, k, stride, pad;
  };
  uint64_t seed = 700;
  for (const Case& c : {Case{2, 7, 5, 3, 5, 3, 2, 1}, Case{3, 6, 6, 9, 4, 1, 1, 0}, Case{1, 9, 8, 4, 7, 3, 1, 1}}) {
    for (const bool training : {true, false}) {
      for (const bool apply_gelu : {true, false}) {
        INFO("conv_bn " << c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << " k" << c.k
                        << " stride " << c.stride << (training ? " train()" : " eval()")
                        << (apply_gelu ? " + GELU" : ""));
        Generator gc(seed), gg(seed + 1);
        Holder cpu(c.cin, c.cout, c.k, c.stride, c.pad, gc), gpu(c.cin, c.cout, c.k, c.stride, c.pad, gg);
        cpu.train(training);
        mirror_to_gpu(cpu, gpu);
        const Pair x = leaves({c.b, c.h, c.w, c.cin}, seed + 2);
        const Tensor y_cpu = nn::conv_bn(*cpu.conv, *cpu.bn, x.cpu, apply_gelu);
        const Tensor y_gpu = nn::conv_bn(*gpu.conv, *gpu.bn, x.gpu, apply_gelu);
        check_output(y_gpu, y_cpu, "output");
        check_buffers(cpu, gpu);
        const Pair g = constants(y_cpu.shape(), seed + 3);
        y_cpu.backward(g.cpu);
        y_gpu.backward(g.gpu);
        CHECK(check_parameter_grads(cpu, gpu) == 4);
        INFO("input gradient");
        CHECK_REL(x.gpu.grad().to(kCpu), x.cpu.grad(), kTol);
        seed += 10;
      }
    }
  }
}

// ---- the vision encoder and the language model --------------------------------------------

TEST_CASE("cuda modules: CLIPVisionModel matches the CPU (every hidden state, pooler, gradients)",
          "[cuda][modules]") {
  struct Case {
    int64_t batch, image, patch, hidden, heads;
    const char* act;
  };
  uint64_t seed = 800;
  for (const Case& c : {Case{2, 12, 4, 16, 2, "quick_gelu"}, Case{3, 10, 3, 12, 3, "gelu"},  // 10 = 3·3 + 1 floors
                        Case{1, 7, 7, 8, 1, "quick_gelu"}}) {                               // one patch
    INFO("CLIP batch " << c.batch << " image " << c.image << " patch " << c.patch << " " << c.act);
    nn::CLIPVisionConfig config;
    config.hidden_size = c.hidden;
    config.intermediate_size = 2 * c.hidden + 1;
    config.num_attention_heads = c.heads;
    config.num_hidden_layers = 2;
    config.image_size = c.image;
    config.patch_size = c.patch;
    config.hidden_act = c.act;
    Generator gc(seed), gg(seed + 1);
    nn::CLIPVisionModel cpu(config, gc), gpu(config, gg);
    mirror_to_gpu(cpu, gpu);
    const Pair images = leaves({c.batch, 3, c.image, c.image}, seed + 2);
    const nn::CLIPVisionOutput a = cpu.forward(images.cpu), b = gpu.forward(images.gpu);
    REQUIRE(a.hidden_states.size() == b.hidden_states.size());
    for (size_t i = 0; i < a.hidden_states.size(); ++i) {
      INFO("hidden state " << i);
      check_output(b.hidden_states[i], a.hidden_states[i], "hidden state");
    }
    check_output(b.pooler_output, a.pooler_output, "pooler_output");
    const Pair g1 = constants(a.last_hidden_state.shape(), seed + 3), g2 = constants(a.pooler_output.shape(), seed + 4);
    const Tensor loss_cpu = sum(a.last_hidden_state * g1.cpu) + sum(a.pooler_output * g2.cpu);
    const Tensor loss_gpu = sum(b.last_hidden_state * g1.gpu) + sum(b.pooler_output * g2.gpu);
    check_output(loss_gpu, loss_cpu, "loss");
    loss_cpu.backward();
    loss_gpu.backward();
    CHECK(check_parameter_grads(cpu, gpu) == cpu.named_parameters().size());
    INFO("input gradient");
    CHECK_REL(images.gpu.grad().to(kCpu), images.cpu.grad(), kTol);
    seed += 10;
  }
}

TEST_CASE("cuda modules: LlamaForCausalLM logits, loss and gradients match the CPU", "[cuda][modules]") {
  struct Case {
    int64_t batch, length, vocab, hidden, heads, kv_heads, inter;
    bool tied;
  };
  uint64_t seed = 900;
  for (const Case& c : {Case{2, 7, 37, 16, 4, 2, 27, false},   // grouped KV heads
                        Case{3, 5, 29, 12, 3, 3, 20, true},    // tied head
                        Case{1, 1, 11, 8, 2, 1, 9, false}}) {  // one token
    INFO("Llama batch " << c.batch << " length " << c.length << " vocab " << c.vocab << (c.tied ? " tied" : ""));
    nn::LlamaConfig config;
    config.vocab_size = c.vocab;
    config.hidden_size = c.hidden;
    config.intermediate_size = c.inter;
    config.num_hidden_layers = 2;
    config.num_attention_heads = c.heads;
    config.num_key_value_heads = c.kv_heads;
    config.max_position_embeddings = 64;
    config.tie_word_embeddings = c.tied;
    Generator gc(seed), gg(seed + 1);
    nn::LlamaForCausalLM cpu(config, gc), gpu(config, gg);
    mirror_to_gpu(cpu, gpu);

    // From ids, right-padded: the last sample is shorter; labels -100 on padding.
    const Tensor ids = random_ids({c.batch, c.length}, c.vocab, seed + 2);
    std::vector<int64_t> mask(static_cast<size_t>(c.batch * c.length), 1), pos(mask.size());
    std::vector<int64_t> labels = ids.to_vector<int64_t>();
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t len = (b == c.batch - 1 && c.length > 2) ? c.length - 2 : c.length;
      for (int64_t t = 0; t < c.length; ++t) {
        const size_t i = static_cast<size_t>(b * c.length + t);
        mask[i] = t < len;
        pos[i] = t < len ? t : 0;
        if (t >= len) labels[i] = -100;
      }
    }
    const Tensor mask_t = Tensor::from_vector(mask, {c.batch, c.length});
    const Tensor pos_t = Tensor::from_vector(pos, {c.batch, c.length});
    const Tensor labels_t = Tensor::from_vector(labels, {c.batch, c.length});
    const Tensor logits_cpu = cpu.forward_ids(ids, mask_t, pos_t);
    const Tensor logits_gpu = gpu.forward_ids(ids.to(kGpu), mask_t.to(kGpu), pos_t.to(kGpu));
    check_output(logits_gpu, logits_cpu, "logits from ids");
    if (c.length >= 2) {
      const Tensor loss_cpu = nn::causal_lm_loss(logits_cpu, labels_t);
      const Tensor loss_gpu = nn::causal_lm_loss(logits_gpu, labels_t.to(kGpu));
      check_output(loss_gpu, loss_cpu, "loss");
      loss_cpu.backward();
      loss_gpu.backward();
      CHECK(check_parameter_grads(cpu, gpu) == cpu.named_parameters().size());
    }

    // From embeddings without mask or positions (the default 0..L-1): the
    // input gradient too.
    cpu.zero_grad();
    gpu.zero_grad();
    const Pair embeds = leaves({c.batch, c.length, c.hidden}, seed + 3);
    const Tensor y_cpu = cpu.forward(embeds.cpu, Tensor(), Tensor());
    const Tensor y_gpu = gpu.forward(embeds.gpu, Tensor(), Tensor());
    check_output(y_gpu, y_cpu, "logits from embeddings");
    const Pair g = constants(y_cpu.shape(), seed + 4);
    y_cpu.backward(g.cpu);
    y_gpu.backward(g.gpu);
    check_parameter_grads(cpu, gpu);
    INFO("input gradient");
    CHECK_REL(embeds.gpu.grad().to(kCpu), embeds.cpu.grad(), kTol);
    seed += 10;
  }
}

// ---- LLaVA end to end -----------------------------------------------------------------------

namespace {

constexpr int64_t kImage = -200;

std::shared_ptr<nn::LlavaModel> make_llava(const std::string& projector, int stage, uint64_t seed) {
  Generator gen(seed);
  nn::CLIPVisionConfig vision;
  vision.hidden_size = 12;
  vision.intermediate_size = 17;
  vision.num_attention_heads = 2;
  vision.num_hidden_layers = 3;
  vision.image_size = 9;
  vision.patch_size = 3;  // 9 patch tokens: a 3x3 grid for the grid connectors
  nn::LlamaConfig lm;
  lm.vocab_size = 23;
  lm.hidden_size = 16;
  lm.intermediate_size = 21;
  lm.num_hidden_layers = 2;
  lm.num_attention_heads = 4;
  lm.num_key_value_heads = 2;
  lm.max_position_embeddings = 64;
  nn::LlavaConfig config;
  config.projector_type = projector;
  config.stage = stage;
  config.connector.grid_size = 3;
  config.connector.target_size = 2;
  config.connector.max_tokens = 5;
  config.connector.max_visual_tokens = 6;
  return std::make_shared<nn::LlavaModel>(std::make_shared<nn::CLIPVisionModel>(vision, gen),
                                          std::make_shared<nn::LlamaForCausalLM>(lm, gen), config, gen);
}

}  // namespace

TEST_CASE("cuda modules: LlavaModel end to end (image splicing, labels, loss, gradients) matches the CPU",
          "[cuda][modules]") {
  // Two samples: the first with two images, the second with one and right
  // padding (text_mask 0); the first tokens of each are a prompt (label -100).
  const std::vector<int64_t> ids_v = {3, kImage, 5, 7, kImage, 9, 11, 2,  //
                                      kImage, 4, 6, 8, 10, 1, 0, 0};
  const std::vector<int64_t> mask_v = {1, 1, 1, 1, 1, 1, 1, 1,  //
                                       1, 1, 1, 1, 1, 1, 0, 0};
  const std::vector<int64_t> labels_v = {-100, -100, -100, 7, -100, 9, 11, 2,  //
                                         -100, -100, 6, 8, 10, 1, -100, -100};
  const Tensor ids = Tensor::from_vector(ids_v, {2, 8});
  const Tensor mask = Tensor::from_vector(mask_v, {2, 8});
  const Tensor labels = Tensor::from_vector(labels_v, {2, 8});

  uint64_t seed = 1000;
  for (const std::string projector : {"mlp2x_gelu", "linear", "c-abstractor", "dynamic", "ocr"}) {
    for (const int stage : {1, 2}) {
      for (const bool ids_on_gpu : {false, true}) {
        INFO("projector " << projector << " stage " << stage << (ids_on_gpu ? ", ids on cuda:0" : ", ids on cpu"));
        const auto cpu = make_llava(projector, stage, seed), gpu = make_llava(projector, stage, seed + 1);
        mirror_to_gpu(*cpu, *gpu);
        const Pair images = constants({3, 3, 9, 9}, seed + 2);
        const Device d = ids_on_gpu ? kGpu : kCpu;
        const nn::LlavaOutput a = cpu->forward(ids, images.cpu, labels, mask);
        const nn::LlavaOutput b = gpu->forward(ids.to(d), images.gpu, labels.to(d), mask.to(d));
        check_output(b.inputs.inputs_embeds, a.inputs.inputs_embeds, "spliced inputs_embeds");
        for (const auto& [name, x, y] : {std::tuple{"attention_mask", a.inputs.attention_mask, b.inputs.attention_mask},
                                         std::tuple{"labels", a.inputs.labels, b.inputs.labels},
                                         std::tuple{"position_ids", a.inputs.position_ids, b.inputs.position_ids}}) {
          INFO(name);
          REQUIRE(y.device() == kGpu);
          CHECK(y.to_vector<int64_t>() == x.to_vector<int64_t>());
        }
        check_output(b.logits, a.logits, "logits");
        check_output(b.loss, a.loss, "loss");
        a.loss.backward();
        b.loss.backward();
        CHECK(check_parameter_grads(*cpu, *gpu) > 0);
        check_buffers(*cpu, *gpu);
        seed += 10;
      }
    }
  }
}

// ---- Module::to --------------------------------------------------------------------------------

TEST_CASE("cuda modules: Module::to moves every parameter and buffer and keeps them leaves", "[cuda][modules]") {
  const auto cpu = make_llava("c-abstractor", 1, 1100);  // BatchNorm buffers, CLIP position table
  const auto gpu = make_llava("c-abstractor", 1, 1101);
  gpu->load_state_dict(cpu->state_dict());
  gpu->to(kGpu);

  const auto pa = cpu->named_parameters(), pb = gpu->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO("parameter " << pb[i].first);
    CHECK(pb[i].second.device() == kGpu);
    CHECK(pb[i].second.dtype() == pa[i].second.dtype());
    CHECK(pb[i].second.is_leaf());
    CHECK(pb[i].second.requires_grad() == pa[i].second.requires_grad());
    CHECK(test::max_abs_error(pb[i].second.to(kCpu), pa[i].second) == 0.0);  // moved bit for bit
  }
  const auto ba = cpu->named_buffers(), bb = gpu->named_buffers();
  REQUIRE(ba.size() == bb.size());
  REQUIRE(!bb.empty());
  bool saw_count = false;
  for (size_t i = 0; i < ba.size(); ++i) {
    INFO("buffer " << bb[i].first);
    CHECK(bb[i].second.device() == kGpu);
    CHECK(bb[i].second.dtype() == ba[i].second.dtype());
    CHECK(test::max_abs_error(bb[i].second.to(kCpu), ba[i].second) == 0.0);
    saw_count = saw_count || bb[i].first.find("num_batches_tracked") != std::string::npos;
  }
  CHECK(saw_count);
  for (const auto& [name, t] : gpu->state_dict()) {
    INFO(name);
    CHECK(t.device() == kGpu);
  }
  for (const Tensor& p : gpu->trainable_parameters()) CHECK(p.device() == kGpu);

  // And back: the same values on the CPU again, still leaves.
  gpu->to(kCpu);
  for (const auto& [name, t] : gpu->named_parameters()) {
    INFO(name);
    CHECK(t.device() == kCpu);
    CHECK(t.is_leaf());
  }
  for (const auto& [name, t] : gpu->named_buffers()) {
    INFO(name);
    CHECK(t.device() == kCpu);
  }
}
