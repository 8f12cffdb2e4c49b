// Tensor basics: dtypes, factories, conversion, copies, random streams, printing.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/cuda/runtime.h"
#include "core/ops.h"
#include "core/threads.h"
#include "tests/support/check.h"

using namespace vlmc;

TEST_CASE("dtype sizes and names", "[tensor]") {
  CHECK(dtype_size(DType::f32) == 4);
  CHECK(dtype_size(DType::f64) == 8);
  CHECK(dtype_size(DType::bf16) == 2);
  CHECK(dtype_size(DType::f16) == 2);
  CHECK(dtype_size(DType::i32) == 4);
  CHECK(dtype_size(DType::i64) == 8);
  CHECK(dtype_size(DType::u8) == 1);
  CHECK(std::string(dtype_name(DType::bf16)) == "bf16");
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps specials", "[tensor]") {
  CHECK(float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(bf16_bits_to_float(0x3f80) == 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (down to 1.0).
  CHECK(float_to_bf16_bits(1.00390625f) == 0x3f80);
  // 1 + 3*2^-8 is halfway as well: ties to even (up).
  CHECK(float_to_bf16_bits(1.01171875f) == 0x3f82);
  CHECK(std::isinf(bf16_bits_to_float(float_to_bf16_bits(std::numeric_limits<float>::infinity()))));
  CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("f16 conversion matches IEEE binary16", "[tensor]") {
  CHECK(float_to_f16_bits(1.0f) == 0x3c00);
  CHECK(float_to_f16_bits(-2.0f) == 0xc000);
  CHECK(float_to_f16_bits(65504.0f) == 0x7bff);  // largest finite
  CHECK(float_to_f16_bits(65520.0f) == 0x7c00);  // rounds to inf
  CHECK(float_to_f16_bits(5.960464477539063e-08f) == 0x0001);  // smallest subnormal
  CHECK(f16_bits_to_float(0x0001) == 5.960464477539063e-08f);
  CHECK(f16_bits_to_float(0x3555) == Approx(0.333251953125f));
  CHECK(std::isnan(f16_bits_to_float(float_to_f16_bits(std::nanf("")))));
  // Every finite half survives a round trip through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    REQUIRE(float_to_f16_bits(f16_bits_to_float(static_cast<uint16_t>(h))) == h);
  }
}

TEST_CASE("factories fill shape, dtype and values", "[tensor]") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.dtype() == DType::f32);
  CHECK(z.device().is_cpu());
  CHECK(z.to_vector<float>() == std::vector<float>(6, 0.0f));
  CHECK(Tensor::full({4}, 2.5, DType::f64).to_vector<double>() == std::vector<double>(4, 2.5));
  CHECK(Tensor::arange(4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(Tensor::scalar(3.0).dim() == 0);
  CHECK(Tensor::scalar(3.0).numel() == 1);
  CHECK(Tensor::scalar(3.0).item() == 3.0);
  CHECK(Tensor::empty({0, 5}).numel() == 0);
  REQUIRE_THROWS_WITH(Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}),
                      Catch::Contains("3 values do not fill shape [2,2]"));
  REQUIRE_THROWS_WITH(Tensor::empty({2, -1}), Catch::Contains("negative dimension in shape [2,-1]"));
}

TEST_CASE("to() converts between every pair of dtypes", "[tensor]") {
  const Tensor src = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 100, 7}, {2, 3});
  for (DType a : kAllDTypes) {
    for (DType b : kAllDTypes) {
      INFO(dtype_name(a) << " -> " << dtype_name(b));
      CHECK(src.to(a).to(b).to_vector<double>() == std::vector<double>{0, 1, 2, 3, 100, 7});
    }
  }
  CHECK(Tensor::from_vector(std::vector<float>{1.0f / 3.0f}, {1}).to(DType::bf16).item() ==
        Approx(0.333984375));
  CHECK(Tensor::from_vector(std::vector<int64_t>{(int64_t(1) << 62) + 1}, {1}).to(DType::i64)
            .to_vector<int64_t>()[0] == (int64_t(1) << 62) + 1);
}

TEST_CASE("clone and contiguous copy, and copy_ broadcasting into views", "[tensor]") {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = a.transpose(0, 1);  // [3,2] view
  CHECK_FALSE(t.is_contiguous());
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
  Tensor k = a.clone();
  k.fill_(0);
  CHECK(a.to_vector<float>()[0] == 1);  // clone does not share storage

  Tensor dst = Tensor::zeros({2, 3});
  dst.narrow(1, 1, 2).copy_(Tensor::from_vector(std::vector<float>{7, 8}, {2}));
  CHECK(dst.to_vector<float>() == std::vector<float>{0, 7, 8, 0, 7, 8});
  REQUIRE_THROWS_WITH(dst.copy_(Tensor::zeros({2})), Catch::Contains("copy_: shapes [2] and [2,3] cannot be broadcast"));
  REQUIRE_THROWS_WITH(Tensor::zeros({3}).copy_(dst), Catch::Contains("copy_: source [2,3] does not broadcast to destination [3]"));
}

TEST_CASE("random streams depend only on the seed, not on threads", "[tensor]") {
  const int saved = num_threads();
  set_num_threads(1);
  Generator g1(42);
  const std::vector<float> one = Tensor::randn({1000, 37}, g1).to_vector<float>();
  set_num_threads(2);
  Generator g2(42);
  const std::vector<float> two = Tensor::randn({1000, 37}, g2).to_vector<float>();
  set_num_threads(saved);
  CHECK(one == two);

  Generator g3(43);
  CHECK(Tensor::randn({100}, g3).to_vector<float>() != std::vector<float>(one.begin(), one.begin() + 100));

  // A second draw from the same generator continues the stream.
  Generator g4(42);
  Tensor first = Tensor::randn({10}, g4);
  Tensor second = Tensor::randn({10}, g4);
  CHECK(first.to_vector<float>() != second.to_vector<float>());

  // Moments of a large draw.
  Generator g5(7);
  const std::vector<double> n = Tensor::randn({200000}, g5, DType::f64).to_vector<double>();
  double mean = 0, var = 0;
  for (double x : n) mean += x;
  mean /= n.size();
  for (double x : n) var += (x - mean) * (x - mean);
  var /= n.size();
  CHECK(std::fabs(mean) < 0.01);
  CHECK(std::fabs(var - 1.0) < 0.01);

  Generator g6(7);
  const std::vector<double> u = Tensor::uniform({100000}, -2.0, 3.0, g6, DType::f64).to_vector<double>();
  double umin = 10, umax = -10, usum = 0;
  for (double x : u) {
    umin = std::min(umin, x);
    umax = std::max(umax, x);
    usum += x;
  }
  CHECK(umin >= -2.0);
  CHECK(umax < 3.0);
  CHECK(usum / u.size() == Approx(0.5).margin(0.02));
}

TEST_CASE("printing shows values, shape, dtype and device", "[tensor]") {
  Tensor a = Tensor::from_vector(std::vector<float>{1, -2, 3.5f, 4}, {2, 2});
  const std::string s = a.to_string();
  CHECK_THAT(s, Catch::Contains("1.0000"));
  CHECK_THAT(s, Catch::Contains("-2.0000"));
  CHECK_THAT(s, Catch::Contains("shape=[2,2], dtype=f32, device=cpu"));
  const std::string big = Tensor::zeros({100}).to_string();
  CHECK_THAT(big, Catch::Contains("..."));
  CHECK_THAT(Tensor::arange(3).to_string(), Catch::Contains("[0, 1, 2]"));
}

TEST_CASE("devices parse and CUDA is refused cleanly when absent", "[tensor]") {
  CHECK(Device::parse("cpu").is_cpu());
  CHECK(Device::parse("cuda:1").index == 1);
  CHECK(Device::parse("cuda").index == 0);
  REQUIRE_THROWS_WITH(Device::parse("gpu"), Catch::Contains("cannot parse 'gpu'"));
  REQUIRE_THROWS_WITH(Device::parse("cuda:x"), Catch::Contains("cannot parse 'cuda:x'"));
  if (!cuda::is_available()) {
    REQUIRE_THROWS_AS(Tensor::zeros({2}, DType::f32, Device::cuda(0)), Error);
  }
}

TEST_CASE("in-place changes of a tensor that requires grad are refused", "[tensor]") {
  Tensor w = Tensor::zeros({3});
  w.set_requires_grad(true);
  REQUIRE_THROWS_WITH(w.fill_(1.0), Catch::Contains("fill_: in-place change of f32 [3] on cpu"));
  {
    NoGradGuard no_grad;
    w.fill_(2.0);
  }
  CHECK(w.to_vector<float>() == std::vector<float>{2, 2, 2});
  REQUIRE_THROWS_WITH(Tensor::zeros({2}, DType::i64).set_requires_grad(true),
                      Catch::Contains("not a floating-point tensor"));
}

TEST_CASE("shape arithmetic is overflow-checked: counts, strides and bytes", "[tensor]") {
  const int64_t big = int64_t(1) << 62;
  CHECK_THROWS_WITH(shape_numel({big, 4}), Catch::Contains("shape [4611686018427387904,4] has more elements"));
  CHECK_THROWS_WITH(shape_numel({3, -2}), Catch::Contains("shape [3,-2] has a negative dim"));
  CHECK(shape_numel({0, big, 4}) == 0);
  // No elements, but strides past int64: refused rather than wrapped.
  CHECK_THROWS_WITH(contiguous_strides({0, big, 4, 2}), Catch::Contains("its strides do not fit in int64"));
  CHECK(contiguous_strides({0, int64_t(1) << 40, 12}) == Shape{(int64_t(1) << 40) * 12, 12, 1});
  // 2^61 elements fit; their f32 bytes do not.
  CHECK_THROWS_WITH(Tensor::empty({int64_t(1) << 61}), Catch::Contains("takes more bytes than int64 can count"));
  CHECK_THROWS_WITH(Tensor::empty({int64_t(1) << 40, int64_t(1) << 30}),
                    Catch::Contains("has more elements than int64 can count"));
  const Tensor t = Tensor::empty({0, int64_t(1) << 40, 12});  // empty, allocates nothing
  CHECK(t.numel() == 0);
  CHECK_THROWS_WITH(Tensor::zeros({2, 3}).view({-1, big, 4}), Catch::Contains("does not fit in int64"));
}

TEST_CASE("f32 <-> bf16 casts: the contiguous and strided loops give the generic path's bits", "[tensor]") {
  // Ties to even in both directions, NaN (quieted), infinities, denormals, signed zeros, and
  // the largest values that round to inf; laid out [2, N] so that a transposed view goes
  // through the strided loop.
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 1.00390625f, 1.01171875f, 3.0e38f, 3.4028235e38f,
                          -3.4028235e38f, 1e-40f, -1e-41f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::signaling_NaN(), 65504.0f};
  for (int i = 0; i < 48; ++i) v.push_back(std::ldexp(1.0f + static_cast<float>(i) / 64.0f, i - 24) * (i % 2 ? -1 : 1));
  const int64_t half = static_cast<int64_t>(v.size()) / 2;
  const Tensor x = Tensor::from_vector(v, {2, half});
  const Tensor contiguous = x.to(DType::bf16);
  const Tensor strided = x.transpose(0, 1).to(DType::bf16).transpose(0, 1).contiguous();
  REQUIRE(contiguous.numel() == strided.numel());
  CHECK(std::memcmp(contiguous.data_ptr(), strided.data_ptr(), static_cast<size_t>(contiguous.numel()) * 2) == 0);
  const Tensor back = contiguous.to(DType::f32);
  const Tensor back_strided = contiguous.transpose(0, 1).to(DType::f32).transpose(0, 1).contiguous();
  CHECK(std::memcmp(back.data_ptr(), back_strided.data_ptr(), static_cast<size_t>(back.numel()) * 4) == 0);
  // Both loops against the generic per-element path (through double), from f64.
  const Tensor generic = x.to(DType::f64).to(DType::bf16);
  CHECK(std::memcmp(contiguous.data_ptr(), generic.data_ptr(), static_cast<size_t>(contiguous.numel()) * 2) == 0);
}
