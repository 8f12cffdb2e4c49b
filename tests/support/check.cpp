#include "tests/support/check.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace vlmc::test {

double rel_error(const Tensor& actual, const Tensor& expected) {
  VLMC_CHECK(actual.shape() == expected.shape(), "rel_error: shapes ", shape_str(actual.shape()),
             " and ", shape_str(expected.shape()), " differ");
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - e[i]) * (a[i] - e[i]);
    norm += e[i] * e[i];
  }
  if (std::isnan(diff)) return INFINITY;
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

double rel_error_floor(const Tensor& actual, const Tensor& expected, double floor) {
  VLMC_CHECK(actual.shape() == expected.shape(), "rel_error_floor: shapes ", shape_str(actual.shape()),
             " and ", shape_str(expected.shape()), " differ");
  VLMC_CHECK(floor >= 0, "rel_error_floor: floor ", floor, " is negative");
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - e[i]) * (a[i] - e[i]);
    norm += e[i] * e[i];
  }
  if (!std::isfinite(diff)) return INFINITY;
  return std::sqrt(diff) / std::max({std::sqrt(norm), floor, 1e-30});
}

double rms(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  double sum_squares = 0;
  for (const double x : v) sum_squares += x * x;
  return v.empty() ? 0.0 : std::sqrt(sum_squares / static_cast<double>(v.size()));
}

double max_abs_error(const Tensor& actual, const Tensor& expected) {
  VLMC_CHECK(actual.shape() == expected.shape(), "max_abs_error: shapes ",
             shape_str(actual.shape()), " and ", shape_str(expected.shape()), " differ");
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - e[i]);
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst;
}

namespace {

// The worst of |a_i - e_i| / magnitude(i); the first non-finite value (in a,
// e or the magnitude) wins outright.
template <typename Magnitude>
ElementError worst_element(const std::vector<double>& a, const std::vector<double>& e, Magnitude&& magnitude) {
  ElementError worst;
  for (size_t i = 0; i < a.size(); ++i) {
    const double m = magnitude(i);
    const bool finite = std::isfinite(a[i]) && std::isfinite(e[i]) && std::isfinite(m);
    const double err = finite ? std::fabs(a[i] - e[i]) / std::max(m, 1e-30) : INFINITY;
    if (worst.index < 0 || err > worst.error) worst = {err, static_cast<int64_t>(i), a[i], e[i], m};
    if (!finite) break;
  }
  return worst;
}

}  // namespace

std::string ElementError::str() const {
  if (index < 0) return "element: none (empty tensors)";
  std::ostringstream out;
  out.precision(10);  // enough to tell f32 neighbours apart
  out << "element " << index << ": actual " << actual << " vs expected " << expected << ", |diff| / "
      << magnitude << " = " << error;
  return out.str();
}

ElementError element_error(const Tensor& actual, const Tensor& expected, double scale) {
  VLMC_CHECK(actual.shape() == expected.shape(), "element_error: shapes ", shape_str(actual.shape()),
             " and ", shape_str(expected.shape()), " differ");
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  if (scale < 0) {  // the RMS of the finite values: a non-finite one is reported where it is
    double sq = 0;
    for (double v : e) sq += std::isfinite(v) ? v * v : 0.0;
    scale = e.empty() ? 0.0 : std::sqrt(sq / static_cast<double>(e.size()));
  }
  return worst_element(a, e, [&](size_t i) { return std::fabs(e[i]) + scale; });
}

ElementError element_error(const Tensor& actual, const Tensor& expected, const Tensor& magnitude) {
  VLMC_CHECK(actual.shape() == expected.shape() && magnitude.shape() == expected.shape(),
             "element_error: shapes ", shape_str(actual.shape()), ", ", shape_str(expected.shape()),
             " and magnitude ", shape_str(magnitude.shape()), " differ");
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>(),
                            m = magnitude.to_vector<double>();
  return worst_element(a, e, [&](size_t i) { return m[i]; });
}

Tensor leaf(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  Tensor t = Tensor::randn(shape, gen, DType::f64);
  t.set_requires_grad(true);
  return t;
}

namespace {

// <out, projection> in double on the host: independent of the ops under test.
double project(const Tensor& out, const std::vector<double>& projection) {
  const std::vector<double> v = out.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * projection[i];
  return s;
}

}  // namespace

std::string gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                      const std::vector<Tensor>& inputs, double eps, double atol, double rtol) {
  for (const Tensor& t : inputs) {
    if (!t.defined() || !t.requires_grad()) continue;
    VLMC_CHECK(t.dtype() == DType::f64 && t.device().is_cpu() && t.is_contiguous() && t.is_leaf(),
               "gradcheck: inputs that require grad must be contiguous f64 CPU leaves, got ",
               describe(t));
    t.set_grad(Tensor());
  }
  Tensor out = fn(inputs);
  VLMC_CHECK(out.requires_grad(), "gradcheck: the output does not require grad");
  Generator gen(1234);
  const Tensor projection_t = Tensor::randn(out.shape(), gen, DType::f64);
  const std::vector<double> projection = projection_t.to_vector<double>();
  out.backward(projection_t);

  NoGradGuard no_grad;
  std::ostringstream report;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = inputs[k];
    if (!t.defined() || !t.requires_grad()) continue;
    VLMC_CHECK(t.grad().defined(), "gradcheck: input ", k, " received no gradient");
    const std::vector<double> analytic = t.grad().to_vector<double>();
    double* data = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double saved = data[i];
      data[i] = saved + eps;
      const double plus = project(fn(inputs), projection);
      data[i] = saved - eps;
      const double minus = project(fn(inputs), projection);
      data[i] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      const double a = analytic[static_cast<size_t>(i)];
      if (!(std::fabs(a - numeric) <= atol + rtol * std::fabs(numeric))) {
        report << "input " << k << " " << describe(t) << " element " << i << ": analytic " << a
               << " vs numeric " << numeric;
        return report.str();
      }
    }
  }
  return "";
}

}  // namespace vlmc::test
