// libFuzzer target for the JSON configs of a Hugging Face folder: config.json
// (modules/hf_config.cpp: LLaMA, CLIP, LLaVA in transformers' and the
// original layout) and preprocessor_config.json
// (data/clip_image_processor.cpp). The input is given to both readers.
//
// Each must return a config or throw vlmc::Error naming the file; any other
// exception (nlohmann's type errors included), crash or sanitizer report is
// a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/clip_image_processor.h"
#include "modules/hf_config.h"
#include "tests/fuzz/fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlmc::fuzz::write_scratch("config.json", data, size);
  try {
    const vlmc::nn::HfModelConfig config = vlmc::nn::read_hf_config(vlmc::fuzz::scratch_dir());
    (void)config;
  } catch (const vlmc::Error&) {
  }
  try {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto processor = vlmc::data::CLIPImageProcessorConfig::from_json_text(text, "preprocessor_config.json");
    (void)processor;
  } catch (const vlmc::Error&) {
  }
  return 0;
}
