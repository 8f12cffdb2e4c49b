// Tensor: a (possibly strided) view of shared storage, with autograd state.
//
// A Tensor is a handle: copies share the same TensorImpl, as in PyTorch.
// Views (view, permute, narrow, expand, ...) share storage with new
// shape/strides/offset; when the source requires grad they are recorded in
// the autograd graph like any other op.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"
#include "core/storage.h"

namespace vlmc {

class Tensor;
struct Node;
class Generator;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;      // in elements
  int64_t offset = 0; // in elements
  DType dtype = DType::f32;

  // Autograd state.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;      // accumulated gradient (leaves)
  std::shared_ptr<Node> grad_fn;         // the op that produced this tensor (non-leaves)
  std::weak_ptr<Node> grad_accumulator;  // leaves: the node edges point at, made on demand
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories -------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu());
  // Copies host values into a new tensor of that shape (numel must match).
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<uint8_t>& values, const Shape& shape);
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu());
  // Seeded random numbers: element i depends only on (seed, offset, i), so the
  // same seed gives the same numbers on every run and every thread count.
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32,
                      Device device = Device::cpu());
  static Tensor randn(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32,
                     Device device = Device::cpu());  // uniform in [0, 1)
  static Tensor rand(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor uniform(const Shape& shape, double low, double high, Generator& gen,
                        DType dtype = DType::f32, Device device = Device::cpu());

  // ---- metadata --------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t dim) const;  // negative dims count from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  // Pointer to element 0 of this view. data<T>() checks T against dtype().
  void* data_ptr() const;
  template <typename T>
  T* data() const;

  // ---- views (share storage) --------------------------------------------
  Tensor view(const Shape& shape) const;     // requires compatible strides; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end), clamped as Python
  Tensor select(int64_t dim, int64_t index) const;              // narrow + squeeze
  Tensor expand(const Shape& shape) const;                      // -1 keeps a dim
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // ---- copies and conversion -------------------------------------------
  Tensor contiguous() const;  // this tensor if already contiguous
  Tensor clone() const;       // always a new contiguous copy
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device, DType dtype) const;

  // ---- in place (refused on a tensor that requires grad while grad mode is on)
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape, any dtype/device

  // ---- host access ------------------------------------------------------
  double item() const;  // one-element tensors
  template <typename T>
  std::vector<T> to_vector() const;  // converts to T, copying from the device if needed
  std::string to_string(int64_t max_per_dim = 6) const;

  // ---- autograd ----------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool value);  // leaves only
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& grad) const;  // undefined tensor clears it
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor detach() const;  // same storage, no autograd history
  // Back-propagates from this tensor; gradient defaults to 1 for one-element tensors.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Description used in error messages: "f32 [4,576,1024] on cpu".
std::string describe(const Tensor& t);

}  // namespace vlmc
