// Numerical checks shared by the test suites.
#pragma once

#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"

namespace vlmc::test {

// ||actual - expected|| / max(||expected||, 1e-30), in double over all elements.
// Throws when the shapes differ.
double rel_error(const Tensor& actual, const Tensor& expected);

// ||actual - expected|| / max(||expected||, floor). For a quantity that can be
// exactly 0 by cancellation (a conv bias before training-mode BatchNorm, a key
// bias under softmax, dq and dk with a single key), both devices return
// rounding noise and the plain relative error of noise against noise is ~1:
// floor is the norm the quantity would have without the cancellation (e.g.
// sqrt(n) times the RMS of the model's other gradients), so noise far below
// it passes and a real error does not.
double rel_error_floor(const Tensor& actual, const Tensor& expected, double floor);

// Root mean square of t's elements (0 for an empty tensor).
double rms(const Tensor& t);

// Largest |actual - expected| over all elements.
double max_abs_error(const Tensor& actual, const Tensor& expected);

// The worst element of actual against expected, each difference scaled by a
// magnitude of its own. rel_error judges the whole tensor's norm, in which one
// wrong element among a million hides; this judges every element.
struct ElementError {
  double error = 0;       // max_i |actual_i - expected_i| / magnitude_i; infinite when a value is not finite
  int64_t index = -1;     // flat index of that element (-1: no elements)
  double actual = 0, expected = 0, magnitude = 0;  // its values and magnitude
  std::string str() const;  // "element 12: actual 1.5 vs expected 1.25, |diff| / 1.75 = 0.142857"
};

// magnitude_i = |expected_i| + scale, scale >= 0, by default the RMS of
// expected: large elements are judged relative to themselves, elements near 0
// relative to the tensor's typical size (their own would over-penalise them).
// Throws when the shapes differ.
ElementError element_error(const Tensor& actual, const Tensor& expected, double scale = -1);
// The same with a magnitude tensor of expected's shape (e.g. Σ_k |x_ik·w_jk|
// for a product, where |expected_i| alone can be near 0 by cancellation).
ElementError element_error(const Tensor& actual, const Tensor& expected, const Tensor& magnitude);

// Finite-difference check of every input's gradient (f64, CPU). fn maps the
// inputs to one output of any shape; the check back-propagates a fixed random
// projection of that output and compares each input's gradient, element by
// element, with central differences: |analytic - numeric| <= atol + rtol*|numeric|.
// Inputs that do not require grad are left alone. Returns a description of
// the first mismatch, or "" when all gradients agree.
std::string gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                      const std::vector<Tensor>& inputs, double eps = 1e-6, double atol = 1e-7,
                      double rtol = 1e-5);

// A random f64 CPU leaf that requires grad, values in N(0,1) (seeded).
Tensor leaf(const Shape& shape, uint64_t seed);

}  // namespace vlmc::test

#define CHECK_GRADIENTS(...)                                   \
  do {                                                         \
    const std::string vlmc_gc_ = ::vlmc::test::gradcheck(__VA_ARGS__); \
    INFO(vlmc_gc_);                                            \
    CHECK(vlmc_gc_.empty());                                   \
  } while (0)

#define CHECK_REL(actual, expected, tol)                                    \
  do {                                                                      \
    const double vlmc_re_ = ::vlmc::test::rel_error((actual), (expected));  \
    INFO("relative error " << vlmc_re_ << " (tolerance " << (tol) << ")"); \
    CHECK(vlmc_re_ <= (tol));                                               \
  } while (0)

#define CHECK_REL_FLOOR(actual, expected, floor, tol)                                      \
  do {                                                                                     \
    const double vlmc_re_ = ::vlmc::test::rel_error_floor((actual), (expected), (floor));  \
    INFO("relative error " << vlmc_re_ << " against max(norm, " << (floor) << ") (tolerance " \
                           << (tol) << ")");                                               \
    CHECK(vlmc_re_ <= (tol));                                                              \
  } while (0)

// Every element within tol of expected, scaled by |expected_i| + RMS(expected)
// (element_error); on failure names the worst element and both values.
#define CHECK_ELEMENTWISE(actual, expected, tol)                                                   \
  do {                                                                                             \
    const ::vlmc::test::ElementError vlmc_ee_ = ::vlmc::test::element_error((actual), (expected)); \
    INFO("worst " << vlmc_ee_.str() << " (tolerance " << (tol) << ")");                            \
    CHECK(vlmc_ee_.error <= (tol));                                                                \
  } while (0)

// The same with each element scaled by magnitude_i.
#define CHECK_SCALED(actual, expected, magnitude, tol)                  \
  do {                                                                  \
    const ::vlmc::test::ElementError vlmc_ee_ =                         \
        ::vlmc::test::element_error((actual), (expected), (magnitude)); \
    INFO("worst " << vlmc_ee_.str() << " (tolerance " << (tol) << ")"); \
    CHECK(vlmc_ee_.error <= (tol));                                     \
  } while (0)
