// Elementwise ops: broadcasting binary ops, scalar variants, unary ops and
// the in-place updates. Values on hand-checked examples, f64 finite-difference
// gradients (broadcasting both ways, non-contiguous inputs), error messages.
#include <cmath>

#include "core/ops.h"
#include "core/threads.h"
#include "tests/support/check.h"

using namespace vlmc;
using vlmc::test::leaf;

namespace {

// A leaf whose values are shifted away from 0 to |v| + 0.5 (for log, sqrt, pow's base).
Tensor positive_leaf(const Shape& shape, uint64_t seed) {
  Tensor t = leaf(shape, seed);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::fabs(p[i]) + 0.5;
  return t;
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);

struct NamedBinary {
  const char* name;
  BinaryFn fn;
};

const NamedBinary kBinaryOps[] = {
    {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
    {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
    {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
    {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
    {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); }},
    {"maximum", maximum},
    {"minimum", minimum},
};

// Operands for op: pow needs a positive base; div a divisor away from 0.
std::vector<Tensor> binary_inputs(const char* name, const Shape& sa, const Shape& sb) {
  const std::string n = name;
  Tensor a = n == "pow" ? positive_leaf(sa, 11) : leaf(sa, 11);
  Tensor b = n == "div" ? positive_leaf(sb, 12) : leaf(sb, 12);
  return {a, b};
}

}  // namespace

TEST_CASE("binary ops: values with broadcasting", "[elementwise]") {
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{10, 20, 30}, {3});
  CHECK(values(add(a, b)) == std::vector<double>{11, 22, 33, 14, 25, 36});
  CHECK(values(a - b) == std::vector<double>{-9, -18, -27, -6, -15, -24});
  CHECK(values(b - a) == std::vector<double>{9, 18, 27, 6, 15, 24});
  CHECK(values(a * b) == std::vector<double>{10, 40, 90, 40, 100, 180});
  CHECK(values(div(b, a)) == std::vector<double>{10, 10, 10, 2.5, 4, 5});
  CHECK(add(a, b).shape() == Shape{2, 3});

  // [3,1] x [1,4] -> [3,4]
  const Tensor col = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3, 1});
  const Tensor row = Tensor::from_vector(std::vector<double>{0, 10, 20, 30}, {1, 4});
  const Tensor s = add(col, row);
  REQUIRE(s.shape() == Shape{3, 4});
  CHECK(values(s) == std::vector<double>{1, 11, 21, 31, 2, 12, 22, 32, 3, 13, 23, 33});

  const Tensor p = pow(Tensor::from_vector(std::vector<double>{2, 3, 4}, {3}),
                       Tensor::from_vector(std::vector<double>{3, 2, 0.5}, {3}));
  CHECK(values(p) == std::vector<double>{8, 9, 2});

  const Tensor x = Tensor::from_vector(std::vector<double>{1, 5, -2, NAN}, {4});
  const Tensor y = Tensor::from_vector(std::vector<double>{3, 5, -7, 0}, {4});
  const std::vector<double> mx = values(maximum(x, y)), mn = values(minimum(x, y));
  CHECK(mx[0] == 3);
  CHECK(mx[1] == 5);
  CHECK(mx[2] == -2);
  CHECK(std::isnan(mx[3]));  // NaN propagates, as torch.maximum
  CHECK(mn[0] == 1);
  CHECK(mn[2] == -7);
  CHECK(std::isnan(mn[3]));

  // Scalar (0-dim) operands broadcast to anything.
  CHECK(values(mul(a, Tensor::scalar(2.0))) == std::vector<double>{2, 4, 6, 8, 10, 12});
  CHECK(mul(Tensor::scalar(2.0), Tensor::scalar(3.0)).item() == 6.0);
}

TEST_CASE("binary ops: non-contiguous operands", "[elementwise]") {
  // Positive values so that pow is defined for every pairing.
  Generator gen(5);
  const Tensor a = add(abs(Tensor::randn({4, 5}, gen)), 0.1);
  const Tensor b = add(abs(Tensor::randn({5, 4}, gen)), 0.1);
  const Tensor bt = b.transpose(0, 1);  // [4,5], strides [1,4]
  REQUIRE_FALSE(bt.is_contiguous());
  for (const NamedBinary& op : kBinaryOps) {
    INFO(op.name);
    CHECK(test::max_abs_error(op.fn(a, bt), op.fn(a, bt.contiguous())) == 0.0);
    CHECK(test::max_abs_error(op.fn(bt, a), op.fn(bt.contiguous(), a)) == 0.0);
  }
  // Broadcast operand that is itself a strided view: a column of a transposed matrix.
  const Tensor col = b.narrow(1, 1, 1);  // [5,1], stride 4
  CHECK(test::max_abs_error(add(a, col.transpose(0, 1)), add(a, col.contiguous().view({1, 5}))) == 0);

  // One long broadcast row (cut into segments across threads): x * scalar tensor.
  const Tensor x = Tensor::randn({100003}, gen);
  CHECK(test::max_abs_error(mul(x, Tensor::scalar(1.5)), mul(x, 1.5)) == 0.0);
  CHECK(test::max_abs_error(sub(Tensor::scalar(1.5), x), rsub(1.5, x)) == 0.0);
  // Long strided rows: every other element of a [2, 2*50001] tensor.
  const Tensor y = Tensor::randn({2, 100002}, gen);
  const Tensor every_other = y.view({2, 50001, 2}).select(2, 0);  // [2,50001], stride 2
  CHECK(test::max_abs_error(add(every_other, every_other), mul(every_other.contiguous(), 2.0)) == 0.0);
}

TEST_CASE("binary ops: f32 matches an f64 reference", "[elementwise]") {
  Generator gen(7);
  const Tensor a = Tensor::randn({33, 65}, gen, DType::f64);
  const Tensor b = Tensor::randn({65}, gen, DType::f64);
  for (const NamedBinary& op : kBinaryOps) {
    INFO(op.name);
    const Tensor base = std::string(op.name) == "pow" ? add(abs(a), 0.5) : a;
    const Tensor ref = op.fn(base, b);
    const Tensor got = op.fn(base.to(DType::f32), b.to(DType::f32));
    CHECK_REL(got, ref, 1e-6);
  }
}

TEST_CASE("binary ops: gradients", "[elementwise]") {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3}, {2, 3}},       // same shape
      {{3, 1}, {1, 4}},       // both broadcast
      {{2, 3, 4}, {4}},       // b broadcast over leading dims
      {{4}, {2, 3, 4}},       // a broadcast
      {{2, 1, 4}, {3, 1}},    // mixed
      {{}, {2, 3}},           // 0-dim operand
  };
  for (const NamedBinary& op : kBinaryOps) {
    for (const auto& [sa, sb] : shapes) {
      INFO(op.name << " " << shape_str(sa) << " x " << shape_str(sb));
      const std::vector<Tensor> in = binary_inputs(op.name, sa, sb);
      CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return op.fn(v[0], v[1]); }, in);
    }
  }
}

TEST_CASE("binary ops: gradients through non-contiguous inputs", "[elementwise]") {
  for (const NamedBinary& op : kBinaryOps) {
    INFO(op.name);
    const std::vector<Tensor> in = binary_inputs(op.name, {4, 3}, {3, 4});
    // a viewed transposed, b narrowed: both strided, both broadcast-free.
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return op.fn(v[0].transpose(0, 1), v[1]); },
                    in);
    const std::vector<Tensor> in2 = binary_inputs(op.name, {3, 5}, {3, 4});
    CHECK_GRADIENTS(
        [&](const std::vector<Tensor>& v) {
          return op.fn(v[0].narrow(1, 1, 4), v[1].narrow(0, 1, 1));  // [3,4] x [1,4]
        },
        in2);
  }
}

TEST_CASE("binary ops: only the inputs that need a gradient get one", "[elementwise]") {
  Tensor a = leaf({2, 3}, 1);
  const Tensor b = Tensor::randn({3}, DType::f64);
  mul(a, b).backward(Tensor::ones({2, 3}, DType::f64));
  REQUIRE(a.grad().defined());
  CHECK(a.grad().shape() == Shape{2, 3});
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("maximum and minimum: ties split the gradient, as PyTorch", "[elementwise]") {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<double>{1, 5, 0}, {3}).set_requires_grad(true);
  maximum(a, b).backward(Tensor::ones({3}, DType::f64));
  CHECK(values(a.grad()) == std::vector<double>{0.5, 0, 1});
  CHECK(values(b.grad()) == std::vector<double>{0.5, 1, 0});
  a.set_grad(Tensor());
  b.set_grad(Tensor());
  minimum(a, b).backward(Tensor::ones({3}, DType::f64));
  CHECK(values(a.grad()) == std::vector<double>{0.5, 1, 0});
  CHECK(values(b.grad()) == std::vector<double>{0.5, 0, 1});
}

TEST_CASE("pow: gradients at a zero base and a zero exponent are PyTorch's", "[elementwise]") {
  Tensor a = Tensor::from_vector(std::vector<double>{0, 2, 0}, {3}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<double>{2, 0, 0}, {3}).set_requires_grad(true);
  pow(a, b).backward(Tensor::ones({3}, DType::f64));
  CHECK(values(a.grad()) == std::vector<double>{0, 0, 0});
  CHECK(values(b.grad()) == std::vector<double>{0, std::log(2.0), 0});
}

TEST_CASE("binary ops: errors name the op and both tensors", "[elementwise]") {
  const Tensor a = Tensor::zeros({2, 3});
  const Tensor b = Tensor::zeros({4});
  REQUIRE_THROWS_WITH(add(a, b), Catch::Contains("add: shapes [2,3] and [4] cannot be broadcast"));
  REQUIRE_THROWS_WITH(maximum(a, b), Catch::Contains("maximum: shapes [2,3] and [4]"));
  const Tensor d = Tensor::zeros({2, 3}, DType::f64);
  REQUIRE_THROWS_WITH(mul(a, d), Catch::Contains("mul: dtypes f32 and f64 differ") &&
                                     Catch::Contains("f32 [2,3] on cpu") &&
                                     Catch::Contains("f64 [2,3] on cpu"));
  const Tensor i = Tensor::zeros({2, 3}, DType::i64);
  REQUIRE_THROWS_WITH(sub(i, i), Catch::Contains("sub: a i64 [2,3] on cpu must be f32 or f64"));
  REQUIRE_THROWS_WITH(div(a, Tensor()), Catch::Contains("div: operand is undefined"));
}

TEST_CASE("scalar variants: values and gradients", "[elementwise]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 4}, {3});
  CHECK(values(x + 1.5) == std::vector<double>{2.5, 3.5, 5.5});
  CHECK(values(x - 1.0) == std::vector<double>{0, 1, 3});
  CHECK(values(10.0 - x) == std::vector<double>{9, 8, 6});
  CHECK(values(x * 3.0) == std::vector<double>{3, 6, 12});
  CHECK(values(3.0 * x) == std::vector<double>{3, 6, 12});
  CHECK(values(x / 2.0) == std::vector<double>{0.5, 1, 2});
  CHECK(values(8.0 / x) == std::vector<double>{8, 4, 2});
  CHECK(values(pow(x, 2.0)) == std::vector<double>{1, 4, 16});
  CHECK(values(pow(x, 0.5)) == std::vector<double>{1, std::sqrt(2.0), 2});
  CHECK(values(2.0 + x) == std::vector<double>{3, 4, 6});

  const std::vector<Tensor> in = {positive_leaf({3, 4}, 3)};
  const auto check = [&](auto f) {
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0]); }, in);
    // And through a non-contiguous view.
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0].transpose(0, 1)); }, in);
  };
  check([](const Tensor& t) { return add(t, 2.5); });
  check([](const Tensor& t) { return sub(t, 2.5); });
  check([](const Tensor& t) { return rsub(2.5, t); });
  check([](const Tensor& t) { return mul(t, -1.5); });
  check([](const Tensor& t) { return div(t, 3.0); });
  check([](const Tensor& t) { return rdiv(3.0, t); });
  check([](const Tensor& t) { return pow(t, 3.0); });
  check([](const Tensor& t) { return pow(t, -0.7); });
  check([](const Tensor& t) { return pow(t, 0.0); });
}

TEST_CASE("unary ops: values", "[elementwise]") {
  const Tensor x = Tensor::from_vector(std::vector<double>{-2, -0.5, 0, 1, 3}, {5});
  const std::vector<double> xv = values(x);
  const auto each = [&](double (*f)(double)) {
    std::vector<double> r;
    for (double v : xv) r.push_back(f(v));
    return r;
  };
  CHECK(values(neg(x)) == each([](double v) { return -v; }));
  CHECK(values(exp(x)) == each([](double v) { return std::exp(v); }));
  CHECK(values(abs(x)) == std::vector<double>{2, 0.5, 0, 1, 3});
  CHECK(values(tanh(x)) == each([](double v) { return std::tanh(v); }));
  CHECK(values(relu(x)) == std::vector<double>{0, 0, 0, 1, 3});
  CHECK_REL(sigmoid(x), Tensor::from_vector(each([](double v) { return 1 / (1 + std::exp(-v)); }), {5}),
            1e-15);
  CHECK_REL(silu(x), Tensor::from_vector(each([](double v) { return v / (1 + std::exp(-v)); }), {5}),
            1e-15);

  const Tensor p = Tensor::from_vector(std::vector<double>{0.25, 1, 4}, {3});
  CHECK(values(log(p)) == std::vector<double>{std::log(0.25), 0, std::log(4.0)});
  CHECK(values(sqrt(p)) == std::vector<double>{0.5, 1, 2});
  CHECK(values(rsqrt(p)) == std::vector<double>{2, 1, 0.5});

  // GELU references computed in Python float64 from the formulas PyTorch documents for
  // F.gelu(x) (0.5x(1+erf(x/sqrt2))) and F.gelu(x, approximate='tanh').
  const Tensor g = Tensor::from_vector(std::vector<double>{-1, 0, 1, 2}, {4});
  CHECK_REL(gelu(g), Tensor::from_vector(std::vector<double>{-0.15865525393145707, 0, 0.8413447460685429,
                                                             1.9544997361036416}, {4}), 1e-14);
  CHECK_REL(gelu(g, GeluApprox::tanh),
            Tensor::from_vector(std::vector<double>{-0.15880800939172324, 0, 0.8411919906082768,
                                                    1.954597694087775}, {4}), 1e-14);

  // Large magnitudes do not overflow into NaN.
  const Tensor big = Tensor::from_vector(std::vector<float>{-1000, 1000}, {2});
  CHECK(values(sigmoid(big)) == std::vector<double>{0, 1});
  CHECK(values(silu(big)) == std::vector<double>{-0.0, 1000});
}

TEST_CASE("unary ops: f32 matches an f64 reference", "[elementwise]") {
  Generator gen(9);
  const Tensor x = mul(Tensor::randn({1000}, gen, DType::f64), 3.0);
  const Tensor xp = add(abs(x), 0.1);
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>> ops = {
      {"neg", neg}, {"exp", exp}, {"abs", abs}, {"tanh", tanh}, {"sigmoid", sigmoid},
      {"relu", relu}, {"silu", silu},
      {"gelu", [](const Tensor& t) { return gelu(t); }},
      {"gelu_tanh", [](const Tensor& t) { return gelu(t, GeluApprox::tanh); }}};
  for (const auto& [name, f] : ops) {
    INFO(name);
    CHECK_REL(f(x.to(DType::f32)), f(x), 1e-6);
  }
  using UnaryFn = Tensor (*)(const Tensor&);
  for (UnaryFn f : std::vector<UnaryFn>{log, sqrt, rsqrt}) CHECK_REL(f(xp.to(DType::f32)), f(xp), 1e-6);
}

TEST_CASE("unary ops: f32 sigmoid and silu, element by element, over a dense sweep", "[elementwise]") {
  // Every 2^-10 on [-100, 100]: the polynomial exp's range and the tails past it.
  std::vector<double> xs;
  for (int64_t i = -100 * 1024; i <= 100 * 1024; ++i) xs.push_back(static_cast<double>(i) / 1024);
  const Tensor x64 = Tensor::from_vector(xs, {static_cast<int64_t>(xs.size())});
  const Tensor x32 = x64.to(DType::f32);
  for (const auto& [name, f] : std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>>{{"sigmoid", sigmoid},
                                                                                            {"silu", silu}}) {
    INFO(name);
    // Against the f64 op on the same (f32) inputs, relative to |want| + 1e-30:
    // a few f32 roundings of the polynomial exp (the worst measured: 1.06e-6).
    const std::vector<double> got = values(f(x32)), want = values(f(x32.to(DType::f64)));
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, std::fabs(got[i] - want[i]) / (std::fabs(want[i]) + 1e-30));
    CHECK(worst <= 2e-6);
  }
  // The gradient of silu, through the op's backward: absolute against
  // |want| + 1, as silu' crosses 0 (at x = -1.28) where no relative error holds.
  const Tensor a = x32.detach().clone().set_requires_grad(true);
  const Tensor b = x32.to(DType::f64).set_requires_grad(true);
  sum(silu(a)).backward();
  sum(silu(b)).backward();
  const std::vector<double> ga = values(a.grad()), gb = values(b.grad());
  double worst = 0;
  for (size_t i = 0; i < ga.size(); ++i) worst = std::max(worst, std::fabs(ga[i] - gb[i]) / (std::fabs(gb[i]) + 1.0));
  CHECK(worst <= 1e-6);
}

TEST_CASE("unary ops: gradients", "[elementwise]") {
  const std::vector<Tensor> in = {leaf({3, 4}, 21)};
  const std::vector<Tensor> pos = {positive_leaf({3, 4}, 22)};
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>> ops = {
      {"neg", neg}, {"exp", exp}, {"abs", abs}, {"tanh", tanh}, {"sigmoid", sigmoid},
      {"relu", relu}, {"silu", silu},
      {"gelu", [](const Tensor& t) { return gelu(t); }},
      {"gelu_tanh", [](const Tensor& t) { return gelu(t, GeluApprox::tanh); }}};
  for (const auto& [name, f] : ops) {
    INFO(name);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0]); }, in);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0].transpose(0, 1)); }, in);
  }
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>> positive_ops = {
      {"log", log}, {"sqrt", sqrt}, {"rsqrt", rsqrt}};
  for (const auto& [name, f] : positive_ops) {
    INFO(name);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0]); }, pos);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& v) { return f(v[0].narrow(1, 1, 2)); }, pos);
  }
}

TEST_CASE("abs and relu have gradient 0 at 0", "[elementwise]") {
  Tensor x = Tensor::from_vector(std::vector<double>{-1, 0, 2}, {3}).set_requires_grad(true);
  abs(x).backward(Tensor::ones({3}, DType::f64));
  CHECK(values(x.grad()) == std::vector<double>{-1, 0, 1});
  x.set_grad(Tensor());
  relu(x).backward(Tensor::ones({3}, DType::f64));
  CHECK(values(x.grad()) == std::vector<double>{0, 0, 1});
}

TEST_CASE("unary ops: errors", "[elementwise]") {
  REQUIRE_THROWS_WITH(exp(Tensor::zeros({2}, DType::i64)),
                      Catch::Contains("exp: input i64 [2] on cpu must be f32 or f64"));
  REQUIRE_THROWS_WITH(gelu(Tensor()), Catch::Contains("gelu: input is undefined"));
  REQUIRE_THROWS_WITH(mul(Tensor::zeros({2}, DType::u8), 2.0), Catch::Contains("mul: input u8 [2]"));
}

TEST_CASE("add_ and mul_: in place, broadcasting, refused on tensors that require grad",
          "[elementwise]") {
  Tensor s = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const void* before = s.data_ptr();
  add_(s, Tensor::from_vector(std::vector<float>{1, 1, 1}, {3}), 2.0);
  CHECK(values(s) == std::vector<double>{3, 4, 5, 6, 7, 8});
  CHECK(s.data_ptr() == before);
  add_(s, Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1));
  CHECK(values(s) == std::vector<double>{4, 7, 10, 8, 11, 14});
  mul_(s, 0.5);
  CHECK(values(s) == std::vector<double>{2, 3.5, 5, 4, 5.5, 7});

  REQUIRE_THROWS_WITH(add_(s, Tensor::zeros({2, 2})),
                      Catch::Contains("add_: shapes [2,2] and [2,3] cannot be broadcast"));
  REQUIRE_THROWS_WITH(add_(s, Tensor::zeros({3, 2, 3})),
                      Catch::Contains("add_: other [3,2,3] does not broadcast to self [2,3]"));
  REQUIRE_THROWS_WITH(add_(s, Tensor::zeros({2, 3}, DType::f64)),
                      Catch::Contains("add_: dtypes f32 and f64 differ"));
  Tensor t = s.transpose(0, 1);
  REQUIRE_THROWS_WITH(add_(t, Tensor::zeros({3, 2})), Catch::Contains("add_: self f32 [3,2] on cpu must be contiguous"));

  Tensor w = leaf({2}, 4);
  REQUIRE_THROWS_WITH(add_(w, Tensor::ones({2}, DType::f64)), Catch::Contains("add_: in-place change of"));
  REQUIRE_THROWS_WITH(mul_(w, 2.0), Catch::Contains("mul_: in-place change of"));
  const std::vector<double> w0 = values(w);
  {
    NoGradGuard no_grad;
    add_(w, Tensor::ones({2}, DType::f64), -0.5);
    mul_(w, 2.0);
  }
  CHECK(values(w) == std::vector<double>{(w0[0] - 0.5) * 2, (w0[1] - 0.5) * 2});
}

TEST_CASE("elementwise results do not depend on the thread count", "[elementwise]") {
  Generator gen(13);
  const Tensor a = Tensor::randn({300, 257}, gen);
  const Tensor b = Tensor::randn({257}, gen);
  const int saved = num_threads();
  set_num_threads(1);
  const Tensor x = Tensor::randn({100003}, gen);
  const Tensor one = gelu(add(a, b));
  const Tensor one_row = mul(x, Tensor::scalar(0.3f));
  set_num_threads(2);
  const Tensor two = gelu(add(a, b));
  CHECK(test::max_abs_error(one_row, mul(x, Tensor::scalar(0.3f))) == 0.0);
  set_num_threads(saved);
  CHECK(test::max_abs_error(one, two) == 0.0);
}
