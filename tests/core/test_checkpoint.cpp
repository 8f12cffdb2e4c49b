// Activation checkpointing (core/checkpoint.h): the same gradients as the
// plain backward, bit for bit on the CPU (f32 and under bf16 autocast), for
// a small block and for LLaMA's decoder layers (gradient_checkpointing), with
// the gradient-ready hook firing once per parameter; and the graph holds less.
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <set>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/host_allocator.h"
#include "core/ops.h"
#include "tests/support/memory_use.h"
#include "core/random.h"
#include "modules/llama.h"
#include "modules/llava.h"

using namespace vlmc;
using vlmc::test::live_heap_bytes;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())) == 0;
}

nn::LlamaConfig tiny_llama() {
  nn::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  return c;
}

// Every parameter's gradient after one loss.backward() of the LM on a padded batch.
std::map<std::string, Tensor> llama_grads(nn::LlamaForCausalLM& lm, const Tensor& embeds, bool checkpointing,
                                          bool bf16) {
  lm.zero_grad();
  lm.model->gradient_checkpointing = checkpointing;
  Tensor x = embeds.detach();
  x.set_requires_grad(true);
  const Tensor mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0,
                                                               0, 0, 0, 0},
                                          {2, 12});
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                                                 -100, -100, -100, -100, -100, -100, -100, -100},
                                            {2, 12});
  {
    AutocastGuard autocast(bf16);
    const Tensor logits = lm.forward(x, mask, Tensor());
    nn::causal_lm_loss(logits, labels).backward();
  }
  std::map<std::string, Tensor> out;
  for (auto& [name, p] : lm.named_parameters()) out[name] = p.grad();
  out["<input>"] = x.grad();
  return out;
}

}  // namespace

TEST_CASE("checkpoint: a block's gradients equal the plain backward's, input and parameters", "[checkpoint]") {
  Generator gen(1);
  Tensor w = Tensor::randn({8, 8}, gen).set_requires_grad(true);
  Tensor b = Tensor::randn({8}, gen).set_requires_grad(true);
  const Tensor x0 = Tensor::randn({4, 8}, gen);
  auto block = [w, b](const Tensor& x) { return mul(tanh(add(matmul(x, w), b)), x); };
  std::map<std::string, Tensor> grads[2];
  for (int use = 0; use < 2; ++use) {
    w.set_grad(Tensor());
    b.set_grad(Tensor());
    Tensor x = x0.detach();
    x.set_requires_grad(true);
    const Tensor y = use ? checkpoint(block, x) : block(x);
    CHECK(y.requires_grad());
    sum(mul(y, y)).backward();
    grads[use] = {{"w", w.grad()}, {"b", b.grad()}, {"x", x.grad()}};
  }
  for (const auto& [name, g] : grads[0]) {
    INFO(name);
    CHECK(same_bits(grads[1][name], g));
  }
}

TEST_CASE("checkpoint: without grad mode or a grad-requiring input the block just runs", "[checkpoint]") {
  Generator gen(2);
  const Tensor x = Tensor::randn({3, 5}, gen);
  int calls = 0;
  auto block = [&calls](const Tensor& t) {
    ++calls;
    return mul(t, 2.0);
  };
  const Tensor y = checkpoint(block, x);
  CHECK(calls == 1);
  CHECK_FALSE(y.requires_grad());
  CHECK(same_bits(y, mul(x, 2.0)));
}

TEST_CASE("checkpoint: LLaMA with gradient_checkpointing gives the same gradients, f32 and bf16", "[checkpoint]") {
  Generator gen(3);
  nn::LlamaForCausalLM lm(tiny_llama(), gen);
  lm.train();
  const Tensor embeds = Tensor::randn({2, 12, 32}, gen);
  for (const bool bf16 : {false, true}) {
    INFO("bf16 " << bf16);
    const auto plain = llama_grads(lm, embeds, false, bf16);
    // The gradient-ready hook (data-parallel training) fires once per parameter.
    std::multiset<const void*> ready;
    std::map<std::string, Tensor> checked;
    {
      GradReadyGuard hook([&](const Tensor& leaf) { ready.insert(leaf.impl_ptr().get()); });
      checked = llama_grads(lm, embeds, true, bf16);
    }
    for (const auto& [name, g] : plain) {
      INFO(name);
      if (name == "model.embed_tokens.weight") {  // the forward takes embeddings: no gradient either way
        CHECK_FALSE(checked.at(name).defined());
        continue;
      }
      CHECK(same_bits(checked.at(name), g));
    }
    for (auto& [name, p] : lm.named_parameters())
      CHECK(ready.count(p.impl_ptr().get()) == (name == "model.embed_tokens.weight" ? 0u : 1u));
  }
  lm.model->gradient_checkpointing = false;
}

TEST_CASE("checkpoint: the graph of a checkpointed decoder holds far less", "[checkpoint]") {
  Generator gen(4);
  nn::LlamaConfig c = tiny_llama();
  c.num_hidden_layers = 4;
  c.hidden_size = 64;
  c.intermediate_size = 256;
  nn::LlamaForCausalLM lm(c, gen);
  lm.train();
  const Tensor embeds = Tensor::randn({4, 96, 64}, gen);
  double held[2] = {0, 0};
  for (int use = 0; use < 2; ++use) {
    lm.model->gradient_checkpointing = use == 1;
    Tensor x = embeds.detach();
    x.set_requires_grad(true);
    host::empty_cache();
    const double before = live_heap_bytes();
    Tensor logits = lm.forward(x, Tensor(), Tensor());
    held[use] = live_heap_bytes() - before;
    sum(logits).backward();
  }
  INFO("plain " << held[0] << " bytes, checkpointed " << held[1] << " bytes");
  if (test::kMemoryMeasurable) CHECK(held[1] < 0.5 * held[0]);
  else WARN("heap figures are not measurable under AddressSanitizer: the graph's size is not checked");
  lm.model->gradient_checkpointing = false;
}
