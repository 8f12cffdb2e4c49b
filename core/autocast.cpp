// The autocast mode and weight cache (see core/autocast.h). Both are
// thread-local: a guard on one thread never changes another thread's products.
#include "core/autocast.h"

#include <memory>
#include <unordered_map>

#include "core/error.h"
#include "kernels/copy.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/reduce.h"

namespace vlmc {
namespace {

struct CacheEntry {
  std::shared_ptr<TensorImpl> source;  // held so its address cannot be reused as a key
  Tensor copy;
};

// The two forms of a rounded copy (autocast_bf16_copy's bits, or f32 values).
enum Form { kBits = 0, kValues = 1 };

struct AutocastState {
  bool bf16 = false;
  int depth = 0;  // active guards; the caches live while it is > 0
  std::unordered_map<const TensorImpl*, CacheEntry> cache[2];  // by Form
};

AutocastState& state() {
  thread_local AutocastState s;
  return s;
}

Tensor rounded_bits(const Tensor& x) { return x.detach().to(DType::bf16).contiguous(); }

// x's values rounded to bf16's precision, as a contiguous f32 tensor (the
// CPU's form; CUDA's products take bits).
Tensor rounded_values(const Tensor& x) {
  VLMC_CHECK(!x.device().is_cuda(), "autocast: ", describe(x), ": f32-held bf16 operands are the CPU's form");
  const Tensor src = x.detach();
  if (src.is_contiguous()) {
    Tensor out = Tensor::empty(src.shape(), DType::f32, src.device());
    kernels::cpu::round_to_bf16_precision(out.data<float>(), src.data<float>(), out.numel());
    return out;
  }
  Tensor out = src.contiguous();  // a fresh copy, rounded where it lies
  kernels::cpu::round_to_bf16_precision(out.data<float>(), out.data<float>(), out.numel());
  return out;
}

Tensor rounded(const Tensor& x, Form form) { return form == kBits ? rounded_bits(x) : rounded_values(x); }

// x rounded in `form`, from (or into) the weight cache where x is a parameter.
Tensor cached_rounding(const Tensor& x, Form form) {
  VLMC_CHECK(x.defined(), "autocast: undefined operand");
  if (x.dtype() == DType::bf16) return form == kBits ? x.detach() : x.detach().to(DType::f32);  // exact
  VLMC_CHECK(x.dtype() == DType::f32, "autocast: operand dtype ", dtype_name(x.dtype()),
             " cannot be rounded to bf16 (only f32 is)");
  AutocastState& s = state();
  if (s.depth == 0 || !x.is_leaf() || !x.requires_grad()) return rounded(x, form);
  auto& cache = s.cache[form];
  const auto found = cache.find(x.impl_ptr().get());
  if (found != cache.end()) return found->second.copy;
  Tensor copy = rounded(x, form);
  cache.emplace(x.impl_ptr().get(), CacheEntry{x.impl_ptr(), copy});
  return copy;
}

}  // namespace

AutocastGuard::AutocastGuard(bool bf16_enabled) : previous_(state().bf16) {
  AutocastState& s = state();
  s.bf16 = bf16_enabled;
  ++s.depth;
}

AutocastGuard::~AutocastGuard() {
  AutocastState& s = state();
  s.bf16 = previous_;
  if (--s.depth == 0)
    for (auto& cache : s.cache) cache.clear();
}

bool autocast_bf16() { return state().bf16; }

bool cpu_bf16_products_native() {
  return kernels::cpu::onednn::enabled(kernels::cpu::onednn::Operands::bf16);
}

Tensor autocast_bf16_copy(const Tensor& x) { return cached_rounding(x, kBits); }

DType autocast_operand_dtype(const Device& device) {
  return device.is_cuda() || cpu_bf16_products_native() ? DType::bf16 : DType::f32;
}

Tensor autocast_operand(const Tensor& x) {
  VLMC_CHECK(x.defined(), "autocast: undefined operand");
  return cached_rounding(x, autocast_operand_dtype(x.device()) == DType::bf16 ? kBits : kValues);
}

Tensor autocast_operand_with_column_sums(const Tensor& g, const Tensor& col_sums) {
  VLMC_CHECK(g.defined() && g.dim() == 2 && g.dtype() == DType::f32 && g.is_contiguous() && !g.device().is_cuda(),
             "autocast_operand_with_column_sums: g must be a contiguous 2-D f32 tensor on the CPU, got ",
             g.defined() ? describe(g) : std::string("undefined"));
  const int64_t rows = g.size(0), cols = g.size(1);
  VLMC_CHECK(col_sums.defined() && col_sums.shape() == Shape{cols} && col_sums.dtype() == DType::f32 &&
                 col_sums.is_contiguous() && !col_sums.device().is_cuda(),
             "autocast_operand_with_column_sums: col_sums must be f32 [", cols, "] on the CPU, got ",
             col_sums.defined() ? describe(col_sums) : std::string("undefined"));
  Tensor rounded = Tensor::empty({rows, cols}, autocast_operand_dtype(g.device()), g.device());
  if (rounded.dtype() == DType::bf16) {
    kernels::cpu::round_bf16_with_column_sums(static_cast<uint16_t*>(rounded.data_ptr()), col_sums.data<float>(),
                                              g.data<float>(), rows, cols);
  } else {
    kernels::cpu::round_bf16_with_column_sums(rounded.data<float>(), col_sums.data<float>(), g.data<float>(), rows,
                                              cols);
  }
  return rounded;
}

size_t autocast_cache_size() { return state().cache[kBits].size() + state().cache[kValues].size(); }

}  // namespace vlmc
