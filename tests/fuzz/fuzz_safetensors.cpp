// libFuzzer target for the safetensors parser (built by scripts/fuzz.sh).
//
// Any input must either parse into a self-consistent result or throw
// vlmc::Error; every other exception, crash or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "core/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto parsed = vlmc::io::parse_safetensors(data, size, "<fuzz>");
    // A successful parse promises these invariants to the Tensor layer.
    size_t total = 0;
    for (const auto& [name, t] : parsed.tensors) {
      size_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0) std::abort();
        // The parser checked the true product fits; a wrap here can only happen
        // before a zero dim, which brings the product back to 0.
        numel *= static_cast<size_t>(d);
      }
      if (t.bytes.size() != numel * vlmc::dtype_size(t.dtype)) std::abort();
      total += t.bytes.size();
      if (parsed.find(name) == nullptr) std::abort();
    }
    if (total > size) std::abort();
  } catch (const vlmc::Error&) {
    // Rejecting malformed input with a message is the expected outcome.
  }
  return 0;
}
