// The autocast mode and weight cache (see core/autocast.h). Both are
// thread-local: a guard on one thread never changes another thread's products.
#include "core/autocast.h"

#include <memory>
#include <unordered_map>

#include "core/error.h"
#include "kernels/cpu/onednn_matmul.h"

namespace vlmc {
namespace {

struct CacheEntry {
  std::shared_ptr<TensorImpl> source;  // held so its address cannot be reused as a key
  Tensor copy;
};

struct AutocastState {
  bool bf16 = false;
  int depth = 0;  // active guards; the cache lives while it is > 0
  std::unordered_map<const TensorImpl*, CacheEntry> cache;
};

AutocastState& state() {
  thread_local AutocastState s;
  return s;
}

Tensor rounded(const Tensor& x) { return x.detach().to(DType::bf16).contiguous(); }

}  // namespace

AutocastGuard::AutocastGuard(bool bf16_enabled) : previous_(state().bf16) {
  AutocastState& s = state();
  s.bf16 = bf16_enabled;
  ++s.depth;
}

AutocastGuard::~AutocastGuard() {
  AutocastState& s = state();
  s.bf16 = previous_;
  if (--s.depth == 0) s.cache.clear();
}

bool autocast_bf16() { return state().bf16; }

bool cpu_bf16_products_native() {
  return kernels::cpu::onednn::enabled(kernels::cpu::onednn::Operands::bf16);
}

Tensor autocast_bf16_copy(const Tensor& x) {
  VLMC_CHECK(x.defined(), "autocast: undefined operand");
  if (x.dtype() == DType::bf16) return x.detach();
  VLMC_CHECK(x.dtype() == DType::f32, "autocast: operand dtype ", dtype_name(x.dtype()),
             " cannot be rounded to bf16 (only f32 is)");
  AutocastState& s = state();
  if (s.depth == 0 || !x.is_leaf() || !x.requires_grad()) return rounded(x);
  const auto found = s.cache.find(x.impl_ptr().get());
  if (found != s.cache.end()) return found->second.copy;
  Tensor copy = rounded(x);
  s.cache.emplace(x.impl_ptr().get(), CacheEntry{x.impl_ptr(), copy});
  return copy;
}

size_t autocast_cache_size() { return state().cache.size(); }

}  // namespace vlmc
