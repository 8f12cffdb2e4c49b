// libFuzzer target for the image decoder (data/image.cpp over libjpeg-turbo
// and libpng; built by scripts/fuzz.sh image).
//
// Images come from datasets nobody checks byte by byte. Any input must either
// decode into a self-consistent RGB image or throw vlmc::Error; every other
// exception, crash, leak (the decoders' longjmp error paths) or sanitizer
// report is a bug.
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const vlmc::data::Image image = vlmc::data::decode_image(data, size, "<fuzz>");
    if (image.width <= 0 || image.height <= 0) std::abort();
    if (image.rgb.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) std::abort();
  } catch (const vlmc::Error&) {
    // Refusing a broken file with a message is the expected outcome.
  }
  return 0;
}
