// libFuzzer target for LLaVA's training data files (data/llava_dataset.cpp,
// a JSON list or JSONL) and what the loader then makes of each sample with
// the three conversation templates (data/conversation.cpp) and the tiny
// LLaMA tokenizer of tests/golden/hf_models/llava_chat.
//
// Reading must give samples that keep the promises of llava_dataset.h (one
// "<image>" per image, no gpt turn with a tag, no path escaping the folder),
// or throw vlmc::Error; a strict read must throw exactly when a lenient one
// skips a sample. Preprocessing a sample a template accepts must give ids and
// labels of one length, one image id per image. Any other exception, crash
// or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/conversation.h"
#include "data/llava_dataset.h"
#include "data/sentencepiece_tokenizer.h"
#include "tests/fuzz/fuzz_files.h"

namespace {

using namespace vlmc;
using namespace vlmc::data;

constexpr size_t kMaxSamplesPreprocessed = 32;  // keeps one input's time bounded

const SentencePieceTokenizer& tokenizer() {
  static const SentencePieceTokenizer t =
      SentencePieceTokenizer::from_folder(fuzz::source_path("tests/golden/hf_models/llava_chat"));
  return t;
}

void preprocess_all(const LlavaDataset& dataset) {
  static const char* kTemplates[] = {"plain", "vicuna_v1", "llava_llama_2"};
  PreprocessOptions options;
  options.model_max_length = 64;
  for (size_t i = 0; i < dataset.size() && i < kMaxSamplesPreprocessed; ++i) {
    const auto turns = dataset.turns(i);
    const size_t images = dataset.num_images(i);
    for (size_t k = 0; k < images; ++k)
      if (!image_path_problem(dataset.image(i, k)).empty()) std::abort();  // read_llava_json let a bad path in
    for (const char* name : kTemplates) {
      const ConversationTemplate& conv = conversation_template(name);
      if (!template_refusal(conv, turns, images).empty()) continue;
      const PreprocessedSample s = preprocess_conversation(tokenizer(), conv, turns, images, options);
      if (s.input_ids.size() != s.labels.size()) std::abort();
      if (static_cast<int64_t>(s.input_ids.size()) > options.model_max_length) std::abort();
      if (s.truncated != (s.full_length > options.model_max_length)) std::abort();
      if (!s.truncated) {
        size_t image_ids = 0;
        for (int64_t id : s.input_ids) image_ids += id == kImageTokenIndex;
        if (image_ids != images) std::abort();
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tokenizer();  // outside the try: a golden file that fails to load is the harness's own fault
  const std::string path = fuzz::write_scratch("data.json", data, size);
  bool lenient_skipped = false;
  try {
    const LlavaDataset dataset = read_llava_json(path);
    if (dataset.read() != dataset.size() + dataset.bad().size()) std::abort();
    lenient_skipped = !dataset.bad().empty();
    preprocess_all(dataset);
  } catch (const Error&) {
    return 0;  // the file as a whole is unreadable: strict mode would say the same
  }
  LlavaReadOptions strict;
  strict.strict = true;
  try {
    read_llava_json(path, strict);
    if (lenient_skipped) std::abort();  // strict accepted a sample the lenient read refused
  } catch (const Error&) {
    if (!lenient_skipped) std::abort();  // strict refused a file the lenient read took whole
  }
  return 0;
}
