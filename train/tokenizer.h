// Word-level tokenizer for the mosaic language (train/mosaic.h). The
// vocabulary is fixed in code, in a fixed order, so ids never change between
// builds or runs: the special tokens, the punctuation ':' ',' '?', then every
// word the caption and question generators can emit for 2x2 mosaics. The 4x4
// task's tokenizer appends its cell names ("a1".."d4") and the numbers
// "five".."sixteen": the main job's ids and vocabulary size stay as they were.
//
// Text is split on spaces; ':' ',' '?' are split off words as tokens of their
// own. "<image>" encodes to kImageTokenId (-200, LLaVA's IMAGE_TOKEN_INDEX): it
// is not in the vocabulary, the model splices visual tokens in its place.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vlmc::train {

inline constexpr int64_t kPadId = 0;
inline constexpr int64_t kBosId = 1;
inline constexpr int64_t kEosId = 2;
inline constexpr int64_t kUnkId = 3;
inline constexpr int64_t kImageTokenId = -200;
inline constexpr const char* kImageToken = "<image>";

struct EncodeOptions {
  bool bos = false;     // prepend <bos>
  bool eos = false;     // append <eos>
  bool strict = false;  // an unknown word throws (naming it) instead of becoming <unk>
};

class Tokenizer {
 public:
  // The words of G x G mosaics (data.mosaic_grid: 2 or 4).
  explicit Tokenizer(int64_t mosaic_grid = 2);

  // The fixed vocabulary of a grid, id = position: "<pad>", "<bos>", "<eos>", "<unk>", ":", ...
  static const std::vector<std::string>& vocabulary(int64_t mosaic_grid);
  const std::vector<std::string>& vocabulary() const { return *vocab_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_->size()); }

  // The id of one token ("<image>" -> -200), or -1 when unknown.
  int64_t id(std::string_view token) const;
  // The token of an id; throws for an id outside the vocabulary.
  const std::string& token(int64_t id) const;

  std::vector<int64_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Joins tokens with spaces, punctuation attached to the word before it, so
  // decode(encode(s)) == s for generated text. skip_special drops <pad>, <bos>,
  // <eos> (never <unk> or <image>).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const;

 private:
  const std::vector<std::string>* vocab_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace vlmc::train
