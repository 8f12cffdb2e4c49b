// libFuzzer target for a LLaMA tokenizer folder
// (data/sentencepiece_tokenizer.cpp over libsentencepiece): tokenizer.model,
// tokenizer_config.json, special_tokens_map.json and added_tokens.json. The
// first byte of the input picks the file it replaces (the other three are
// tests/golden/hf_models/llava_chat's); the rest is that file's content.
//
// Loading must give a tokenizer that encodes any text and decodes and names
// every id it makes, or throw vlmc::Error naming the file; any other
// exception (or an Error from a tokenizer that loaded), crash or sanitizer
// report is a bug.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/sentencepiece_tokenizer.h"
#include "tests/fuzz/fuzz_files.h"

namespace {

using namespace vlmc;

constexpr const char* kFiles[] = {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                  "added_tokens.json"};
constexpr int64_t kMaxIdsDecoded = 512;  // a fuzzed model may declare a huge vocabulary

// The golden folder's files, read once.
const std::vector<std::string>& golden() {
  static const std::vector<std::string> files = [] {
    std::vector<std::string> out;
    for (const char* f : kFiles)
      out.push_back(fuzz::read_whole_file(fuzz::source_path(std::string("tests/golden/hf_models/llava_chat/") + f)));
    return out;
  }();
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t replaced = data[0] % 4;
  for (size_t f = 0; f < 4; ++f) {
    if (f == replaced) {
      fuzz::write_scratch(kFiles[f], data + 1, size - 1);
    } else {
      fuzz::write_scratch(kFiles[f], golden()[f]);
    }
  }
  std::optional<data::SentencePieceTokenizer> loaded;
  try {
    loaded.emplace(data::SentencePieceTokenizer::from_folder(fuzz::scratch_dir()));
  } catch (const Error&) {
    return 0;  // refused, naming the file: the expected outcome for a broken folder
  }
  const data::SentencePieceTokenizer& t = *loaded;
  // A tokenizer that loaded must take any text, and decode and name every id it
  // makes (added tokens may sit above len(tokenizer), as transformers allows):
  // an Error here escapes and is reported as a crash.
  const std::string text = "USER: <image>\nWhat is 12 + 7? \xc3\xbcn\xc3\xaf" "code\t  spaces</s> ASSISTANT:";
  for (const bool special : {true, false}) {
    const std::vector<int64_t> ids = t.encode(text, special);
    for (int64_t id : ids) {
      if (id < 0) std::abort();
      t.id_to_piece(id);
    }
    t.decode(ids, /*skip_special_tokens=*/special);
  }
  for (int64_t id : data::tokenizer_image_token(t, text))
    if (id != data::kImageTokenIndex && id < 0) std::abort();
  t.token_to_id("<image>");
  // Ids it did not make may be refused (a gap below an added token), never crash.
  for (int64_t id = 0; id < t.vocab_size() && id < kMaxIdsDecoded; ++id) {
    try {
      t.id_to_piece(id);
      t.decode({id});
    } catch (const Error&) {
    }
  }
  return 0;
}
