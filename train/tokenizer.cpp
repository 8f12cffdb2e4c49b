#include "train/tokenizer.h"

#include "core/error.h"
#include "train/mosaic.h"

namespace vlmc::train {
namespace {

bool is_punct(char c) { return c == ':' || c == ',' || c == '?'; }

}  // namespace

const std::vector<std::string>& Tokenizer::vocabulary(int64_t mosaic_grid) {
  // Append only: reordering changes every id and invalidates checkpoints.
  static const std::vector<std::string> vocab = {
      "<pad>", "<bos>", "<eos>", "<unk>",
      ":", ",", "?",
      // positions
      "top", "bottom", "left", "right",
      // question words
      "what", "is", "at", "the", "where", "how", "many", "are", "there", "a", "an",
      // answers
      "yes", "no", "zero", "one", "two", "three", "four",
      // classes, singular then plural, in Fashion-MNIST label order
      "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
      "ankle-boot",
      "t-shirts", "trousers", "pullovers", "dresses", "coats", "sandals", "shirts", "sneakers",
      "bags", "ankle-boots"};
  // 4x4 mosaics: the cells' names and counts up to all sixteen items.
  static const std::vector<std::string> vocab4 = [] {
    std::vector<std::string> v = vocab;
    for (const std::string& cell : cell_names(4)) v.push_back(cell);
    for (int64_t n = 5; n <= 16; ++n) v.push_back(number_word(n));
    return v;
  }();
  check_mosaic_grid(mosaic_grid, "tokenizer");
  return mosaic_grid == 2 ? vocab : vocab4;
}

Tokenizer::Tokenizer(int64_t mosaic_grid) : vocab_(&vocabulary(mosaic_grid)) {
  for (size_t i = 0; i < vocab_->size(); ++i) ids_.emplace((*vocab_)[i], static_cast<int64_t>(i));
}

int64_t Tokenizer::id(std::string_view token) const {
  if (token == kImageToken) return kImageTokenId;
  const auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

const std::string& Tokenizer::token(int64_t id) const {
  static const std::string image = kImageToken;
  if (id == kImageTokenId) return image;
  VLMC_CHECK(id >= 0 && id < vocab_size(), "tokenizer: id ", id, " outside the vocabulary of ",
             vocab_size());
  return (*vocab_)[static_cast<size_t>(id)];
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int64_t> out;
  if (options.bos) out.push_back(kBosId);
  auto emit = [&](std::string_view word) {
    const int64_t i = id(word);
    VLMC_CHECK(i != -1 || !options.strict, "tokenizer: unknown word \"", word, "\" in \"", text,
               "\"");
    out.push_back(i == -1 ? kUnkId : i);
  };
  size_t pos = 0;
  while (pos < text.size()) {
    const char c = text[pos];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++pos;
    } else if (is_punct(c)) {
      emit(text.substr(pos, 1));
      ++pos;
    } else {
      size_t end = pos;
      while (end < text.size() && !is_punct(text[end]) && text[end] != ' ' && text[end] != '\t' &&
             text[end] != '\n' && text[end] != '\r')
        ++end;
      emit(text.substr(pos, end - pos));
      pos = end;
    }
  }
  if (options.eos) out.push_back(kEosId);
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string text;
  for (int64_t i : ids) {
    if (skip_special && (i == kPadId || i == kBosId || i == kEosId)) continue;
    const std::string& t = token(i);
    if (!text.empty() && !(t.size() == 1 && is_punct(t[0]))) text += ' ';
    text += t;
  }
  return text;
}

}  // namespace vlmc::train
