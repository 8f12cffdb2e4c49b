// The Hugging Face LLaMA tokenizer against transformers' slow LlamaTokenizer: the cases of
// tests/golden/tokenizer/golden.json (written by tests/golden/make_golden_tokenizer.py), the
// round trips that follow from them, and the errors of broken folders.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/sentencepiece_tokenizer.h"
#include "tests/support/temp_dir.h"

using vlmc::data::SentencePieceTokenizer;
using vlmc::test::TempDir;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(VLMC_GOLDEN_DIR) / "tokenizer";

const nlohmann::json& golden() {
  static const nlohmann::json g = [] {
    std::ifstream in(kDir / "golden.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return g;
}

const SentencePieceTokenizer& tokenizer(const std::string& folder) {
  static std::map<std::string, SentencePieceTokenizer> cache;
  auto it = cache.find(folder);
  if (it == cache.end())
    it = cache.emplace(folder, SentencePieceTokenizer::from_folder((kDir / folder).string())).first;
  return it->second;
}

std::vector<int64_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

// A copy of a golden folder to break.
void copy_folder(const std::string& folder, const fs::path& to) {
  fs::copy(kDir / folder, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

}  // namespace

TEST_CASE("golden file: format and every folder and kind present", "[tokenizer_sp]") {
  const auto& g = golden();
  REQUIRE(g.at("format") == "vlmc-golden-tokenizer");
  REQUIRE(g.at("version") == 1);
  std::map<std::string, int> texts, decodes;
  for (const auto& c : g.at("cases")) {
    if (c.at("kind") == "text") ++texts[c.at("folder").get<std::string>()];
    if (c.at("kind") == "decode") ++decodes[c.at("folder").get<std::string>()];
  }
  for (const char* folder : {"legacy", "nonlegacy", "oldfiles"}) {
    CAPTURE(folder);
    CHECK(texts[folder] >= 20);
    CHECK(decodes[folder] >= 5);
  }
}

TEST_CASE("sentencepiece tokenizer: vocabulary and special ids equal LlamaTokenizer's", "[tokenizer_sp]") {
  int checked = 0;
  for (const auto& c : golden().at("cases")) {
    if (c.at("kind") != "info") continue;
    const std::string folder = c.at("folder");
    CAPTURE(folder);
    const auto& tok = tokenizer(folder);
    CHECK(tok.legacy() == c.at("legacy").get<bool>());
    CHECK(tok.vocab_size() == c.at("vocab_size").get<int64_t>());
    CHECK(tok.sp_vocab_size() == c.at("sp_vocab_size").get<int64_t>());
    CHECK(tok.bos_id() == c.at("bos_id").get<int64_t>());
    CHECK(tok.eos_id() == c.at("eos_id").get<int64_t>());
    CHECK(tok.pad_id() == c.at("pad_id").get<int64_t>());
    CHECK(tok.token_to_id("<image>") == c.at("image_id").get<int64_t>());
    CHECK(tok.id_to_piece(c.at("image_id").get<int64_t>()) == "<image>");
    ++checked;
  }
  CHECK(checked == 3);
}

TEST_CASE("sentencepiece tokenizer: encode and decode equal LlamaTokenizer's on every golden text",
          "[tokenizer_sp]") {
  int checked = 0;
  for (const auto& c : golden().at("cases")) {
    if (c.at("kind") != "text") continue;
    const std::string folder = c.at("folder"), text = c.at("text");
    CAPTURE(folder, text);
    const auto& tok = tokenizer(folder);
    const auto ids = tok.encode(text);
    const auto ids_plain = tok.encode(text, false);
    CHECK(ids == ids_of(c.at("ids")));
    CHECK(ids_plain == ids_of(c.at("ids_no_special")));
    CHECK(vlmc::data::tokenizer_image_token(tok, text) == ids_of(c.at("image_token_ids")));
    CHECK(tok.decode(ids_of(c.at("ids"))) == c.at("decoded").get<std::string>());
    CHECK(tok.decode(ids_of(c.at("ids")), true) == c.at("decoded_skip_special").get<std::string>());
    CHECK(tok.decode(ids_of(c.at("ids_no_special"))) == c.at("decoded_no_special").get<std::string>());
    ++checked;
  }
  CHECK(checked >= 60);
}

TEST_CASE("sentencepiece tokenizer: decode of hand-made ids (byte fallback, partial UTF-8, added tokens)",
          "[tokenizer_sp]") {
  int checked = 0;
  for (const auto& c : golden().at("cases")) {
    if (c.at("kind") != "decode") continue;
    const std::string folder = c.at("folder");
    const auto ids = ids_of(c.at("ids"));
    CAPTURE(folder, ids);
    const auto& tok = tokenizer(folder);
    CHECK(tok.decode(ids) == c.at("decoded").get<std::string>());
    CHECK(tok.decode(ids, true) == c.at("decoded_skip_special").get<std::string>());
    ++checked;
  }
  CHECK(checked >= 15);
}

TEST_CASE("sentencepiece tokenizer: round trips as transformers has them", "[tokenizer_sp]") {
  const auto& legacy = tokenizer("legacy");
  const auto& modern = tokenizer("nonlegacy");
  // Byte fallback: characters the tiny model never saw come back whole.
  for (const std::string text : {"emoji \xF0\x9F\x98\x80 ok", "CJK \xE4\xBD\xA0\xE5\xA5\xBD", "tab\there"}) {
    CAPTURE(text);
    CHECK(legacy.decode(legacy.encode(text), true) == text);
    CHECK(modern.decode(modern.encode(text), true) == text);
  }
  // "\n" is the byte piece <0x0A>.
  CHECK(legacy.token_to_id("<0x0A>") == 13);
  CHECK(legacy.id_to_piece(13) == "<0x0A>");
  // A leading space: legacy loses it (SentencePiece's dummy prefix eats one "▁" on decode),
  // legacy=False keeps it.
  CHECK(legacy.decode(legacy.encode(" x y"), true) == "x y");
  CHECK(modern.decode(modern.encode(" x y"), true) == " x y");
  // Added tokens are whole tokens: never split by SentencePiece, never made from pieces.
  const auto ids = legacy.encode("a<image>b<pad>", false);
  CHECK(std::count(ids.begin(), ids.end(), legacy.token_to_id("<image>")) == 1);
  CHECK(std::count(ids.begin(), ids.end(), legacy.pad_id()) == 1);
  CHECK(legacy.encode("<image>") == std::vector<int64_t>{legacy.bos_id(), 400});
  // An unknown piece is the unk id, as sp_model.piece_to_id gives it.
  CHECK(legacy.token_to_id("no such piece") == legacy.unk_id());
}

TEST_CASE("sentencepiece tokenizer: tokenizer_image_token as LLaVA's", "[tokenizer_sp]") {
  const auto& tok = tokenizer("legacy");
  const int64_t bos = tok.bos_id();
  const auto a = tok.encode("a", false), b = tok.encode("b", false);
  std::vector<int64_t> want = {bos};
  want.insert(want.end(), a.begin(), a.end());
  want.push_back(-200);
  want.insert(want.end(), b.begin(), b.end());
  CHECK(vlmc::data::tokenizer_image_token(tok, "a<image>b") == want);
  // Another index, two tags in a row, a tag at each end; one bos only.
  CHECK(vlmc::data::tokenizer_image_token(tok, "<image><image>", 7) == std::vector<int64_t>{bos, 7, 7});
  // Without special tokens there is no bos to keep.
  want.erase(want.begin());
  CHECK(vlmc::data::tokenizer_image_token(tok, "a<image>b", -200, false) == want);
  // oldfiles adds eos to every chunk (add_eos_token), as LLaVA's function then does.
  const auto& old = tokenizer("oldfiles");
  const auto ids = vlmc::data::tokenizer_image_token(old, "a<image>b");
  CHECK(std::count(ids.begin(), ids.end(), old.eos_id()) == 2);
}

TEST_CASE("sentencepiece tokenizer: ids outside the vocabulary are errors", "[tokenizer_sp]") {
  const auto& tok = tokenizer("legacy");
  CHECK_THROWS_WITH(tok.decode({1, 402}), Catch::Contains("id 402 is outside the vocabulary"));
  CHECK_THROWS_WITH(tok.decode({-200}), Catch::Contains("id -200"));
  CHECK_THROWS_AS(tok.id_to_piece(100000), vlmc::Error);
}

TEST_CASE("sentencepiece tokenizer: broken folders name the file", "[tokenizer_sp]") {
  TempDir tmp("tokenizer_sp");
  const fs::path dir = tmp.path / "tok";

  SECTION("no folder") {
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()), Catch::Contains("is not a directory"));
  }
  SECTION("no tokenizer.model") {
    copy_folder("legacy", dir);
    fs::remove(dir / "tokenizer.model");
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains((dir / "tokenizer.model").string()) && Catch::Contains("not found"));
  }
  SECTION("a tokenizer.model that is not a SentencePiece model") {
    copy_folder("legacy", dir);
    std::ofstream(dir / "tokenizer.model", std::ios::binary) << "this is not a protobuf \xFF\xFF\xFF\xFF";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("tokenizer.model is not a SentencePiece model"));
  }
  SECTION("a truncated tokenizer.model") {
    copy_folder("nonlegacy", dir);
    const auto size = fs::file_size(dir / "tokenizer.model");
    fs::resize_file(dir / "tokenizer.model", size / 2);
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()), Catch::Contains("tokenizer.model"));
  }
  SECTION("an empty tokenizer.model") {
    copy_folder("legacy", dir);
    std::ofstream(dir / "tokenizer.model", std::ios::binary | std::ios::trunc);
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()), Catch::Contains("tokenizer.model is empty"));
  }
  SECTION("tokenizer_config.json that is not JSON") {
    copy_folder("legacy", dir);
    std::ofstream(dir / "tokenizer_config.json") << "{\"legacy\": true,";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("tokenizer_config.json is not valid JSON"));
  }
  SECTION("a setting of the wrong type") {
    copy_folder("legacy", dir);
    std::ofstream(dir / "tokenizer_config.json") << R"({"legacy": "yes"})";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("tokenizer_config.json") && Catch::Contains("\"legacy\""));
  }
  SECTION("an added_tokens_decoder key that is not an id") {
    copy_folder("legacy", dir);
    std::ofstream(dir / "tokenizer_config.json") << R"({"added_tokens_decoder": {"x1": {"content": "<a>"}}})";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("tokenizer_config.json") && Catch::Contains("\"x1\""));
  }
  SECTION("added_tokens.json that maps a token to no id") {
    copy_folder("oldfiles", dir);
    std::ofstream(dir / "added_tokens.json") << R"({"<image>": "400"})";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("added_tokens.json") && Catch::Contains("<image>"));
  }
  SECTION("special_tokens_map.json that is a list") {
    copy_folder("oldfiles", dir);
    std::ofstream(dir / "special_tokens_map.json") << "[]";
    CHECK_THROWS_WITH(SentencePieceTokenizer::from_folder(dir.string()),
                      Catch::Contains("special_tokens_map.json must hold a JSON object"));
  }
}

TEST_CASE("sentencepiece tokenizer: a folder with tokenizer.model alone is LlamaTokenizer's defaults",
          "[tokenizer_sp]") {
  TempDir tmp("tokenizer_sp");
  fs::copy_file(kDir / "legacy" / "tokenizer.model", tmp.path / "tokenizer.model");
  const auto tok = SentencePieceTokenizer::from_folder(tmp.path.string());
  CHECK(tok.legacy());
  CHECK(tok.add_bos_token());
  CHECK_FALSE(tok.add_eos_token());
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.pad_id() == -1);
  CHECK(tok.vocab_size() == tok.sp_vocab_size());
  // Without <image> as an added token the tag is ordinary text; ids otherwise as the legacy folder's.
  const auto& full = tokenizer("legacy");
  CHECK(tok.encode("Hello world\n12") == full.encode("Hello world\n12"));
  CHECK(tok.encode("<image>").size() > 2);
}
