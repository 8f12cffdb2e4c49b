// conv2d and conv2d_batchnorm (conv + BatchNorm2d + optional GELU) on
// channels-last grids: hand-checked values, PyTorch golden files
// (tests/golden/conv_bn.safetensors from make_golden_conv_bn.py), f64
// finite differences for every differentiable input in both modes, the
// running-statistics semantics and the error messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/tensor_io.h"
#include "core/ops.h"
#include "tests/support/check.h"

using namespace vlmc;

namespace {

using Tensors = std::map<std::string, Tensor>;

// Running statistics as nn.BatchNorm2d holds them after some training: not
// the defaults, so that the momentum update and eval mode are visible.
struct Buffers {
  Tensor mean, var, count;
  Buffers(int64_t channels, DType dtype, uint64_t seed) {
    Generator gen(seed);
    mean = mul(Tensor::randn({channels}, gen, dtype), 0.5);
    var = add(Tensor::rand({channels}, gen, dtype), 0.5);
    count = Tensor::full({}, 3, DType::i64);
  }
};

}  // namespace

TEST_CASE("conv2d sums 3x3 neighbourhoods (stride 1 and 2, zero padding)", "[conv_bn]") {
  // x [1, 3, 3, 1] = 1..9 row by row; a 3x3 kernel of ones; bias 0.5.
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 3, 3, 1});
  const Tensor w = Tensor::ones({1, 1, 3, 3}, DType::f64);
  const Tensor b = Tensor::full({1}, 0.5, DType::f64);
  const Tensor same = conv2d(x, w, b, 1, 1);
  REQUIRE(same.shape() == Shape{1, 3, 3, 1});
  CHECK(same.to_vector<double>() ==
        std::vector<double>{12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5});
  // Stride 2: output pixels (0,0), (0,2), (2,0), (2,2) of the above.
  const Tensor strided = conv2d(x, w, b, 2, 1);
  REQUIRE(strided.shape() == Shape{1, 2, 2, 1});
  CHECK(strided.to_vector<double>() == std::vector<double>{12.5, 16.5, 24.5, 28.5});
  // No padding: only the centre.
  CHECK(conv2d(x, w, Tensor(), 1, 0).to_vector<double>() == std::vector<double>{45});
}

TEST_CASE("conv2d mixes channels with PyTorch's [Cout, Cin, kh, kw] weight", "[conv_bn]") {
  // 1x1 kernel: y[..., o] = sum_i w[o, i] x[..., i].
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 1, 2, 2});  // two pixels, 2 channels
  const Tensor w = Tensor::from_vector(std::vector<double>{1, 10, 100, 1000, -1, 0}, {3, 2, 1, 1});
  CHECK(conv2d(x, w).to_vector<double>() == std::vector<double>{21, 2100, -1, 43, 4300, -3});
  // A 1x2 kernel over a 1x2 grid with 1 channel picks w[o, 0, 0, kj] * x[kj].
  const Tensor x2 = Tensor::from_vector(std::vector<double>{3, 5}, {1, 1, 2, 1});
  const Tensor w2 = Tensor::from_vector(std::vector<double>{1, 2, 7, -1}, {2, 1, 1, 2});
  CHECK(conv2d(x2, w2).to_vector<double>() == std::vector<double>{13, 16});
}

TEST_CASE("conv2d_batchnorm: batch statistics, the momentum update and eval mode by hand", "[conv_bn]") {
  // A 1x1 identity conv over four values 1, 2, 3, 4 of one channel.
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 2, 2, 1});
  const Tensor w = Tensor::ones({1, 1, 1, 1}, DType::f64);
  const Tensor gamma = Tensor::full({1}, 2.0, DType::f64), beta = Tensor::full({1}, 1.0, DType::f64);
  Tensor rm = Tensor::zeros({1}, DType::f64), rv = Tensor::ones({1}, DType::f64);
  Tensor count = Tensor::full({}, 0, DType::i64);

  const std::vector<double> y =
      conv2d_batchnorm(x, w, Tensor(), gamma, beta, rm, rv, count, true, 0.1, 1e-5, false, 1, 0)
          .to_vector<double>();
  // mean 2.5, biased variance 1.25; the unbiased one (5/3) goes to running_var.
  for (int i = 0; i < 4; ++i) CHECK(y[i] == Approx(2 * (i + 1 - 2.5) / std::sqrt(1.25 + 1e-5) + 1).epsilon(1e-12));
  CHECK(rm.item() == Approx(0.25).epsilon(1e-12));
  CHECK(rv.item() == Approx(0.9 + 0.1 * 5.0 / 3.0).epsilon(1e-12));
  CHECK(count.item() == 1);

  // Eval: normalised by the running statistics, which stay as they are.
  const std::vector<double> e =
      conv2d_batchnorm(x, w, Tensor(), gamma, beta, rm, rv, count, false, 0.1, 1e-5, false, 1, 0)
          .to_vector<double>();
  const double running_var = 0.9 + 0.1 * 5.0 / 3.0;
  for (int i = 0; i < 4; ++i) CHECK(e[i] == Approx(2 * (i + 1 - 0.25) / std::sqrt(running_var + 1e-5) + 1).epsilon(1e-12));
  CHECK(rm.item() == Approx(0.25).epsilon(1e-12));
  CHECK(count.item() == 1);

  // GELU after the affine: exact erf form.
  Tensor rm2 = Tensor::zeros({1}, DType::f64), rv2 = Tensor::ones({1}, DType::f64), none;
  const std::vector<double> g =
      conv2d_batchnorm(x, w, Tensor(), gamma, beta, rm2, rv2, none, true, 0.1, 1e-5, true, 1, 0)
          .to_vector<double>();
  for (int i = 0; i < 4; ++i) {
    const double u = 2 * (i + 1 - 2.5) / std::sqrt(1.25 + 1e-5) + 1;
    CHECK(g[i] == Approx(0.5 * u * (1 + std::erf(u / std::sqrt(2.0)))).epsilon(1e-12));
  }
}

TEST_CASE("conv2d and conv2d_batchnorm match PyTorch (golden file)", "[conv_bn][golden]") {
  const std::string path = std::string(VLMC_GOLDEN_DIR) + "/conv_bn.safetensors";
  INFO("golden file " << path);
  const std::map<std::string, std::string> meta = io::load_safetensors_metadata(path);
  REQUIRE(meta.at("format") == "vlmc-golden");
  REQUIRE(meta.at("version") == "1");
  REQUIRE(meta.at("family") == "conv_bn");
  const Tensors file = io::load_safetensors(path);
  auto stored = [&](const std::string& key) {
    const auto it = file.find(key);
    return it == file.end() ? Tensor() : it->second;
  };
  // A fresh leaf from a stored input, or undefined when the case has none.
  auto leaf = [&](const std::string& key) {
    Tensor t = stored(key);
    if (!t.defined()) return t;
    t = t.clone();
    t.set_requires_grad(true);
    return t;
  };

  size_t cases = 0;
  for (const auto& [key, text] : meta) {
    const std::string suffix = ".args";
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = key.substr(0, key.size() - suffix.size());
    ++cases;
    DYNAMIC_SECTION(name) {
      INFO(name << ": " << text);
      const nlohmann::json args = nlohmann::json::parse(text);
      const bool batchnorm = args.at("op") == "conv2d_batchnorm";
      const bool training = args.at("training").get<bool>();
      const int64_t stride = args.at("stride").get<int64_t>(), padding = args.at("padding").get<int64_t>();
      const std::string p = name + ".";
      Tensor x = leaf(p + "in.x"), w = leaf(p + "in.weight"), cb = leaf(p + "in.conv_bias");
      Tensor gamma = leaf(p + "in.bn_weight"), beta = leaf(p + "in.bn_bias");
      auto buffer = [&](const std::string& k) {
        const Tensor t = stored(p + "in." + k);
        return t.defined() ? t.clone() : t;
      };
      Tensor rm = buffer("running_mean"), rv = buffer("running_var"), count = buffer("num_batches_tracked");

      const Tensor y = batchnorm ? conv2d_batchnorm(x, w, cb, gamma, beta, rm, rv, count, training,
                                                    args.at("momentum").get<double>(), args.at("eps").get<double>(),
                                                    args.at("gelu").get<bool>(), stride, padding)
                                 : conv2d(x, w, cb, stride, padding);
      const Tensor want = stored(p + "out.y");
      REQUIRE(y.shape() == want.shape());
      CHECK_REL(y, want, 1e-5);
      y.backward(stored(p + "proj.y"));

      for (const auto& [input, t] : std::map<std::string, Tensor>{
               {"x", x}, {"weight", w}, {"conv_bias", cb}, {"bn_weight", gamma}, {"bn_bias", beta}}) {
        if (!t.defined()) continue;
        INFO("gradient of " << input);
        const Tensor golden = stored(p + "grad." + input);
        REQUIRE(t.grad().defined());
        REQUIRE(t.grad().shape() == golden.shape());
        if (batchnorm && training && input == "conv_bias") {
          // Batch normalisation subtracts the bias right back: its gradient is
          // zero up to rounding (PyTorch's is ~1e-7), so compare absolutely.
          CHECK(test::max_abs_error(t.grad(), golden) <= 1e-5);
        } else {
          CHECK_REL(t.grad(), golden, 1e-5);
        }
      }
      if (batchnorm) {
        CHECK_REL(rm, stored(p + "out.running_mean"), 1e-5);
        CHECK_REL(rv, stored(p + "out.running_var"), 1e-5);
        CHECK(count.item() == stored(p + "out.num_batches_tracked").item());
        CHECK_FALSE(rm.requires_grad());
        CHECK_FALSE(rv.grad().defined());
      }
    }
  }
  CHECK(cases == 13);
}

TEST_CASE("conv2d gradients (f64 finite differences)", "[conv_bn]") {
  struct Case { int64_t b, h, w, cin, cout, kh, kw, stride, pad; bool bias; };
  for (const Case& c : std::vector<Case>{{2, 5, 4, 3, 2, 3, 3, 1, 1, true},
                                         {1, 7, 5, 2, 3, 3, 3, 2, 1, false},
                                         {2, 7, 5, 2, 2, 3, 3, 2, 0, true},
                                         {2, 3, 4, 3, 2, 1, 1, 1, 0, true},
                                         {1, 6, 5, 2, 2, 3, 2, 2, 1, true},
                                         {1, 2, 2, 1, 1, 3, 3, 1, 1, true}}) {
    INFO(c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout << ", k " << c.kh << "x" << c.kw
              << " stride " << c.stride << " pad " << c.pad);
    std::vector<Tensor> inputs{test::leaf({c.b, c.h, c.w, c.cin}, 1), test::leaf({c.cout, c.cin, c.kh, c.kw}, 2)};
    if (c.bias) inputs.push_back(test::leaf({c.cout}, 3));
    CHECK_GRADIENTS(
        [c](const std::vector<Tensor>& in) {
          return conv2d(in[0], in[1], c.bias ? in[2] : Tensor(), c.stride, c.pad);
        },
        inputs);
  }
  // Non-contiguous input and weight: a transposed grid and a transposed weight.
  CHECK_GRADIENTS(
      [](const std::vector<Tensor>& in) {
        return conv2d(in[0].transpose(1, 2), in[1].transpose(0, 1), in[2], 2, 1);
      },
      {test::leaf({2, 5, 6, 3}, 4), test::leaf({3, 4, 3, 3}, 5), test::leaf({4}, 6)});
}

TEST_CASE("conv2d_batchnorm gradients in training and eval (f64 finite differences)", "[conv_bn]") {
  struct Case { int64_t b, h, w, cin, cout, kh, kw, stride, pad; bool bias, affine, gelu; };
  const std::vector<Case> cases{{2, 5, 4, 3, 2, 3, 3, 1, 1, true, true, false},
                                {2, 7, 5, 2, 3, 3, 3, 2, 1, false, true, true},
                                {3, 7, 5, 2, 2, 3, 3, 2, 0, true, true, true},
                                {2, 3, 4, 3, 2, 1, 1, 1, 0, true, true, true},
                                {1, 6, 5, 2, 2, 3, 2, 2, 1, true, false, true},
                                {2, 4, 3, 2, 3, 3, 3, 1, 1, false, false, false}};
  for (const bool training : {true, false}) {
    for (const Case& c : cases) {
      INFO((training ? "training " : "eval ") << c.b << "x" << c.h << "x" << c.w << "x" << c.cin << " -> " << c.cout
                                              << ", k " << c.kh << "x" << c.kw << " stride " << c.stride << " pad "
                                              << c.pad << (c.bias ? " bias" : "") << (c.affine ? " affine" : "")
                                              << (c.gelu ? " gelu" : ""));
      std::vector<Tensor> inputs{test::leaf({c.b, c.h, c.w, c.cin}, 11), test::leaf({c.cout, c.cin, c.kh, c.kw}, 12)};
      if (c.bias) inputs.push_back(test::leaf({c.cout}, 13));
      if (c.affine) {
        inputs.push_back(test::leaf({c.cout}, 14));
        inputs.push_back(test::leaf({c.cout}, 15));
      }
      const Buffers buffers(c.cout, DType::f64, 16);
      CHECK_GRADIENTS(
          [c, training, buffers](const std::vector<Tensor>& in) {
            size_t next = 2;
            const Tensor bias = c.bias ? in[next++] : Tensor();
            const Tensor gamma = c.affine ? in[next++] : Tensor();
            const Tensor beta = c.affine ? in[next++] : Tensor();
            Tensor rm = buffers.mean, rv = buffers.var, count = buffers.count;  // shared storage
            return conv2d_batchnorm(in[0], in[1], bias, gamma, beta, rm, rv, count, training, 0.1, 1e-5, c.gelu,
                                    c.stride, c.pad);
          },
          inputs);
    }
    // A non-contiguous (transposed) grid.
    const Buffers buffers(3, DType::f64, 17);
    CHECK_GRADIENTS(
        [training, buffers](const std::vector<Tensor>& in) {
          Tensor rm = buffers.mean, rv = buffers.var, count = buffers.count;
          return conv2d_batchnorm(in[0].transpose(1, 2), in[1], in[2], in[3], in[4], rm, rv, count, training, 0.1,
                                  1e-5, true, 2, 1);
        },
        {test::leaf({2, 5, 6, 2}, 18), test::leaf({3, 2, 3, 3}, 19), test::leaf({3}, 20), test::leaf({3}, 21),
         test::leaf({3}, 22)});
  }
}

TEST_CASE("conv2d_batchnorm updates the running statistics outside the graph", "[conv_bn]") {
  Generator gen(30);
  Tensor x = Tensor::randn({2, 6, 6, 3}, gen), w = Tensor::randn({4, 3, 3, 3}, gen);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  Buffers buffers(4, DType::f32, 31);
  const std::vector<float> before = buffers.mean.to_vector<float>();
  // Training: buffers move, the counter counts, only the inputs get gradients.
  Tensor y = conv2d_batchnorm(x, w, Tensor(), Tensor(), Tensor(), buffers.mean, buffers.var, buffers.count, true);
  CHECK(buffers.count.item() == 4);
  CHECK(buffers.mean.to_vector<float>() != before);
  sum(y).backward();
  CHECK(x.grad().defined());
  CHECK_FALSE(buffers.mean.grad().defined());
  CHECK_FALSE(buffers.var.grad().defined());
  // With no affine parameters the output of each channel sums to zero, so
  // sum(y) is constant: the gradients vanish.
  CHECK(test::max_abs_error(w.grad(), Tensor::zeros(w.shape())) < 1e-4);

  // Eval: nothing moves.
  const std::vector<float> mean = buffers.mean.to_vector<float>(), var = buffers.var.to_vector<float>();
  conv2d_batchnorm(x, w, Tensor(), Tensor(), Tensor(), buffers.mean, buffers.var, buffers.count, false);
  CHECK(buffers.mean.to_vector<float>() == mean);
  CHECK(buffers.var.to_vector<float>() == var);
  CHECK(buffers.count.item() == 4);
}

TEST_CASE("conv2d and conv2d_batchnorm reject bad arguments by name and shape", "[conv_bn]") {
  const Tensor x = Tensor::zeros({1, 4, 4, 3}), w = Tensor::zeros({2, 3, 3, 3});
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({2, 576, 1024}), w),
                      Catch::Contains("conv2d: input [2,576,1024] must be [B, H, W, C]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({2, 27})), Catch::Contains("conv2d: weight [2,27] must be [Cout, Cin, kh, kw]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({2, 5, 3, 3})),
                      Catch::Contains("conv2d: input [1,4,4,3] has 3 channels but weight [2,5,3,3] expects 5"));
  REQUIRE_THROWS_WITH(conv2d(x, w, Tensor::zeros({3})),
                      Catch::Contains("conv2d: bias [3] does not match weight [2,3,3,3] (expected [2])"));
  REQUIRE_THROWS_WITH(conv2d(x, w, Tensor(), 0, 1), Catch::Contains("conv2d: stride 0 must be at least 1"));
  REQUIRE_THROWS_WITH(conv2d(x, w, Tensor(), 1, -1), Catch::Contains("conv2d: padding -1 must not be negative"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({1, 2, 5, 3}), w),
                      Catch::Contains("conv2d: input [1,2,5,3] padded by 0 is smaller than the 3x3 kernel of weight [2,3,3,3]"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({0, 4, 4, 3}), w), Catch::Contains("must not be empty"));
  REQUIRE_THROWS_WITH(conv2d(x, w.to(DType::f64)), Catch::Contains("conv2d: dtypes f32 and f64 differ"));
  REQUIRE_THROWS_WITH(conv2d(x.to(DType::i64), w), Catch::Contains("conv2d: input i64 [1,4,4,3] on cpu must be f32 or f64"));

  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2}), count = Tensor::zeros({}, DType::i64);
  auto cbn = [&](const Tensor& gamma, const Tensor& beta, Tensor& mean, Tensor& var, Tensor& n, bool training,
                 const Tensor& input) {
    return conv2d_batchnorm(input, w, Tensor(), gamma, beta, mean, var, n, training);
  };
  const Tensor two = Tensor::ones({2});
  REQUIRE_THROWS_WITH(cbn(Tensor::ones({5}), two, rm, rv, count, true, x),
                      Catch::Contains("conv2d_batchnorm: bn_weight [5] does not match weight [2,3,3,3] (expected [2])"));
  REQUIRE_THROWS_WITH(cbn(two, Tensor::ones({2, 1}), rm, rv, count, true, x),
                      Catch::Contains("conv2d_batchnorm: bn_bias [2,1] does not match weight [2,3,3,3]"));
  Tensor short_mean = Tensor::zeros({3});
  REQUIRE_THROWS_WITH(cbn(two, two, short_mean, rv, count, true, x),
                      Catch::Contains("conv2d_batchnorm: running_mean [3] does not match weight [2,3,3,3]"));
  Tensor undefined;
  REQUIRE_THROWS_WITH(cbn(two, two, rm, undefined, count, true, x),
                      Catch::Contains("conv2d_batchnorm: running_var must be defined"));
  Tensor var64 = Tensor::ones({2}, DType::f64);
  REQUIRE_THROWS_WITH(cbn(two, two, rm, var64, count, true, x), Catch::Contains("conv2d_batchnorm: dtypes f32 and f64 differ"));
  Tensor float_count = Tensor::zeros({});
  REQUIRE_THROWS_WITH(cbn(two, two, rm, rv, float_count, true, x),
                      Catch::Contains("conv2d_batchnorm: num_batches_tracked f32 [] on cpu must be one i64 element"));
  Tensor gapped = Tensor::ones({2, 2}).select(1, 0);
  REQUIRE_THROWS_WITH(cbn(two, two, rm, gapped, count, true, x), Catch::Contains("must be contiguous buffers"));
  // One value per channel: the unbiased variance is undefined, as in PyTorch.
  REQUIRE_THROWS_WITH(cbn(two, two, rm, rv, count, true, Tensor::zeros({1, 1, 1, 3})),
                      Catch::Contains("conv2d_batchnorm: expected more than 1 value per channel when training, got "
                                      "input [1,1,1,3] -> output [1,1,1,2]"));
  // ... which eval mode accepts.
  CHECK(cbn(two, two, rm, rv, count, false, Tensor::zeros({1, 1, 1, 3})).shape() == Shape{1, 1, 1, 2});
  CHECK(count.item() == 0);
}
