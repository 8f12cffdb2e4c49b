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

// Largest |actual - expected| over all elements.
double max_abs_error(const Tensor& actual, const Tensor& expected);

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
