// Generation with a KV cache (modules/kv_cache.h, modules/generation.h): the
// cached forward against the full forward (one block, two blocks, token by
// token, B = 2), greedy generation against a loop without a cache, the
// sampling rules (top-k, top-p by hand, the draw's frequencies, seeds), EOS,
// and the errors of a full cache and of positions past the rotary table.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "modules/generation.h"
#include "modules/kv_cache.h"
#include "modules/llama.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

constexpr double kTolerance = 1e-5;
constexpr double kInf = std::numeric_limits<double>::infinity();

// vocab 50, hidden 32, 4 heads over 2 KV heads, 2 layers. The weights are
// drawn wider than HF's 0.02 so that attention is far from uniform and
// logits far from tied: a wrong position, mask or cached key shows.
nn::LlamaConfig small_config() {
  nn::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.initializer_range = 0.3;
  return c;
}

Tensor random_ids(int64_t b, int64_t t, uint64_t seed) {
  Generator gen(seed);
  const std::vector<double> u = Tensor::rand({b * t}, gen, DType::f64).to_vector<double>();
  std::vector<int64_t> ids;
  for (double x : u) ids.push_back(static_cast<int64_t>(x * 50));
  return Tensor::from_vector(ids, {b, t});
}

Tensor embed(nn::LlamaForCausalLM& lm, const Tensor& ids) {
  NoGradGuard no_grad;
  return embedding(lm.embed_tokens(), ids);
}

// The greedy loop without a cache, written out here: the full forward over
// the whole sequence every step, argmax of the last position.
std::vector<int64_t> greedy_by_full_forward(nn::LlamaForCausalLM& lm, const Tensor& prompt_ids, int64_t steps) {
  NoGradGuard no_grad;
  std::vector<int64_t> seq = prompt_ids.to_vector<int64_t>(), out;
  for (int64_t s = 0; s < steps; ++s) {
    const auto l = static_cast<int64_t>(seq.size());
    const Tensor logits = lm.forward_ids(Tensor::from_vector(seq, {1, l}));
    const int64_t id = static_cast<int64_t>(argmax(logits.select(1, l - 1).reshape({-1}), 0).item());
    out.push_back(id);
    seq.push_back(id);
  }
  return out;
}

}  // namespace

TEST_CASE("kv cache: layout, in-place append, views, capacity", "[generation][modules]") {
  nn::KVCache cache(2, 1, 2, 5, 4);
  CHECK(cache.keys(0).shape() == Shape{1, 2, 5, 4});
  CHECK(cache.length() == 0);
  CHECK(cache.capacity() == 5);
  const void* storage = cache.keys(1).data_ptr();
  const Tensor k = Tensor::randn({1, 2, 3, 4}), v = Tensor::randn({1, 2, 3, 4});
  const auto [kv_k, kv_v] = cache.append(1, k, v);
  CHECK(kv_k.shape() == Shape{1, 2, 3, 4});
  CHECK(test::max_abs_error(kv_k, k) == 0);
  CHECK(test::max_abs_error(kv_v, v) == 0);
  CHECK(cache.length() == 0);  // moves only with advance()
  cache.advance(3);
  const Tensor k2 = Tensor::randn({1, 2, 2, 4});
  const auto views = cache.append(1, k2, k2);
  CHECK(views.first.shape() == Shape{1, 2, 5, 4});
  CHECK(test::max_abs_error(views.first.narrow(2, 0, 3), k) == 0);  // the earlier positions stay
  CHECK(test::max_abs_error(views.first.narrow(2, 3, 2), k2) == 0);
  CHECK(cache.keys(1).data_ptr() == storage);  // in place: the buffer was never reallocated
  CHECK(views.first.data_ptr() == storage);    // and the views read it
  cache.advance(2);
  REQUIRE_THROWS_WITH(cache.append(0, k2, k2),
                      Catch::Contains("2 more positions after the 5 cached exceed the cache's capacity of 5"));
  REQUIRE_THROWS_WITH(cache.append(2, k2, k2), Catch::Contains("layer 2 outside [0, 2)"));
  REQUIRE_THROWS_WITH(cache.append(0, Tensor::randn({1, 3, 1, 4}), Tensor::randn({1, 3, 1, 4})),
                      Catch::Contains("must both be [B, Hkv, T, Dh] = [1,2,T,4]"));
  cache.reset();
  CHECK(cache.length() == 0);
  // The decode step's key mask over the whole buffers: ones below `visible`,
  // grown and shrunk in place.
  CHECK(cache.key_mask(3).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 0, 0});
  CHECK(cache.key_mask(5).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 1, 1});
  CHECK(cache.key_mask(1).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 0, 0});
  CHECK(cache.key_mask(1).shape() == Shape{1, 5});
  REQUIRE_THROWS_WITH(cache.key_mask(6), Catch::Contains("key_mask over 6 positions, outside the capacity 5"));
}

TEST_CASE("forward_cached equals the full forward: one block, two blocks, token by token", "[generation][modules]") {
  Generator gen(11);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const int64_t total = 12;
  const Tensor ids = random_ids(1, total, 5);
  const Tensor embeds = embed(lm, ids);
  const Tensor full = lm.forward(embeds, Tensor(), Tensor());  // [1, 12, 50]

  SECTION("prompt in one block, then one token at a time") {
    nn::KVCache cache = nn::make_kv_cache(lm, 1, total);
    CHECK(cache.dtype() == DType::f32);
    std::vector<Tensor> parts{lm.forward_cached(embeds.narrow(1, 0, 7), cache)};
    CHECK(cache.length() == 7);
    for (int64_t p = 7; p < total; ++p) parts.push_back(lm.forward_cached(embeds.narrow(1, p, 1), cache));
    CHECK(cache.length() == total);
    const Tensor cached = cat(parts, 1);
    CHECK(cached.shape() == full.shape());
    CHECK_REL(cached, full, kTolerance);
    CHECK(!cached.requires_grad());  // nothing recorded
  }
  SECTION("prompt in two blocks, then one token at a time") {
    nn::KVCache cache = nn::make_kv_cache(lm, 1, total);
    std::vector<Tensor> parts{lm.forward_cached(embeds.narrow(1, 0, 4), cache),
                              lm.forward_cached(embeds.narrow(1, 4, 5), cache)};
    for (int64_t p = 9; p < total; ++p) parts.push_back(lm.forward_cached(embeds.narrow(1, p, 1), cache));
    CHECK_REL(cat(parts, 1), full, kTolerance);
  }
  SECTION("last_only gives the last position's logits") {
    nn::KVCache cache = nn::make_kv_cache(lm, 1, total);
    const Tensor last = lm.forward_cached(embeds.narrow(1, 0, 9), cache, /*last_only=*/true);
    CHECK(last.shape() == Shape{1, 1, 50});
    CHECK_REL(last, full.narrow(1, 8, 1), kTolerance);
    CHECK_REL(lm.forward_cached(embeds.narrow(1, 9, 3), cache, true), full.narrow(1, 11, 1), kTolerance);
  }
  SECTION("a tied head") {
    nn::LlamaConfig c = small_config();
    c.tie_word_embeddings = true;
    nn::LlamaForCausalLM tied(c, gen);
    const Tensor e = embed(tied, ids);
    nn::KVCache cache = nn::make_kv_cache(tied, 1, total);
    std::vector<Tensor> parts{tied.forward_cached(e.narrow(1, 0, 10), cache)};
    for (int64_t p = 10; p < total; ++p) parts.push_back(tied.forward_cached(e.narrow(1, p, 1), cache));
    CHECK_REL(cat(parts, 1), tied.forward(e, Tensor(), Tensor()), kTolerance);
  }
}

TEST_CASE("forward_cached with two sequences of equal length", "[generation][modules]") {
  Generator gen(12);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor embeds = embed(lm, random_ids(2, 8, 6));
  const Tensor full = lm.forward(embeds, Tensor(), Tensor());
  nn::KVCache cache = nn::make_kv_cache(lm, 2, 8);
  std::vector<Tensor> parts{lm.forward_cached(embeds.narrow(1, 0, 5), cache)};
  for (int64_t p = 5; p < 8; ++p) parts.push_back(lm.forward_cached(embeds.narrow(1, p, 1), cache));
  CHECK_REL(cat(parts, 1), full, kTolerance);
  // The second sequence alone gives the same rows: the batch rows do not mix.
  nn::KVCache one = nn::make_kv_cache(lm, 1, 8);
  CHECK_REL(lm.forward_cached(embeds.narrow(0, 1, 1), one), full.narrow(0, 1, 1), kTolerance);
}

TEST_CASE("greedy generate equals a loop that recomputes the full forward", "[generation][modules]") {
  Generator gen(13);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor prompt = random_ids(1, 6, 7);
  nn::GenerationConfig config;
  config.max_new_tokens = 20;
  std::vector<int64_t> streamed;
  const nn::GenerationResult r =
      nn::generate_from_ids(lm, prompt, config, [&](int64_t id) { streamed.push_back(id); });
  const std::vector<int64_t> want = greedy_by_full_forward(lm, prompt, 20);
  CHECK(r.ids == want);
  CHECK(streamed == want);
  CHECK(!r.stopped_by_eos);
  CHECK(!r.prompt_logits.defined());
  CHECK(r.prefill_seconds > 0);
  CHECK(r.decode_tokens_per_second() > 0);
  // The library's reference without a cache, from the embeddings.
  const nn::GenerationResult slow = nn::generate_without_cache(lm, embed(lm, prompt), config);
  CHECK(slow.ids == want);
  // The generated text is not one token repeated (the comparison would be weak).
  CHECK(std::count(want.begin(), want.end(), want[0]) < 20);
}

TEST_CASE("generate keeps the prompt's logits when asked", "[generation][modules]") {
  Generator gen(14);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor prompt = random_ids(1, 5, 8);
  nn::GenerationConfig config;
  config.max_new_tokens = 3;
  config.keep_prompt_logits = true;
  const nn::GenerationResult r = nn::generate_from_ids(lm, prompt, config);
  REQUIRE(r.prompt_logits.defined());
  CHECK(r.prompt_logits.shape() == Shape{1, 5, 50});
  CHECK_REL(r.prompt_logits, lm.forward_ids(prompt), kTolerance);
  CHECK(r.ids == greedy_by_full_forward(lm, prompt, 3));
  config.max_new_tokens = 0;  // the logits alone
  const nn::GenerationResult only = nn::generate_from_ids(lm, prompt, config);
  CHECK(only.ids.empty());
  CHECK_REL(only.prompt_logits, lm.forward_ids(prompt), kTolerance);
}

TEST_CASE("generate with a bf16 prefill: the prompt's logits as autocast gives them, the caller's mode kept",
          "[generation][modules]") {
  Generator gen(16);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor prompt = random_ids(1, 7, 17);
  nn::GenerationConfig config;
  config.max_new_tokens = 4;
  config.keep_prompt_logits = true;
  config.prefill_bf16 = true;
  const nn::GenerationResult r = nn::generate_from_ids(lm, prompt, config);
  CHECK_FALSE(autocast_bf16());  // the prefill's guard is gone with it
  Tensor want;
  {
    AutocastGuard bf16(true);
    NoGradGuard no_grad;
    want = lm.forward_ids(prompt);
  }
  CHECK_REL(r.prompt_logits, want, kTolerance);  // the full forward under autocast
  CHECK(test::rel_error(r.prompt_logits, lm.forward_ids(prompt)) > 1e-5);  // not the f32 logits
  CHECK(r.ids.size() == 4);
}

TEST_CASE("generate stops at an EOS id and keeps it", "[generation][modules]") {
  Generator gen(15);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor prompt = random_ids(1, 4, 9);
  const std::vector<int64_t> free_run = greedy_by_full_forward(lm, prompt, 12);
  // The EOS: the token greedy decoding emits fourth; generation must end at
  // its first occurrence.
  const int64_t eos = free_run[3];
  const auto first = std::find(free_run.begin(), free_run.end(), eos);
  const std::vector<int64_t> want(free_run.begin(), first + 1);
  nn::GenerationConfig config;
  config.max_new_tokens = 12;
  int64_t other = 0;  // a second EOS id that never comes before the first one
  while (std::find(want.begin(), want.end(), other) != want.end()) ++other;
  config.eos_token_ids = {other, eos};
  const nn::GenerationResult r = nn::generate_from_ids(lm, prompt, config);
  CHECK(r.ids == want);
  CHECK(r.ids.back() == eos);
  CHECK(r.stopped_by_eos);
  const nn::GenerationResult slow = nn::generate_without_cache(lm, embed(lm, prompt), config);
  CHECK(slow.ids == want);
}

TEST_CASE("top-k filter: transformers' rule, ties at the threshold kept", "[generation]") {
  std::vector<double> x{1, 3, 2, 3, 0};
  nn::top_k_filter(x, 2);
  CHECK(x == std::vector<double>{-kInf, 3, -kInf, 3, -kInf});
  x = {1, 3, 2, 3, 0};
  nn::top_k_filter(x, 3);
  CHECK(x == std::vector<double>{-kInf, 3, 2, 3, -kInf});
  for (int64_t k : {0, 5, 7}) {  // off, or not fewer than the vocabulary
    x = {1, 3, 2, 3, 0};
    nn::top_k_filter(x, k);
    CHECK(x == std::vector<double>{1, 3, 2, 3, 0});
  }
}

TEST_CASE("top-p filter against hand-computed cases", "[generation]") {
  // Logits whose softmax is exactly (0.1, 0.2, 0.3, 0.4): ascending, the
  // cumulative probabilities are 0.1, 0.3, 0.6, 1.0; a token goes when its
  // cumulative is <= 1 - top_p.
  const std::vector<double> base{std::log(0.2), std::log(0.4), std::log(0.1), std::log(0.3)};
  auto filtered = [&](double top_p) {
    std::vector<double> x = base;
    nn::top_p_filter(x, top_p);
    std::vector<bool> kept;
    for (double v : x) kept.push_back(v != -kInf);
    for (size_t i = 0; i < x.size(); ++i)
      if (kept[i]) CHECK(x[i] == base[i]);  // kept logits are unchanged
    return kept;
  };
  CHECK(filtered(1.0) == std::vector<bool>{true, true, true, true});
  CHECK(filtered(0.95) == std::vector<bool>{true, true, true, true});    // 1 - p = 0.05: below every cumulative
  CHECK(filtered(0.85) == std::vector<bool>{true, true, false, true});   // 0.15: drops 0.1 (cum 0.1)
  CHECK(filtered(0.5) == std::vector<bool>{false, true, false, true});   // 0.5: drops cum 0.1 and 0.3
  CHECK(filtered(0.35) == std::vector<bool>{false, true, false, false}); // 0.65: drops up to cum 0.6
  // Keep at least one: 1 - 1e-20 rounds to 1, which every cumulative
  // (the largest's included) is <= to; the largest stays all the same.
  CHECK(filtered(1e-20) == std::vector<bool>{false, true, false, false});
  // Equal logits: the lowest id is the last to go.
  std::vector<double> tie{0.0, 0.0};
  nn::top_p_filter(tie, 0.4);  // cumulative 0.5 then 1.0; 1 - p = 0.6
  CHECK(tie == std::vector<double>{0.0, -kInf});
  // A -inf logit (filtered before) stays out and does not count.
  std::vector<double> with_inf{-kInf, std::log(0.25), std::log(0.75)};
  nn::top_p_filter(with_inf, 0.7);  // ascending: -inf (cum 0), 0.25 (cum 0.25 <= 0.3), 0.75
  CHECK(with_inf == std::vector<double>{-kInf, -kInf, std::log(0.75)});
}

TEST_CASE("sampling: the draw follows the probabilities, filtered tokens never come", "[generation]") {
  nn::GenerationConfig config;
  config.temperature = 1;
  config.seed = 3;
  const std::vector<double> logits{std::log(0.1), std::log(0.2), std::log(0.3), std::log(0.4)};
  const int draws = 20000;
  {
    nn::TokenSampler sampler(config);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(sampler.sample(logits))];
    for (size_t i = 0; i < 4; ++i) CHECK(counts[i] / double(draws) == Approx(0.1 * double(i + 1)).margin(0.015));
  }
  {  // temperature 2: probabilities ∝ sqrt(p)
    config.temperature = 2;
    nn::TokenSampler sampler(config);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(sampler.sample(logits))];
    const double z = std::sqrt(0.1) + std::sqrt(0.2) + std::sqrt(0.3) + std::sqrt(0.4);
    for (size_t i = 0; i < 4; ++i)
      CHECK(counts[i] / double(draws) == Approx(std::sqrt(0.1 * double(i + 1)) / z).margin(0.015));
  }
  {  // top_k 2 then top_p 0.5 of what is left (0.3/0.7, 0.4/0.7): only the largest survives both
    config.temperature = 1;
    config.top_k = 2;
    nn::TokenSampler only_k(config);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < 2000; ++i) ++counts[static_cast<size_t>(only_k.sample(logits))];
    CHECK(counts[0] == 0);
    CHECK(counts[1] == 0);
    CHECK(counts[2] > 0);
    config.top_p = 0.5;
    nn::TokenSampler both(config);
    for (int i = 0; i < 200; ++i) CHECK(both.sample(logits) == 3);
  }
  config = nn::GenerationConfig{};
  config.temperature = 1;
  nn::TokenSampler sampler(config);
  REQUIRE_THROWS_WITH(sampler.sample({0.0, std::nan("")}), Catch::Contains("logit nan of token 1"));
  REQUIRE_THROWS_WITH(sampler.sample({-kInf, -kInf}), Catch::Contains("every one of the 2 logits is -inf"));
}

TEST_CASE("sampled generation: seeds, the cache, and the greedy limits", "[generation][modules]") {
  Generator gen(16);
  nn::LlamaForCausalLM lm(small_config(), gen);
  const Tensor prompt = random_ids(1, 5, 10);
  const std::vector<int64_t> greedy = greedy_by_full_forward(lm, prompt, 16);
  nn::GenerationConfig config;
  config.max_new_tokens = 16;
  config.temperature = 1.0;
  config.top_p = 0.9;
  config.top_k = 20;
  config.seed = 42;
  const nn::GenerationResult a = nn::generate_from_ids(lm, prompt, config);
  const nn::GenerationResult b = nn::generate_from_ids(lm, prompt, config);
  CHECK(a.ids.size() == 16);
  CHECK(a.ids == b.ids);  // same seed, same ids
  CHECK(a.ids != greedy);
  // Without the cache: the same draws on the same logits, the same ids.
  CHECK(nn::generate_without_cache(lm, embed(lm, prompt), config).ids == a.ids);
  config.seed = 43;
  CHECK(nn::generate_from_ids(lm, prompt, config).ids != a.ids);
  // top_k = 1 leaves one token: the argmax.
  config.top_k = 1;
  CHECK(nn::generate_from_ids(lm, prompt, config).ids == greedy);
  // temperature -> 0: the distribution collapses onto the argmax.
  config.top_k = 0;
  config.top_p = 1;
  config.temperature = 1e-7;
  CHECK(nn::generate_from_ids(lm, prompt, config).ids == greedy);
}

TEST_CASE("generation errors: a full cache, positions past the table, bad configs", "[generation][modules]") {
  Generator gen(17);
  nn::LlamaForCausalLM lm(small_config(), gen);  // max_position_embeddings 32
  const Tensor embeds = embed(lm, random_ids(1, 31, 11));

  // The cache's capacity.
  nn::KVCache cache = nn::make_kv_cache(lm, 1, 6);
  lm.forward_cached(embeds.narrow(1, 0, 5), cache);
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 5, 2), cache),
                      Catch::Contains("2 more positions after the 5 cached exceed the cache's capacity of 6"));
  CHECK(cache.length() == 5);  // nothing was added
  lm.forward_cached(embeds.narrow(1, 5, 1), cache);
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 6, 1), cache),
                      Catch::Contains("exceed the cache's capacity of 6"));
  REQUIRE_THROWS_WITH(nn::make_kv_cache(lm, 1, 33),
                      Catch::Contains("capacity 33 exceeds the model's max_position_embeddings 32"));

  // A position at max_position_embeddings: a cache made larger by hand gets
  // as far as the rotary table's last row, then the position is refused.
  nn::KVCache big(2, 1, 2, 40, 8);
  lm.forward_cached(embeds.narrow(1, 0, 31), big);
  lm.forward_cached(embeds.narrow(1, 0, 1), big);  // position 31, the last row
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 0, 1), big),
                      Catch::Contains("hold position 32, outside [0, 32) (max_position_embeddings 32)"));
  CHECK(big.length() == 32);

  // generate refuses a prompt + max_new_tokens beyond the table before running.
  nn::GenerationConfig config;
  config.max_new_tokens = 2;
  REQUIRE_THROWS_WITH(nn::generate(lm, embeds, config),
                      Catch::Contains("the prompt's 31 tokens + max_new_tokens 2 = 33 positions exceed the "
                                      "model's max_position_embeddings 32"));
  config.max_new_tokens = 1;
  CHECK(nn::generate(lm, embeds, config).ids.size() == 1);

  // A cache of another shape.
  nn::KVCache two = nn::make_kv_cache(lm, 2, 4);
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 0, 2), two),
                      Catch::Contains("hold 1 sequences but the cache 2"));
  nn::KVCache wide(2, 1, 4, 4, 8);
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 0, 2), wide),
                      Catch::Contains("the cache has 2 layers, 4 KV heads of dim 8; the model 2, 2 of dim 8"));
  nn::KVCache f64(2, 1, 2, 4, 8, DType::f64);
  REQUIRE_THROWS_WITH(lm.forward_cached(embeds.narrow(1, 0, 2), f64), Catch::Contains("the cache is f64 on cpu"));

  // Configs and prompts.
  config = nn::GenerationConfig{};
  config.top_p = 0;
  REQUIRE_THROWS_WITH(nn::generate(lm, embeds.narrow(1, 0, 2), config), Catch::Contains("top_p 0 must be in (0, 1]"));
  config = nn::GenerationConfig{};
  config.temperature = -1;
  REQUIRE_THROWS_WITH(nn::generate(lm, embeds.narrow(1, 0, 2), config), Catch::Contains("temperature -1 must be >= 0"));
  config = nn::GenerationConfig{};
  REQUIRE_THROWS_WITH(nn::generate(lm, Tensor::randn({2, 3, 32}), config),
                      Catch::Contains("inputs_embeds [2,3,32] must be [1, T, 32] with T >= 1"));
  REQUIRE_THROWS_WITH(nn::generate_from_ids(lm, Tensor::from_vector(std::vector<int64_t>{1, 50}, {1, 2}), config),
                      Catch::Contains("50"));
}
