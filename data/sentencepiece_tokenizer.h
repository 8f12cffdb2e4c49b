// The LLaMA tokenizer of a Hugging Face folder: SentencePiece's tokenizer.model (through
// libsentencepiece) plus what transformers' slow LlamaTokenizer adds on top of it, so that
// ids equal LlamaTokenizer.from_pretrained(dir, use_fast=False)'s (docs/tokenizer.md):
//   - added tokens (tokenizer_config.json's added_tokens_decoder, or the older
//     added_tokens.json + special_tokens_map.json): matched in the text as whole tokens
//     before SentencePiece sees it, with their lstrip / rstrip / single_word flags;
//   - add_bos_token / add_eos_token;
//   - legacy=True (SentencePiece's own dummy prefix on every piece of text between added
//     tokens, as LLaVA-1.5 checkpoints run) and legacy=False (one "▁" for the whole text,
//     none after an added token);
//   - decode as transformers does: byte-fallback pieces become bytes, special tokens kept
//     or skipped, added tokens joined with spaces.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace vlmc::data {

// LLaVA's IMAGE_TOKEN_INDEX: the id tokenizer_image_token puts where "<image>" was.
inline constexpr int64_t kImageTokenIndex = -200;

// One added token (transformers' AddedToken).
struct AddedToken {
  std::string content;
  bool lstrip = false;       // eats the whitespace on its left
  bool rstrip = false;       // eats the whitespace on its right
  bool single_word = false;  // matches only between spaces
  bool special = false;
};

class SentencePieceTokenizer {
 public:
  // Reads DIR/tokenizer.model and, where present, DIR/tokenizer_config.json,
  // special_tokens_map.json and added_tokens.json. A missing model, a file that is not a
  // SentencePiece model and malformed JSON each throw vlmc::Error naming the file (and key).
  static SentencePieceTokenizer from_folder(const std::string& dir);

  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;
  ~SentencePieceTokenizer();

  // tokenizer.encode(text, add_special_tokens=...): bos / eos per add_bos_token / add_eos_token.
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // tokenizer.tokenize(text): the pieces and added tokens, before they become ids.
  std::vector<std::string> tokenize(std::string_view text) const;
  // tokenizer.decode(ids, skip_special_tokens=...). An id outside the vocabulary throws.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  // An added token's id, else SentencePiece's (its unk id for an unknown piece).
  int64_t token_to_id(std::string_view token) const;
  // The added token's content, else SentencePiece's piece. An id outside the vocabulary throws.
  std::string id_to_piece(int64_t id) const;

  int64_t bos_id() const { return bos_id_; }  // -1 when the folder has none
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t vocab_size() const;     // len(tokenizer): SentencePiece's pieces and the added tokens
  int64_t sp_vocab_size() const;  // tokenizer.vocab_size: SentencePiece's pieces only
  bool legacy() const { return legacy_; }
  bool add_bos_token() const { return add_bos_; }
  bool add_eos_token() const { return add_eos_; }
  const std::map<int64_t, AddedToken>& added_tokens() const { return added_; }
  const std::string& folder() const { return dir_; }

 private:
  SentencePieceTokenizer() = default;

  // transformers' SPECIAL_TOKENS_ATTRIBUTES without additional_special_tokens, in its order.
  enum Attr { kBos, kEos, kUnk, kSep, kPad, kCls, kMask, kNumAttrs };

  void add_missing_special_tokens();
  bool is_special_token(std::string_view token) const;
  std::optional<int64_t> added_id(std::string_view content) const;
  std::vector<std::string> split_on_added(std::string_view text) const;
  std::vector<std::string> tokenize_chunks(std::string_view text) const;
  std::vector<std::string> sp_tokenize(std::string_view text) const;
  std::string sp_decode(const std::vector<std::string>& pieces) const;
  std::string pieces_to_string(std::vector<std::string> pieces) const;

  std::string dir_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::map<int64_t, AddedToken> added_;          // id -> token
  std::map<std::string, int64_t, std::less<>> added_ids_;  // content -> id
  // bos, eos, unk, sep, pad, cls, mask, then additional_special_tokens: transformers'
  // all_special_tokens, in its order, without repeats.
  std::vector<std::string> special_tokens_;
  std::optional<AddedToken> attrs_[kNumAttrs];  // bos_token, eos_token, ...: absent when null
  std::vector<AddedToken> additional_;            // additional_special_tokens
  int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  bool legacy_ = true;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_prefix_space_ = true;
  bool clean_up_spaces_ = false;
  size_t unk_piece_count_ = 0;  // how many pieces SentencePiece makes of the unk token's text
};

// LLaVA's tokenizer_image_token(prompt, tokenizer, image_token_index): the prompt split on the
// literal "<image>", each chunk encoded (with add_special_tokens), one bos kept at the start
// (when the first chunk starts with it), image_token_index between the chunks.
std::vector<int64_t> tokenizer_image_token(const SentencePieceTokenizer& tokenizer, std::string_view prompt,
                                           int64_t image_token_index = kImageTokenIndex,
                                           bool add_special_tokens = true);

}  // namespace vlmc::data
