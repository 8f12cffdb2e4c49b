// Host-to-device uploads through the pinned staging ring (core/cuda/runtime.cpp):
// the host buffer is reused at once, the ring wraps many times, and every
// upload still lands with the bytes it had when it was made.
#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/tensor.h"

using namespace vlmc;

TEST_CASE("cuda uploads: a reused host buffer, a wrapping ring, and large copies all land intact", "[cuda][runtime]") {
  const Device gpu = Device::cuda(0);
  // 600 uploads of 64 KiB (odd element counts too) are about 4.7 ring turns of 8 MiB.
  std::vector<int32_t> host;
  std::vector<Tensor> landed;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 600; ++i) {
    const int64_t n = 16384 - (i % 7);
    host.assign(static_cast<size_t>(n), 0);
    for (int64_t j = 0; j < n; ++j) host[static_cast<size_t>(j)] = static_cast<int32_t>(i * 100003 + j);
    Tensor t = Tensor::empty({n}, DType::i32, gpu);
    cuda::copy_host_to_device(t.data_ptr(), host.data(), static_cast<size_t>(n) * sizeof(int32_t), 0);
    expected.push_back(host);
    host.assign(host.size(), -1);  // overwritten before the copy could have run: must not matter
    landed.push_back(t);
  }
  for (size_t i = 0; i < landed.size(); ++i) {
    INFO("upload " << i);
    REQUIRE(landed[i].to(Device::cpu()).to_vector<int32_t>() == expected[i]);
  }
  // Larger than the ring's per-upload limit: the synchronous path.
  std::vector<float> big(3 << 20);
  for (size_t j = 0; j < big.size(); ++j) big[j] = static_cast<float>(j % 1000) * 0.5f;
  const Tensor b = Tensor::from_vector(big, {static_cast<int64_t>(big.size())}).to(gpu);
  CHECK(b.to(Device::cpu()).to_vector<float>() == big);
}
