// oneDNN's matmul behind the CPU GEMMs (see kernels/cpu/onednn_matmul.h).
//
// Creating a oneDNN primitive costs 0.1-0.5 ms (it picks an implementation
// and JIT-compiles its kernels), a hundred times a small product. So each
// distinct call shape (dtypes, transposes, sizes, leading dims, strides,
// alpha, beta, thread count) gets its primitive once, kept in a table; a
// training step repeats the same few dozen shapes. Pointers are not part of
// the key: the buffers are bound at execution. Shapes oneDNN answers only with
// its reference implementation are remembered as refused.
//
// Each execution gets its scratchpad from the calling thread (user scratchpad
// mode), so primitives run concurrently from several threads without sharing
// oneDNN's global one. Small products are split here into a panel of rows per
// thread, each a one-thread primitive (split_into_row_panels says when and why).
#include "kernels/cpu/onednn_matmul.h"

#include <cpuid.h>

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if VLMC_WITH_ONEDNN
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <shared_mutex>
#include <unordered_map>
#endif

namespace vlmc::kernels::cpu::onednn {
namespace {

// One call of matmul(), pointers included.
struct Matmul {
  Operands operands;
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const void* a;
  int64_t lda, stride_a;
  const void* b;
  int64_t ldb, stride_b;
  float beta;
  float* c;
  int64_t ldc, stride_c, batch;
  const float* bias;  // [n] added to every row of C, or null
};

// The switch, first set from VLMC_GEMM: "onednn" (the default) or "openblas".
std::atomic<bool>& switched_on() {
  static std::atomic<bool> on = [] {
    const char* env = std::getenv("VLMC_GEMM");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "onednn") == 0) return true;
    if (std::strcmp(env, "openblas") == 0) return false;
    throw std::invalid_argument(std::string("VLMC_GEMM: expected 'onednn' or 'openblas', got '") + env + "'");
  }();
  return on;
}

bool openblas_requested() { return !switched_on().load(std::memory_order_relaxed); }

std::atomic<Bf16Path>& bf16_path() {
  static std::atomic<Bf16Path> path = [] {
    const char* env = std::getenv("VLMC_GEMM_BF16");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "automatic") == 0) return Bf16Path::automatic;
    if (std::strcmp(env, "native") == 0) return Bf16Path::native;
    if (std::strcmp(env, "widened") == 0) return Bf16Path::widened;
    throw std::invalid_argument(std::string("VLMC_GEMM_BF16: expected 'automatic', 'native' or 'widened', got '") +
                                env + "'");
  }();
  return path;
}

}  // namespace

#if VLMC_WITH_ONEDNN
namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// Everything about a call but its pointers, plus the thread count the
// primitive partitions its work for.
using Key = std::array<int64_t, 18>;

// CPUID's vendor string: bf16's default path depends on it (see Bf16Path).
bool is_amd_cpu() {
  static const bool amd = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    return std::strcmp(vendor, "AuthenticAMD") == 0;
  }();
  return amd;
}

Key key_of(const Matmul& c) {
  const bool batched = c.batch > 1;
  return {static_cast<int64_t>(c.operands), c.trans_a, c.trans_b, c.m, c.n, c.k, c.lda,
          batched ? c.stride_a : 0, c.ldb, batched ? c.stride_b : 0, c.ldc, batched ? c.stride_c : 0,
          c.batch, bits_of(c.alpha), bits_of(c.beta), omp_get_max_threads(), omp_in_parallel(), c.bias != nullptr};
}

struct Entry {
  bool usable = false;  // false: refused (no primitive, or only the reference one)
  bool amx = false;     // the implementation runs on AMX tiles
  // automatic's choice for bf16: native where measured faster than widening
  // (Bf16Path's comment in onednn_matmul.h).
  bool native_by_default = false;
  dnnl::matmul primitive;
  memory::desc a, b, c, bias, scratchpad;  // bias: zero (empty) when the call has none
  std::string implementation;
};

// The memory descriptor of one operand: logical dims [batch?, rows, cols] over
// a row-major buffer, or a transposed one (stored [cols, rows]).
memory::desc operand_desc(memory::data_type type, int64_t batch, int64_t batch_stride, int64_t rows,
                          int64_t cols, int64_t ld, bool transposed) {
  const memory::dims row_col = transposed ? memory::dims{1, ld} : memory::dims{ld, 1};
  if (batch == 0) return memory::desc({rows, cols}, type, row_col);
  // A batch dim of 1 (an operand shared by the batch) still needs a stride;
  // its value is never used to step.
  const int64_t step = batch_stride != 0 ? batch_stride : rows * cols;
  return memory::desc({batch, rows, cols}, type, {step, row_col[0], row_col[1]});
}

Entry create(const Matmul& c) {
  Entry e;
  const auto type = c.operands == Operands::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const bool batched = c.batch > 1;
  // 0 = no batch dim; else the operand's batch extent (1 when broadcast).
  const int64_t batch_a = !batched ? 0 : c.stride_a == 0 ? 1 : c.batch;
  const int64_t batch_b = !batched ? 0 : c.stride_b == 0 ? 1 : c.batch;
  e.a = operand_desc(type, batch_a, c.stride_a, c.m, c.k, c.lda, c.trans_a);
  e.b = operand_desc(type, batch_b, c.stride_b, c.k, c.n, c.ldb, c.trans_b);
  e.c = operand_desc(memory::data_type::f32, batched ? c.batch : 0, c.stride_c, c.m, c.n, c.ldc, false);
  // An f32 row [1, n] broadcast over the rows (matmul() takes a bias only without a batch).
  if (c.bias != nullptr) e.bias = memory::desc({1, c.n}, memory::data_type::f32, memory::dims{c.n, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (c.alpha != 1.0f) attr.set_output_scales(0, {c.alpha});
  if (c.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(c.beta);  // C = alpha * A·B + beta * C
    attr.set_post_ops(ops);
  }
  try {
    const dnnl::matmul::desc desc = c.bias != nullptr ? dnnl::matmul::desc(e.a, e.b, e.bias, e.c)
                                                      : dnnl::matmul::desc(e.a, e.b, e.c);
    const dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    e.implementation = pd.impl_info_str();
    if (e.implementation.find("ref") != std::string::npos) return e;  // scalar loops: OpenBLAS is faster
    e.amx = e.implementation.find("amx") != std::string::npos;
    e.native_by_default =
        e.amx || (is_amd_cpu() && e.implementation.find("avx512_core_bf16") != std::string::npos);
    e.scratchpad = pd.scratchpad_desc();
    e.primitive = dnnl::matmul(pd);
    e.usable = true;
  } catch (const dnnl::error&) {
    // unimplemented for this shape or CPU: refused, the caller's path runs
  }
  return e;
}

std::shared_ptr<const Entry> lookup(const Matmul& call) {
  // Bounded: a program that keeps making new shapes (a sweep) starts over
  // rather than growing without end.
  constexpr size_t kMaxEntries = 4096;
  // Readers share the lock: every thread of a row-panel region looks its panel
  // up at the same moment, and with one exclusive mutex one of the two waited
  // in a futex and was woken (a context switch, tens of microseconds in a VM)
  // for most products: 78 % of the stage-0 language model's 15 context switches
  // a step on 2 threads (perf record -e context-switches, AMD EPYC).
  static std::shared_mutex mutex;
  static std::map<Key, std::shared_ptr<const Entry>> table;
  const Key key = key_of(call);
  {
    const std::shared_lock<std::shared_mutex> lock(mutex);
    if (const auto it = table.find(key); it != table.end()) return it->second;
  }
  auto entry = std::make_shared<const Entry>(create(call));  // outside the lock: it may take a while
  const std::unique_lock<std::shared_mutex> lock(mutex);
  if (table.size() >= kMaxEntries) table.clear();
  return table.emplace(key, std::move(entry)).first->second;
}

// This thread's scratchpad, 64-byte aligned, grown to the largest asked for.
void* scratchpad(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (bytes > buffer.size) {
    std::free(buffer.data);
    const size_t rounded = (bytes + 63) / 64 * 64;
    buffer.data = std::aligned_alloc(64, rounded);
    if (buffer.data == nullptr) throw std::bad_alloc();
    buffer.size = rounded;
  }
  return buffer.data;
}

// This thread's buffer for a product whose output is strided (matmul()), grown to
// the largest asked for.
float* dense_output(size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

// c[r, :n] = t[r, :] + beta·c[r, :n] (t dense [m, n]); c is not read at beta 0 (it
// may hold NaNs from an uninitialised buffer).
void add_rows(float* c, int64_t ldc, const float* t, int64_t m, int64_t n, float beta) {
#pragma omp parallel for schedule(static) if (m * n >= (int64_t(1) << 15))
  for (int64_t r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    const float* tr = t + r * n;
    if (beta == 0.0f) {
      std::copy(tr, tr + n, cr);
    } else {
      for (int64_t j = 0; j < n; ++j) cr[j] = tr[j] + beta * cr[j];
    }
  }
}

std::string version() {
  const dnnl_version_t* v = dnnl::version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

// A plain 64 x 64 x 64 product: what this CPU gets for typical calls.
std::shared_ptr<const Entry> probe(Operands operands) {
  return lookup({operands, false, false, 64, 64, 64, 1.0f, nullptr, 64, 0, nullptr, 64, 0, 0.0f, nullptr, 64, 0, 1, nullptr});
}

// Whether this call's path takes the entry's primitive: usable, and for bf16
// under `automatic` only where it is native by default (Bf16Path).
bool takes(const Entry& entry, Operands operands) {
  if (!entry.usable) return false;
  return operands != Operands::bf16 || bf16_path().load() != Bf16Path::automatic || entry.native_by_default;
}

// One entry's memory objects on one thread, kept between its calls and
// pointed at each call's buffers: creating them and the argument map for every
// call (five dnnl::memory objects and a hash map, each allocating) had put
// oneDNN's execute among the main thread's malloc callers in the stage-0
// language model's step, where products of a few microseconds are many.
struct Bound {
  std::weak_ptr<const Entry> entry;  // expired: the table dropped it, and its address may serve a new one
  memory src, weights, dst, pad, bias;
};

Bound& bound(const std::shared_ptr<const Entry>& entry) {
  thread_local std::unordered_map<const Entry*, Bound> kept;
  const auto it = kept.find(entry.get());
  if (it != kept.end() && it->second.entry.lock() == entry) return it->second;
  if (kept.size() >= 4096) kept.clear();  // the table's own bound: the rest have expired
  const dnnl::engine& engine = cpu_engine();
  Bound b;
  b.entry = entry;
  b.src = memory(entry->a, engine, DNNL_MEMORY_NONE);
  b.weights = memory(entry->b, engine, DNNL_MEMORY_NONE);
  b.dst = memory(entry->c, engine, DNNL_MEMORY_NONE);
  b.pad = memory(entry->scratchpad, engine, DNNL_MEMORY_NONE);
  if (!entry->bias.is_zero()) b.bias = memory(entry->bias, engine, DNNL_MEMORY_NONE);
  return kept.insert_or_assign(entry.get(), std::move(b)).first->second;
}

// Runs the entry's primitive on a, b, c and the bias (null when the entry has
// none), with this thread's stream and scratchpad.
void execute(const std::shared_ptr<const Entry>& entry, const void* a, const void* b, float* c, const float* bias) {
  thread_local dnnl::stream stream(cpu_engine());
  Bound& m = bound(entry);
  m.src.set_data_handle(const_cast<void*>(a));
  m.weights.set_data_handle(const_cast<void*>(b));
  m.dst.set_data_handle(c);
  m.pad.set_data_handle(scratchpad(entry->scratchpad.get_size()));
  // The C call with the arguments on the stack: the C++ one copies its map into a vector.
  std::array<dnnl_exec_arg_t, 5> args{{{DNNL_ARG_SRC, m.src.get()},
                                       {DNNL_ARG_WEIGHTS, m.weights.get()},
                                       {DNNL_ARG_DST, m.dst.get()},
                                       {DNNL_ARG_SCRATCHPAD, m.pad.get()},
                                       {DNNL_ARG_BIAS, nullptr}}};
  int count = 4;
  if (bias != nullptr) {
    m.bias.set_data_handle(const_cast<float*>(bias));
    args[4].memory = m.bias.get();
    count = 5;
  }
  dnnl::error::wrap_c_api(dnnl_primitive_execute(entry->primitive.get(), stream.get(), count, args.data()),
                          "could not execute a matmul primitive");
  stream.wait();
}

bool run_panels(const Matmul& call);

// Small products (at most kPanelMaxMacs multiply-adds) with enough rows split
// into one panel of rows per thread, each a one-thread oneDNN product, run
// side by side in one parallel region. oneDNN's own partition of such a
// product left a thread waiting: two threads were 1.75-1.97x one on the
// stage-0 encoder's products (AMD EPYC, M = 1024-1088, N, K = 128-256, best
// of 200), 1.88-2.01x as panels; the encoder's second thread had spent 8 % of
// its samples waiting, mostly while the first finished a product. Every panel
// reads all of op(B), so B must be small enough to stay in a core's cache
// (kPanelMaxBBytes): a [32, 2048] x [2048, 2048] product would otherwise read
// its 16 MiB weight once per thread instead of half of it. A panel is a product
// of its own height, which oneDNN may block differently: dW = dYᵀ·X at 128 x
// 128 x 1088 gives other last bits on 2 threads than on 1 (the same on every
// run with one thread count, which is what docs/training.md promises).
constexpr int64_t kPanelMaxMacs = int64_t(1) << 27;
constexpr int64_t kPanelMaxBBytes = int64_t(1) << 20;
constexpr int64_t kMinPanelRows = 16;

bool split_into_row_panels(const Matmul& call) {
  if (call.batch != 1 || omp_in_parallel()) return false;
  const int64_t threads = omp_get_max_threads();
  if (threads < 2 || call.m < threads * kMinPanelRows) return false;
  const int64_t elem = call.operands == Operands::bf16 ? 2 : 4;
  if (call.m * call.n * call.k > kPanelMaxMacs || call.n * call.k * elem > kPanelMaxBBytes) return false;
  return run_panels(call);
}

bool run_panels(const Matmul& call) {
  std::atomic<bool> refused{false};
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = call.m * t / threads, r1 = call.m * (t + 1) / threads;
    Matmul panel = call;
    panel.m = r1 - r0;
    // Row r of op(A): row r of A, or column r of a transposed (stored [k, m]) A.
    const size_t elem = call.operands == Operands::bf16 ? 2 : 4;
    panel.a = static_cast<const char*>(call.a) + static_cast<size_t>(call.trans_a ? r0 : r0 * call.lda) * elem;
    panel.c = call.c + r0 * call.ldc;
    // At least kMinPanelRows rows each (split_into_row_panels), so no panel is empty.
    const std::shared_ptr<const Entry> entry = lookup(panel);
    if (!takes(*entry, call.operands)) refused = true;
    // Every panel's primitive is known before any writes c: a refused one sends
    // the whole product back to the caller's path with c untouched.
#pragma omp barrier
    if (!refused) execute(entry, panel.a, panel.b, panel.c, panel.bias);
  }
  return !refused;
}

// A bf16 product whose height oneDNN's AMX blocking serves badly
// (amx_head_rows) as two products, the first amx_head_rows(m) rows and the
// rest. Both primitives are known, and taken, before either writes c.
bool run_head_and_tail(const Matmul& call) {
  if (call.operands != Operands::bf16 || call.batch != 1) return false;
  const int64_t head_rows = amx_head_rows(call.m);
  if (head_rows == 0 || !probe(call.operands)->amx) return false;
  Matmul head = call, tail = call;
  head.m = head_rows;
  tail.m = call.m - head_rows;
  // Row r of op(A): row r of A, or column r of a transposed (stored [k, m]) A.
  tail.a = static_cast<const char*>(call.a) +
           static_cast<size_t>(call.trans_a ? head_rows : head_rows * call.lda) * sizeof(uint16_t);
  tail.c = call.c + head_rows * call.ldc;
  const std::shared_ptr<const Entry> head_entry = lookup(head), tail_entry = lookup(tail);
  if (!takes(*head_entry, call.operands) || !takes(*tail_entry, call.operands)) return false;
  execute(head_entry, head.a, head.b, head.c, head.bias);
  execute(tail_entry, tail.a, tail.b, tail.c, tail.bias);
  return true;
}

}  // namespace

bool matmul(Operands operands, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
            const void* a, int64_t lda, int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, float beta,
            float* c, int64_t ldc, int64_t stride_c, int64_t batch, const float* bias) {
  const Matmul call{operands, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                    c, ldc, stride_c, batch, bias};
  // A bias goes with one product at alpha 1 (where oneDNN adds it is then moot).
  if (bias != nullptr && (batch != 1 || alpha != 1.0f)) return false;
  if (openblas_requested()) return false;
  if (call.m < 1 || call.n < 1 || call.k < 1 || call.batch < 1) return false;
  // Both operands shared by the whole batch: oneDNN's dst batch would be 1.
  if (call.batch > 1 && call.stride_a == 0 && call.stride_b == 0) return false;
  if (operands == Operands::bf16 && bf16_path().load() == Bf16Path::widened) return false;
  if (call.batch == 1 && call.ldc != call.n) {
    // A strided output (a block of a wider matrix's columns): oneDNN's fast kernel
    // (brgemm) takes only outputs whose rows are as long as their columns, and
    // fell back to its generic sgemm, 4.3x slower at [32, 2048] x [2048, 512] into
    // rows of 5632 (1.96 against 0.46 ms, AMD EPYC, 2 threads) and never faster.
    // The product goes to a dense buffer, then into c.
    float* dense = dense_output(static_cast<size_t>(m * n));
    if (!matmul(operands, trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, 0.0f, dense, n, 0, 1, bias))
      return false;
    add_rows(c, ldc, dense, m, n, beta);
    return true;
  }
  if (split_into_row_panels(call)) return true;
  if (run_head_and_tail(call)) return true;
  const std::shared_ptr<const Entry> entry = lookup(call);
  if (!takes(*entry, operands)) return false;
  execute(entry, a, b, c, bias);
  return true;
}

bool enabled(Operands operands) {
  if (openblas_requested()) return false;
  const std::shared_ptr<const Entry> entry = probe(operands);
  if (operands == Operands::f32) return entry->usable;
  switch (bf16_path().load()) {
    case Bf16Path::widened:
      return false;
    case Bf16Path::native:
      return entry->usable;
    case Bf16Path::automatic:
      break;
  }
  return entry->usable && entry->native_by_default;
}

std::string describe(Operands operands) {
  if (openblas_requested()) return "OpenBLAS (oneDNN switched off)";
  const std::shared_ptr<const Entry> entry = probe(operands);
  if (!entry->usable) {
    return "OpenBLAS (" + version() + " has " +
           (entry->implementation.empty() ? std::string("no implementation") : entry->implementation) +
           " on this CPU)";
  }
  std::string text = version() + " " + entry->implementation;
  if (operands == Operands::bf16 && !enabled(operands))
    text += bf16_path().load() == Bf16Path::widened ? " (not used: VLMC_GEMM_BF16=widened)"
                                                    : " (not used: no AMX and not an AMD CPU, the operands are widened to f32)";
  return text;
}

#else  // built without oneDNN

bool matmul(Operands, bool, bool, int64_t, int64_t, int64_t, float, const void*, int64_t, int64_t, const void*,
            int64_t, int64_t, float, float*, int64_t, int64_t, int64_t, const float*) {
  return false;
}
bool enabled(Operands) { return false; }
std::string describe(Operands) {
  return openblas_requested() ? "OpenBLAS (oneDNN switched off)" : "OpenBLAS (built without oneDNN)";
}

#endif

void set_enabled(bool on) { switched_on().store(on, std::memory_order_relaxed); }
void set_bf16_path(Bf16Path path) { bf16_path().store(path); }

int64_t amx_head_rows(int64_t m) {
  // Below 128 rows the first part would be a single block of 64.
  if (m < 128) return 0;
  for (int64_t block = 64; block >= 32; --block) {
    if (m % block != 0) continue;  // the largest divisor in [32, 64] is oneDNN's block
    // Up to 48 its search also weighs blocks of 48 rows, which measured well.
    if (block <= 48) return 0;
    int64_t tile = 16;
    while (block % tile != 0) --tile;
    return tile <= 3 ? m / 64 * 64 : 0;
  }
  return 0;  // no such divisor: blocks of 64 and a tail, which measured well
}

}  // namespace vlmc::kernels::cpu::onednn
