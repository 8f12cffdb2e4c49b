// Tensor: factories, metadata, copies, conversion, host access and printing.
// View ops live in core/views.cpp.
#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/random.h"
#include "kernels/copy.h"
#include "kernels/philox.h"

namespace vlmc {
namespace {

void fill_layout(const Tensor& t, double value) {
  const kernels::Layout l = make_layout(t.shape(), t.strides());
  if (t.device().is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::fill(t.data_ptr(), t.dtype(), l, value, stream_of(t)));
  } else {
    kernels::cpu::fill(t.data_ptr(), t.dtype(), l, value);
  }
}

template <typename T>
Tensor from_host(const std::vector<T>& values, const Shape& shape) {
  VLMC_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
             values.size(), " values do not fill shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  if (!values.empty()) std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(T));
  return t;
}

// Copies src (already broadcast to dst's shape) into dst, across devices and dtypes.
void copy_into(const Tensor& dst, const Tensor& src) {
  const kernels::Layout dl = make_layout(dst.shape(), dst.strides());
  const kernels::Layout sl = broadcast_layout(src.shape(), src.strides(), dst.shape());
  if (dst.device() == src.device()) {
    if (dst.device().is_cuda()) {
      VLMC_CUDA_DISPATCH(kernels::cuda::copy(dst.data_ptr(), dst.dtype(), dl, src.data_ptr(),
                                             src.dtype(), sl, stream_of(dst)));
    } else {
      kernels::cpu::copy(dst.data_ptr(), dst.dtype(), dl, src.data_ptr(), src.dtype(), sl);
    }
    return;
  }
  // Across devices: make a contiguous copy of dst's dtype and shape on src's
  // device, move its bytes, then lay them into dst's strides.
  Tensor staged = Tensor::empty(dst.shape(), dst.dtype(), src.device());
  copy_into(staged, src);
  Tensor landed = dst.is_contiguous() ? dst : Tensor::empty(dst.shape(), dst.dtype(), dst.device());
  if (dst.device().is_cuda() && src.device().is_cuda()) {
    // Between two GPUs: stage through the host (peer access is not assumed).
    Tensor host = Tensor::empty(dst.shape(), dst.dtype(), Device::cpu());
    cuda::copy_device_to_host(host.data_ptr(), staged.data_ptr(), staged.nbytes(), src.device().index);
    cuda::copy_host_to_device(landed.data_ptr(), host.data_ptr(), host.nbytes(), dst.device().index);
  } else if (dst.device().is_cuda()) {
    cuda::copy_host_to_device(landed.data_ptr(), staged.data_ptr(), staged.nbytes(), dst.device().index);
  } else {
    cuda::copy_device_to_host(landed.data_ptr(), staged.data_ptr(), staged.nbytes(), src.device().index);
  }
  if (!landed.same(dst)) copy_into(dst, landed);
}

void check_inplace(const Tensor& t, const char* op) {
  VLMC_CHECK(!(t.requires_grad() && grad_enabled()), op, ": in-place change of ", describe(t),
             " which requires grad; do it under NoGradGuard");
}

}  // namespace

// ---- factories ---------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    VLMC_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  VLMC_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims), "empty: shape ",
             shape_str(shape), " has more than ", kernels::kMaxDims, " dims");
  // Sizes are checked before anything is allocated: a wrapped product would
  // allocate a small block that the kernels then overrun.
  int64_t nbytes = 0;
  VLMC_CHECK(!__builtin_mul_overflow(shape_numel(shape), static_cast<int64_t>(dtype_size(dtype)), &nbytes),
             "empty: ", shape_str(shape), " ", dtype_name(dtype), " takes more bytes than int64 can count");
  Shape strides = contiguous_strides(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(static_cast<size_t>(nbytes), device);
  impl->shape = shape;
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_layout(t, value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s) { return from_host(v, s); }
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s) { return from_host(v, s); }
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s) { return from_host(v, s); }
Tensor Tensor::from_vector(const std::vector<int32_t>& v, const Shape& s) { return from_host(v, s); }
Tensor Tensor::from_vector(const std::vector<uint8_t>& v, const Shape& s) { return from_host(v, s); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  VLMC_CHECK(n >= 0, "arange: n must be >= 0, got ", n);
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<double>(i);
  return from_vector(values, {n}).to(device, dtype);
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  VLMC_CHECK(is_floating(dtype), "randn: dtype ", dtype_name(dtype), " is not a floating type");
  Tensor t = empty(shape, dtype, device);
  if (!gen.fills()) return t;  // Generator::unfilled(): a checkpoint overwrites it
  const int64_t n = t.numel();
  const uint64_t offset = gen.advance(kernels::normal_counters(n));
  if (device.is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::fill_normal(t.data_ptr(), dtype, n, gen.seed(), offset, 0.0, 1.0,
                                                  stream_of(t)));
  } else {
    kernels::cpu::fill_normal(t.data_ptr(), dtype, n, gen.seed(), offset, 0.0, 1.0);
  }
  return t;
}

Tensor Tensor::randn(const Shape& shape, DType dtype, Device device) {
  return randn(shape, default_generator(), dtype, device);
}

Tensor Tensor::uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype,
                       Device device) {
  VLMC_CHECK(is_floating(dtype), "uniform: dtype ", dtype_name(dtype), " is not a floating type");
  VLMC_CHECK(low <= high, "uniform: low ", low, " is above high ", high);
  Tensor t = empty(shape, dtype, device);
  if (!gen.fills()) return t;  // Generator::unfilled(): a checkpoint overwrites it
  const int64_t n = t.numel();
  const uint64_t offset = gen.advance(kernels::uniform_counters(n));
  if (device.is_cuda()) {
    VLMC_CUDA_DISPATCH(kernels::cuda::fill_uniform(t.data_ptr(), dtype, n, gen.seed(), offset, low,
                                                   high, stream_of(t)));
  } else {
    kernels::cpu::fill_uniform(t.data_ptr(), dtype, n, gen.seed(), offset, low, high);
  }
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  return uniform(shape, 0.0, 1.0, gen, dtype, device);
}

Tensor Tensor::rand(const Shape& shape, DType dtype, Device device) {
  return rand(shape, default_generator(), dtype, device);
}

// ---- metadata ------------------------------------------------------------------

TensorImpl& Tensor::impl() const {
  VLMC_CHECK(impl_ != nullptr, "use of an undefined tensor");
  return *impl_;
}

int64_t Tensor::size(int64_t d) const { return shape()[static_cast<size_t>(wrap_dim(d, dim(), "size"))]; }

bool Tensor::is_contiguous() const { return make_layout(shape(), strides()).is_contiguous(); }

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<int64_t>(dtype_size(dtype()));
}

template <typename T>
T* Tensor::data() const {
  VLMC_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">: tensor is ",
             describe(*this));
  return static_cast<T*>(data_ptr());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template BFloat16* Tensor::data<BFloat16>() const;
template Float16* Tensor::data<Float16>() const;

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return str(dtype_name(t.dtype()), " ", shape_str(t.shape()), " on ", t.device().str());
}

// ---- copies and conversion ----------------------------------------------------------

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const { return to(device(), dtype()); }

Tensor Tensor::to(Device device) const { return to(device, dtype()); }
Tensor Tensor::to(DType dtype) const { return to(device(), dtype); }

Tensor Tensor::to(Device target_device, DType target_dtype) const {
  Tensor out = empty(shape(), target_dtype, target_device);
  copy_into(out, *this);
  if (is_floating(target_dtype) && is_floating(dtype())) {
    const Device src_device = device();
    const DType src_dtype = dtype();
    record(out, "to", {*this}, [src_device, src_dtype](const Tensor& g, const GradMask&) {
      return std::vector<Tensor>{g.to(src_device, src_dtype)};
    });
  }
  return out;
}

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  fill_layout(*this, value);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  VLMC_CHECK(broadcast_shapes(src.shape(), shape(), "copy_") == shape(), "copy_: source ",
             shape_str(src.shape()), " does not broadcast to destination ", shape_str(shape()));
  copy_into(*this, src);
  return *this;
}

// ---- host access -----------------------------------------------------------------------

double Tensor::item() const {
  VLMC_CHECK(numel() == 1, "item: tensor ", describe(*this), " does not hold exactly one element");
  return to_vector<double>()[0];
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  const Tensor host = to(Device::cpu(), dtype_of<T>()).contiguous();
  std::vector<T> out(static_cast<size_t>(host.numel()));
  if (!out.empty()) std::memcpy(out.data(), host.data_ptr(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

namespace {

void print_values(std::ostream& os, const std::vector<double>& v, const Shape& shape, size_t dim,
                  int64_t base, int64_t max_per_dim, bool integral, int indent) {
  if (shape.empty()) {
    os << v[0];
    return;
  }
  const int64_t n = shape[dim];
  int64_t stride = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) stride *= shape[d];
  const bool summarize = n > max_per_dim;
  const int64_t head = summarize ? max_per_dim / 2 : n;
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == head) {
      os << (dim + 1 == shape.size() ? "..., " : "...,\n" + std::string(static_cast<size_t>(indent + 1), ' '));
      i = n - max_per_dim / 2;
    }
    if (dim + 1 == shape.size()) {
      const double x = v[static_cast<size_t>(base + i)];
      if (integral) {
        os << static_cast<int64_t>(x);
      } else {
        os << std::setw(9) << std::fixed << std::setprecision(4) << x;
      }
    } else {
      print_values(os, v, shape, dim + 1, base + i * stride, max_per_dim, integral, indent + 1);
    }
    if (i + 1 < n) os << (dim + 1 == shape.size() ? ", " : ",\n" + std::string(static_cast<size_t>(indent + 1), ' '));
  }
  os << "]";
}

}  // namespace

std::string Tensor::to_string(int64_t max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(";
  if (numel() == 0) {
    os << "[]";
  } else {
    print_values(os, to_vector<double>(), shape(), 0, 0, max_per_dim, !is_floating(dtype()), 7);
  }
  os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype())
     << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

// ---- autograd state --------------------------------------------------------------------

Tensor& Tensor::set_requires_grad(bool value) {
  VLMC_CHECK(is_leaf(), "set_requires_grad: ", describe(*this),
             " is the output of an op; only leaves can change requires_grad (use detach())");
  VLMC_CHECK(!value || is_floating(dtype()), "set_requires_grad: ", describe(*this),
             " is not a floating-point tensor");
  impl().requires_grad = value;
  return *this;
}

void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined())
    VLMC_CHECK(grad.shape() == shape() && grad.device() == device(), "set_grad: gradient ",
               describe(grad), " does not match tensor ", describe(*this));
  impl().grad = grad.impl_ptr();
}

Tensor Tensor::detach() const {
  auto impl2 = std::make_shared<TensorImpl>();
  impl2->storage = impl().storage;
  impl2->shape = impl().shape;
  impl2->strides = impl().strides;
  impl2->offset = impl().offset;
  impl2->dtype = impl().dtype;
  return Tensor(std::move(impl2));
}

}  // namespace vlmc
