#include "data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

namespace vlmc::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kUnderline = "\xE2\x96\x81";  // "▁", SentencePiece's space
constexpr const char* kAttrNames[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                      "pad_token", "cls_token", "mask_token"};

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  VLMC_CHECK(in, "tokenizer: cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  VLMC_CHECK(!in.bad(), "tokenizer: cannot read ", path.string());
  return ss.str();
}

// The JSON object in `path`, or null when the file does not exist.
json load_json_object(const fs::path& path) {
  if (!fs::exists(path)) return json();
  json j;
  try {
    j = json::parse(read_bytes(path));
  } catch (const json::exception& e) {
    throw Error(str("tokenizer: ", path.string(), " is not valid JSON: ", e.what()));
  }
  VLMC_CHECK(j.is_object(), "tokenizer: ", path.string(), " must hold a JSON object, not ", j.type_name());
  return j;
}

// A boolean setting of tokenizer_config.json: `missing` when absent; JSON null reads as
// false, as Python's None does where transformers tests the value.
bool bool_setting(const json& cfg, const char* key, bool missing, const fs::path& file) {
  if (!cfg.is_object() || !cfg.contains(key)) return missing;
  const json& v = cfg.at(key);
  if (v.is_null()) return false;
  VLMC_CHECK(v.is_boolean(), "tokenizer: ", file.string(), ": \"", key, "\" must be true, false or null, not ",
             v.dump());
  return v.get<bool>();
}

// An AddedToken from its JSON form: a string, or an object with "content" and the flags.
// `special` is the default of the "special" flag.
AddedToken parse_added_token(const json& v, bool special, const fs::path& file, const std::string& key) {
  AddedToken t;
  t.special = special;
  if (v.is_string()) {
    t.content = v.get<std::string>();
    return t;
  }
  VLMC_CHECK(v.is_object() && v.contains("content") && v.at("content").is_string(), "tokenizer: ",
             file.string(), ": \"", key, "\" must be a string or an object with a string \"content\", not ",
             v.dump());
  t.content = v.at("content").get<std::string>();
  auto flag = [&](const char* name, bool& out) {
    if (!v.contains(name) || v.at(name).is_null()) return;
    VLMC_CHECK(v.at(name).is_boolean(), "tokenizer: ", file.string(), ": \"", key, "\".", name,
               " must be true or false, not ", v.at(name).dump());
    out = v.at(name).get<bool>();
  };
  flag("lstrip", t.lstrip);
  flag("rstrip", t.rstrip);
  flag("single_word", t.single_word);
  flag("special", t.special);
  return t;
}

// The length of the UTF-8 sequence starting with byte c (1 for a stray byte).
size_t utf8_length(unsigned char c) {
  if (c >= 0xF0 && c < 0xF8) return 4;
  if (c >= 0xE0) return c < 0xF0 ? 3 : 1;
  if (c >= 0xC0) return 2;
  return 1;
}

// The code point at s[pos] and its byte length (a stray byte stands for itself).
std::pair<uint32_t, size_t> utf8_at(std::string_view s, size_t pos) {
  const auto c = static_cast<unsigned char>(s[pos]);
  size_t n = utf8_length(c);
  if (pos + n > s.size()) return {c, 1};
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return {c, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, n};
}

// Python's str.isspace(), which str.strip() uses: what transformers strips around an
// added token with lstrip / rstrip.
bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

std::string strip_left(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const auto [cp, n] = utf8_at(s, pos);
    if (!is_python_space(cp)) break;
    pos += n;
  }
  return std::string(s.substr(pos));
}

std::string strip_right(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;  // back to the first byte of the last code point
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) --start;
    const auto [cp, n] = utf8_at(s, start);
    if (start + n != end || !is_python_space(cp)) break;
    end = start;
  }
  return std::string(s.substr(0, end));
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// transformers' clean_up_tokenization: English spaces before punctuation and contractions.
std::string clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},   {" ?", "?"},   {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) s = replace_all(std::move(s), from, to);
  return s;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

SentencePieceTokenizer SentencePieceTokenizer::from_folder(const std::string& dir) {
  const fs::path folder(dir);
  VLMC_CHECK(fs::is_directory(folder), "tokenizer: ", dir, " is not a directory");
  const fs::path model_file = folder / "tokenizer.model";
  VLMC_CHECK(fs::exists(model_file), "tokenizer: ", model_file.string(),
             " not found (a Hugging Face LLaMA tokenizer folder holds the SentencePiece model there)");

  SentencePieceTokenizer t;
  t.dir_ = dir;

  // tokenizer_config.json: LlamaTokenizer's keyword arguments, with its defaults.
  const fs::path config_file = folder / "tokenizer_config.json";
  const json cfg = load_json_object(config_file);
  t.attrs_[kBos] = AddedToken{"<s>"};
  t.attrs_[kEos] = AddedToken{"</s>"};
  t.attrs_[kUnk] = AddedToken{"<unk>"};
  auto read_attrs = [&](const json& j, const fs::path& file, bool dict_is_special) {
    for (int a = 0; a < kNumAttrs; ++a) {
      if (!j.contains(kAttrNames[a])) continue;
      const json& v = j.at(kAttrNames[a]);
      t.attrs_[a].reset();
      if (!v.is_null()) t.attrs_[a] = parse_added_token(v, dict_is_special && v.is_object(), file, kAttrNames[a]);
    }
  };
  if (cfg.is_object()) {
    read_attrs(cfg, config_file, false);
    if (cfg.contains("additional_special_tokens") && !cfg.at("additional_special_tokens").is_null()) {
      const json& list = cfg.at("additional_special_tokens");
      VLMC_CHECK(list.is_array(), "tokenizer: ", config_file.string(),
                 ": \"additional_special_tokens\" must be a list, not ", list.dump());
      for (const json& v : list)
        t.additional_.push_back(parse_added_token(v, true, config_file, "additional_special_tokens"));
    }
    // legacy=None means legacy=True in LlamaTokenizer (with a warning).
    if (cfg.contains("legacy") && !cfg.at("legacy").is_null())
      t.legacy_ = bool_setting(cfg, "legacy", true, config_file);
  }
  t.add_bos_ = bool_setting(cfg, "add_bos_token", true, config_file);
  t.add_eos_ = bool_setting(cfg, "add_eos_token", false, config_file);
  t.add_prefix_space_ = bool_setting(cfg, "add_prefix_space", true, config_file);
  t.clean_up_spaces_ = bool_setting(cfg, "clean_up_tokenization_spaces", false, config_file);

  if (cfg.is_object() && cfg.contains("added_tokens_decoder")) {
    // transformers >= 4.34 writes every added token here; the two older files are then ignored.
    const json& dec = cfg.at("added_tokens_decoder");
    VLMC_CHECK(dec.is_object(), "tokenizer: ", config_file.string(),
               ": \"added_tokens_decoder\" must be an object of id -> token, not ", dec.dump());
    for (const auto& [key, value] : dec.items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      VLMC_CHECK(id >= 0, "tokenizer: ", config_file.string(), ": added_tokens_decoder key \"", key,
                 "\" is not a token id");
      t.added_[id] = parse_added_token(value, false, config_file, "added_tokens_decoder." + key);
    }
  } else {
    // Older folders: special_tokens_map.json overrides the config's special tokens, and
    // added_tokens.json lists the added tokens (special when they are one of those).
    const fs::path map_file = folder / "special_tokens_map.json";
    const json map = load_json_object(map_file);
    if (map.is_object()) {
      read_attrs(map, map_file, true);
      if (map.contains("additional_special_tokens") && map.at("additional_special_tokens").is_array()) {
        for (const json& v : map.at("additional_special_tokens")) {
          AddedToken tok = parse_added_token(v, true, map_file, "additional_special_tokens");
          const bool seen = std::any_of(t.additional_.begin(), t.additional_.end(),
                                        [&](const AddedToken& a) { return a.content == tok.content; });
          if (!seen) t.additional_.push_back(tok);
        }
      }
    }
    const fs::path added_file = folder / "added_tokens.json";
    const json added = load_json_object(added_file);
    if (added.is_object()) {
      std::set<std::string> specials;
      for (const auto& a : t.attrs_)
        if (a) specials.insert(a->content);
      for (const auto& a : t.additional_) specials.insert(a.content);
      for (const auto& [content, id] : added.items()) {
        VLMC_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, "tokenizer: ", added_file.string(), ": \"",
                   content, "\" must map to a token id, not ", id.dump());
        AddedToken tok;
        tok.content = content;
        tok.special = specials.count(content) > 0;
        t.added_[id.get<int64_t>()] = tok;
      }
    }
  }

  // The SentencePiece model. legacy=False loads it with add_dummy_prefix=False, as
  // LlamaTokenizer does by merging a NormalizerSpec into the ModelProto. Protobuf merges a
  // repeated singular message field, so appending `normalizer_spec { add_dummy_prefix: false }`
  // to the serialized model does the same without the protobuf headers: field 3
  // (normalizer_spec), length 2, holding field 3 (add_dummy_prefix) = varint 0.
  std::string model = read_bytes(model_file);
  VLMC_CHECK(!model.empty(), "tokenizer: ", model_file.string(), " is empty, not a SentencePiece model");
  if (!t.legacy_) model += std::string("\x1A\x02\x18\x00", 4);
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = t.sp_->LoadFromSerializedProto(model);
  VLMC_CHECK(status.ok(), "tokenizer: ", model_file.string(), " is not a SentencePiece model (",
             status.ToString(), ")");
  VLMC_CHECK(t.sp_->GetPieceSize() > 0, "tokenizer: ", model_file.string(), " holds no pieces");

  t.add_missing_special_tokens();
  for (const auto& [id, tok] : t.added_) t.added_ids_[tok.content] = id;
  auto id_of = [&](int a) { return t.attrs_[a] ? t.token_to_id(t.attrs_[a]->content) : int64_t{-1}; };
  t.bos_id_ = id_of(kBos);
  t.eos_id_ = id_of(kEos);
  t.unk_id_ = id_of(kUnk);
  t.pad_id_ = id_of(kPad);
  // legacy=False encodes text that starts with a space behind the unk token's text and drops
  // that token's pieces (transformers' str(None) is "None" where there is no unk token).
  std::vector<std::string> pieces;
  const std::string unk_text = t.attrs_[kUnk] ? t.attrs_[kUnk]->content : "None";
  VLMC_CHECK(t.sp_->Encode(unk_text, &pieces).ok(), "tokenizer: cannot encode the unk token ", unk_text);
  t.unk_piece_count_ = pieces.size();
  return t;
}

// PreTrainedTokenizer.__init__: the special tokens that are not added tokens yet become
// added tokens, with SentencePiece's id where the vocabulary has the piece, else the next id.
void SentencePieceTokenizer::add_missing_special_tokens() {
  std::vector<AddedToken> all;  // all_special_tokens_extended: attributes, then additional
  for (const auto& a : attrs_)
    if (a) all.push_back(*a);
  for (const auto& a : additional_) all.push_back(a);
  special_tokens_.clear();
  std::vector<AddedToken> unique;
  for (const auto& tok : all) {
    if (std::find(special_tokens_.begin(), special_tokens_.end(), tok.content) != special_tokens_.end()) continue;
    special_tokens_.push_back(tok.content);
    unique.push_back(tok);
  }
  std::map<std::string, int64_t, std::less<>> known;  // get_vocab(): pieces, then added tokens
  for (int i = 0; i < sp_->GetPieceSize(); ++i) known[sp_->IdToPiece(i)] = i;
  for (const auto& [id, tok] : added_) known[tok.content] = id;
  std::set<std::string> added_contents;
  for (const auto& [id, tok] : added_) added_contents.insert(tok.content);
  const auto next = static_cast<int64_t>(known.size());
  int64_t count = 0;
  for (AddedToken tok : unique) {
    if (tok.content.empty() || added_contents.count(tok.content)) continue;
    tok.special = true;
    const auto it = known.find(tok.content);
    const int64_t id = it != known.end() ? it->second : next + count++;
    known[tok.content] = id;
    added_[id] = tok;
    added_contents.insert(tok.content);
  }
}

bool SentencePieceTokenizer::is_special_token(std::string_view token) const {
  return std::find(special_tokens_.begin(), special_tokens_.end(), token) != special_tokens_.end();
}

std::optional<int64_t> SentencePieceTokenizer::added_id(std::string_view content) const {
  const auto it = added_ids_.find(content);
  if (it == added_ids_.end()) return std::nullopt;
  return it->second;
}

int64_t SentencePieceTokenizer::token_to_id(std::string_view token) const {
  if (const auto id = added_id(token)) return *id;
  return sp_->PieceToId(token);
}

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  if (const auto it = added_.find(id); it != added_.end()) return it->second.content;
  VLMC_CHECK(id >= 0 && id < sp_->GetPieceSize(), "tokenizer: id ", id, " is outside the vocabulary of ",
             dir_, " (", sp_->GetPieceSize(), " SentencePiece pieces and ", added_.size(), " added tokens)");
  return sp_->IdToPiece(static_cast<int>(id));
}

int64_t SentencePieceTokenizer::sp_vocab_size() const { return sp_->GetPieceSize(); }

int64_t SentencePieceTokenizer::vocab_size() const {
  int64_t n = sp_->GetPieceSize();
  for (const auto& [id, tok] : added_) {
    const int piece = sp_->PieceToId(tok.content);
    if (sp_->IdToPiece(piece) != tok.content) ++n;  // not one of SentencePiece's pieces
  }
  return n;
}

// transformers' Trie.split: the text cut around every added token, the leftmost match
// first and the longest at that position.
std::vector<std::string> SentencePieceTokenizer::split_on_added(std::string_view text) const {
  std::vector<std::string> out;
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    size_t best = 0;
    for (const auto& [content, id] : added_ids_)
      if (content.size() > best && text.compare(pos, content.size(), content) == 0) best = content.size();
    if (best == 0) {
      ++pos;
      continue;
    }
    if (pos > start) out.emplace_back(text.substr(start, pos - start));
    out.emplace_back(text.substr(pos, best));
    pos += best;
    start = pos;
  }
  if (start < text.size()) out.emplace_back(text.substr(start));
  return out;
}

// PreTrainedTokenizer.tokenize: split on the added tokens, apply their strip flags to the
// neighbouring text, then SentencePiece on each piece of text.
std::vector<std::string> SentencePieceTokenizer::tokenize_chunks(std::string_view text) const {
  std::vector<std::string> chunks = split_on_added(text);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const auto id = added_id(chunks[i]);
    if (!id) continue;
    const AddedToken& tok = added_.at(*id);
    const std::string left = i > 0 ? chunks[i - 1] : std::string();
    const std::string right = i + 1 < chunks.size() ? chunks[i + 1] : std::string();
    if (tok.rstrip && !right.empty()) chunks[i + 1] = strip_left(right);
    if (tok.lstrip && !left.empty()) chunks[i - 1] = strip_right(left);
    if (tok.single_word && !left.empty() && left.back() != ' ') {
      chunks[i - 1] += chunks[i];
      chunks[i].clear();
    } else if (tok.single_word && !right.empty() && right.front() != ' ') {
      chunks[i + 1] = chunks[i] + chunks[i + 1];
      chunks[i].clear();
    }
  }
  std::vector<std::string> tokens;
  for (const std::string& chunk : chunks) {
    if (chunk.empty()) continue;
    if (added_id(chunk)) {
      tokens.push_back(chunk);
    } else {
      auto pieces = sp_tokenize(chunk);
      tokens.insert(tokens.end(), std::make_move_iterator(pieces.begin()), std::make_move_iterator(pieces.end()));
    }
  }
  return tokens;
}

// LlamaTokenizer._tokenize: SentencePiece on one piece of text. Without the legacy dummy
// prefix, text that starts with a space is encoded behind the unk token's text so that
// SentencePiece keeps that space, and the unk token's pieces are dropped.
std::vector<std::string> SentencePieceTokenizer::sp_tokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  if (legacy_ || !(starts_with(text, kUnderline) || starts_with(text, " "))) {
    VLMC_CHECK(sp_->Encode(text, &pieces).ok(), "tokenizer: SentencePiece failed on a text of ", text.size(), " bytes");
    return pieces;
  }
  const std::string unk_text = attrs_[kUnk] ? attrs_[kUnk]->content : "None";
  VLMC_CHECK(sp_->Encode(unk_text + std::string(text), &pieces).ok(), "tokenizer: SentencePiece failed on a text of ",
             text.size(), " bytes");
  if (pieces.size() >= unk_piece_count_) pieces.erase(pieces.begin(), pieces.begin() + unk_piece_count_);
  return pieces;
}

std::vector<std::string> SentencePieceTokenizer::tokenize(std::string_view text) const {
  if (legacy_ || text.empty()) return tokenize_chunks(text);
  // LlamaTokenizer.tokenize with legacy=False: one "▁" before the whole text; a "▁" alone
  // in front of a special token is dropped.
  std::string prefixed = replace_all(std::string(text), kUnderline, " ");
  if (add_prefix_space_) prefixed = std::string(kUnderline) + prefixed;
  std::vector<std::string> tokens = tokenize_chunks(prefixed);
  if (tokens.size() > 1 && tokens[0] == kUnderline && is_special_token(tokens[1])) tokens.erase(tokens.begin());
  return tokens;
}

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int64_t> ids;
  if (add_special_tokens && add_bos_) {
    VLMC_CHECK(bos_id_ >= 0, "tokenizer: ", dir_, " sets add_bos_token but has no bos_token");
    ids.push_back(bos_id_);
  }
  for (const std::string& token : tokenize(text)) ids.push_back(token_to_id(token));
  if (add_special_tokens && add_eos_) {
    VLMC_CHECK(eos_id_ >= 0, "tokenizer: ", dir_, " sets add_eos_token but has no eos_token");
    ids.push_back(eos_id_);
  }
  return ids;
}

std::string SentencePieceTokenizer::sp_decode(const std::vector<std::string>& pieces) const {
  std::string out;
  VLMC_CHECK(sp_->Decode(pieces, &out).ok(), "tokenizer: SentencePiece cannot decode ", pieces.size(), " pieces");
  return out;
}

// LlamaTokenizer.convert_tokens_to_string: SentencePiece decodes the runs between special
// tokens (bytes pieces become bytes); the special tokens are written as they are.
std::string SentencePieceTokenizer::pieces_to_string(std::vector<std::string> pieces) const {
  if (add_prefix_space_ && starts_with(pieces[0], kUnderline)) pieces[0].erase(0, kUnderline.size());
  std::string out;
  std::vector<std::string> run;
  bool prev_special = false;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (is_special_token(pieces[i])) {
      if (!prev_special && i != 0 && legacy_) out += ' ';
      out += sp_decode(run) + pieces[i];
      run.clear();
      prev_special = true;
    } else {
      if (prev_special && i == 1 && add_prefix_space_ && !starts_with(pieces[i], kUnderline)) out += ' ';
      run.push_back(pieces[i]);
      prev_special = false;
    }
  }
  return out + sp_decode(run);
}

// PreTrainedTokenizer._decode: added tokens that are not special (and special ones after
// SentencePiece's vocabulary among additional_special_tokens) are cut out of the runs that
// SentencePiece decodes and joined to them with single spaces.
std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::set<int64_t> special_ids;
  if (skip_special_tokens)
    for (const std::string& s : special_tokens_) special_ids.insert(token_to_id(s));
  std::set<std::string> apart;  // transformers' legacy_added_tokens
  for (const auto& [id, tok] : added_)
    if (!is_special_token(tok.content)) apart.insert(tok.content);
  for (const auto& a : additional_)
    if (token_to_id(a.content) >= sp_vocab_size()) apart.insert(a.content);

  std::vector<std::string> texts, run;
  for (const int64_t id : ids) {
    if (skip_special_tokens && special_ids.count(id)) continue;
    std::string token = id_to_piece(id);
    if (skip_special_tokens && is_special_token(token)) continue;
    if (apart.count(token)) {
      if (!run.empty()) {
        std::string s = pieces_to_string(std::move(run));
        if (!s.empty()) texts.push_back(std::move(s));
        run.clear();
      }
      texts.push_back(std::move(token));
    } else {
      run.push_back(std::move(token));
    }
  }
  if (!run.empty()) texts.push_back(pieces_to_string(std::move(run)));
  // decode() joins with spaces_between_special_tokens=True whatever the config says.
  std::string text;
  for (size_t i = 0; i < texts.size(); ++i) text += (i ? " " : "") + texts[i];
  return clean_up_spaces_ ? clean_up_tokenization(std::move(text)) : text;
}

std::vector<int64_t> tokenizer_image_token(const SentencePieceTokenizer& tokenizer, std::string_view prompt,
                                           int64_t image_token_index, bool add_special_tokens) {
  constexpr std::string_view kTag = "<image>";
  std::vector<std::vector<int64_t>> chunks;  // prompt.split("<image>"), each encoded
  for (size_t start = 0;;) {
    const size_t at = prompt.find(kTag, start);
    chunks.push_back(tokenizer.encode(prompt.substr(start, at == std::string_view::npos ? at : at - start),
                                      add_special_tokens));
    if (at == std::string_view::npos) break;
    start = at + kTag.size();
  }
  std::vector<int64_t> ids;
  size_t offset = 0;  // each chunk's own bos is dropped when the first one starts with bos
  if (!chunks[0].empty() && chunks[0][0] == tokenizer.bos_id()) {
    offset = 1;
    ids.push_back(chunks[0][0]);
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i > 0) ids.push_back(image_token_index);
    if (chunks[i].size() > offset) ids.insert(ids.end(), chunks[i].begin() + offset, chunks[i].end());
  }
  return ids;
}

}  // namespace vlmc::data
