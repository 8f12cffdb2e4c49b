// Deferred index checks on CUDA (core/cuda/deferred_check.h): an indexing op
// does not wait for the GPU; a bad index is thrown, naming the op, at the next
// synchronising read, once; and a run longer than the record ring works.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda/deferred_check.h"
#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "modules/llama.h"

using namespace vlmc;
using Catch::Contains;

namespace {

const Device kGpu = Device::cuda(0);

Tensor ids(const std::vector<int64_t>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape).to(kGpu);
}

}  // namespace

TEST_CASE("cuda index checks do not wait inside the ops", "[cuda][deferred]") {
  cuda::synchronize(0);
  REQUIRE(cuda::pending_deferred_checks(0) == 0);
  const Tensor w = Tensor::ones({10, 4}, DType::f32, kGpu);
  const Tensor x = Tensor::ones({2, 5, 3}, DType::f32, kGpu);
  const Tensor e = embedding(w, ids({1, 2, 3}, {3}));
  const Tensor s = index_select(w, 0, ids({0, 9}, {2}));
  const Tensor l = cross_entropy(Tensor::zeros({2, 4}, DType::f32, kGpu), ids({0, 3}, {2}));
  const Tensor g = gather_rows(x, ids({0, 1, 4, 2}, {2, 2}));
  // Nothing was read back: every check is still pending.
  CHECK(cuda::pending_deferred_checks(0) == 4);
  CHECK(e.to_vector<float>() == std::vector<float>(12, 1.0f));
  CHECK(cuda::pending_deferred_checks(0) == 0);
  CHECK(s.to_vector<float>() == std::vector<float>(8, 1.0f));
  CHECK(g.to_vector<float>() == std::vector<float>(12, 1.0f));
  CHECK(l.item() == Approx(std::log(4.0)));
}

TEST_CASE("cuda deferred check names the one bad op among many good ones", "[cuda][deferred]") {
  cuda::synchronize(0);
  const Tensor w = Tensor::ones({10, 4}, DType::f32, kGpu);
  const Tensor good = ids({0, 1, 9}, {3});
  Tensor last;
  for (int i = 0; i < 100; ++i) last = embedding(w, good);
  (void)index_select(w, 0, ids({2, 10, 3}, {3}));  // the bad one
  for (int i = 0; i < 100; ++i) last = embedding(w, good);
  REQUIRE_THROWS_WITH(last.to_vector<float>(),
                      Contains("index_select: index 10 is out of range for dim 0 of size 10") &&
                          Contains("reported at the next synchronisation"));
  // Reported once: the next reads are clean.
  CHECK_NOTHROW(cuda::synchronize(0));
  CHECK(embedding(w, good).to_vector<float>() == std::vector<float>(12, 1.0f));
}

TEST_CASE("cuda deferred checks run past the record ring", "[cuda][deferred]") {
  cuda::synchronize(0);
  const Tensor w = Tensor::ones({10, 4}, DType::f32, kGpu);
  const Tensor good = ids({0, 5, 9}, {3});
  const size_t ops = cuda::kDeferredRecords * 2 + 7;
  Tensor last;
  for (size_t i = 0; i < ops; ++i) last = embedding(w, good);
  CHECK(cuda::pending_deferred_checks(0) <= cuda::kDeferredRecords);
  CHECK(last.to_vector<float>() == std::vector<float>(12, 1.0f));

  // A bad index followed by a full ring of good ops: the ring's own
  // synchronisation reports it, at an op call, still naming the bad op.
  (void)embedding(w, ids({0, 11}, {2}));
  REQUIRE_THROWS_WITH(
      [&] {
        for (size_t i = 0; i < cuda::kDeferredRecords; ++i) last = embedding(w, good);
        cuda::synchronize(0);
      }(),
      Contains("embedding: index 11 is out of range for 10 embeddings"));
  CHECK(embedding(w, good).to_vector<float>() == std::vector<float>(12, 1.0f));
}

TEST_CASE("cuda deferred checks are read at every host wait, a large upload too", "[cuda][deferred]") {
  cuda::synchronize(0);
  const Tensor w = Tensor::ones({10, 4}, DType::f32, kGpu);
  (void)index_select(w, 0, ids({2, 10, 3}, {3}));  // bad; nothing read back
  REQUIRE(cuda::pending_deferred_checks(0) == 1);
  // 4 MiB: past the staging ring's limit, so the upload makes the host wait.
  const std::vector<float> big(size_t(1) << 20, 1.0f);
  Tensor dst = Tensor::empty({static_cast<int64_t>(big.size())}, DType::f32, kGpu);
  REQUIRE_THROWS_WITH(cuda::copy_host_to_device(dst.data_ptr(), big.data(), big.size() * sizeof(float), 0),
                      Contains("index_select: index 10 is out of range for dim 0 of size 10"));
  CHECK(cuda::pending_deferred_checks(0) == 0);
  CHECK(dst.to(Device::cpu()).to_vector<float>() == big);  // the upload itself landed
}

TEST_CASE("cuda llama rotary positions are checked on the device", "[cuda][deferred]") {
  cuda::synchronize(0);
  nn::LlamaConfig config;
  config.vocab_size = 16;
  config.hidden_size = 8;
  config.intermediate_size = 16;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.num_key_value_heads = 2;
  config.max_position_embeddings = 6;
  Generator gen(5);
  nn::LlamaModel cpu(config, gen);
  Generator gen2(5);
  nn::LlamaModel gpu(config, gen2);
  gpu.to(kGpu);
  Generator data(6);
  const Tensor embeds = Tensor::randn({2, 3, 8}, data);
  const Tensor pos = Tensor::from_vector(std::vector<int64_t>{0, 1, 5, 2, 3, 4}, {2, 3});
  const Tensor want = cpu.forward(embeds, Tensor(), pos);
  const Tensor got = gpu.forward(embeds.to(kGpu), Tensor(), pos.to(kGpu));
  const std::vector<float> a = want.to_vector<float>(), b = got.to_vector<float>();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(b[i] == Approx(a[i]).margin(1e-5));

  const Tensor far = gpu.forward(embeds.to(kGpu), Tensor(), ids({0, 1, 6, 2, 3, 4}, {2, 3}));
  REQUIRE_THROWS_WITH(far.to_vector<float>(), Contains("rotary_tables: position_ids [2,3] hold position 6"));
  CHECK_NOTHROW(cuda::synchronize(0));
}
