// LLaVA's templates, tokenization and label masking against tests/golden/conversation/ (a
// Python reference of LLaVA's preprocess_* functions run with transformers' slow LlamaTokenizer,
// written by tests/golden/make_golden_conversation.py), and the pieces on their own.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/conversation.h"
#include "data/llava_dataset.h"

using namespace vlmc::data;
namespace fs = std::filesystem;

namespace {

const fs::path kGolden = fs::path(VLMC_GOLDEN_DIR) / "conversation";
const fs::path kTokenizers = fs::path(VLMC_GOLDEN_DIR) / "tokenizer";

const SentencePieceTokenizer& tokenizer(const std::string& folder) {
  static std::map<std::string, SentencePieceTokenizer> cache;
  auto it = cache.find(folder);
  if (it == cache.end())
    it = cache.emplace(folder, SentencePieceTokenizer::from_folder((kTokenizers / folder).string())).first;
  return it->second;
}

const nlohmann::json& golden() {
  static const nlohmann::json g = [] {
    std::ifstream in(kGolden / "golden.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return g;
}

const LlavaDataset& golden_samples() {
  static const LlavaDataset d = read_llava_json((kGolden / "data.json").string(), {});
  return d;
}

size_t index_of(const LlavaDataset& d, const std::string& id) {
  for (size_t i = 0; i < d.size(); ++i)
    if (d.id(i) == id) return i;
  FAIL("no sample '" << id << "' in data.json");
  return 0;
}

std::vector<int64_t> labels_from_ranges(const std::vector<int64_t>& ids, const nlohmann::json& ranges) {
  std::vector<int64_t> labels(ids.size(), kIgnoreIndex);
  for (const auto& r : ranges)
    for (int64_t k = r[0].get<int64_t>(); k < r[1].get<int64_t>(); ++k) labels[k] = ids[k];
  return labels;
}

std::vector<LlavaTurn> turns(std::initializer_list<std::pair<Speaker, const char*>> list) {
  std::vector<LlavaTurn> out;
  for (const auto& [from, value] : list) out.push_back({from, value});
  return out;
}

constexpr Speaker H = Speaker::human;
constexpr Speaker G = Speaker::gpt;

}  // namespace

TEST_CASE("conversation golden: every case equals LLaVA's preprocessing", "[conversation]") {
  const auto& g = golden();
  REQUIRE(g.at("format") == "vlmc-golden-conversation");
  REQUIRE(g.at("version") == 1);
  const LlavaDataset& data = golden_samples();
  REQUIRE(data.bad().empty());
  REQUIRE(data.size() >= 15);

  std::map<std::string, int> checked;  // "template/folder" -> cases
  int refused = 0, mismatched = 0, truncated = 0, several_images = 0;
  for (const auto& c : g.at("cases")) {
    const std::string tmpl = c.at("template"), folder = c.at("folder"), id = c.at("id");
    CAPTURE(tmpl, folder, id);
    const ConversationTemplate& conv = conversation_template(tmpl);
    const size_t i = index_of(data, id);
    const auto t = data.turns(i);
    const size_t n = data.num_images(i);
    PreprocessOptions options;
    options.model_max_length = c.at("model_max_length");
    if (c.value("refused", false)) {
      CHECK_FALSE(template_refusal(conv, t, n).empty());
      CHECK_THROWS_AS(preprocess_conversation(tokenizer(folder), conv, t, n, options), vlmc::Error);
      ++refused;
      continue;
    }
    CHECK(template_refusal(conv, t, n).empty());
    const PreprocessedSample out = preprocess_conversation(tokenizer(folder), conv, t, n, options);
    CHECK(out.prompt == g.at("prompts").at(tmpl).at(id).get<std::string>());
    const auto ids = c.at("input_ids").get<std::vector<int64_t>>();
    CHECK(out.input_ids == ids);
    CHECK(out.labels == labels_from_ranges(ids, c.at("label_ranges")));
    CHECK(out.full_length == c.at("full_length").get<int64_t>());
    CHECK(out.mismatch == c.at("mismatch").get<bool>());
    CHECK(out.truncated == (out.full_length > options.model_max_length));
    const int64_t image_tokens = std::count(out.input_ids.begin(), out.input_ids.end(), kImageTokenIndex);
    if (!out.truncated) CHECK(image_tokens == static_cast<int64_t>(n));
    ++checked[tmpl + "/" + folder];
    mismatched += out.mismatch;
    truncated += out.truncated;
    several_images += n > 1;
  }
  for (const char* folder : {"legacy", "nonlegacy"}) {
    CAPTURE(folder);
    CHECK(checked[std::string("plain/") + folder] >= 7);
    CHECK(checked[std::string("vicuna_v1/") + folder] >= 15);
    CHECK(checked[std::string("llava_llama_2/") + folder] >= 15);
  }
  CHECK(refused >= 10);
  CHECK(mismatched >= 6);
  CHECK(truncated >= 6);
  CHECK(several_images >= 4);
}

TEST_CASE("conversation: templates are LLaVA's", "[conversation]") {
  const auto& v1 = conversation_template("vicuna_v1");
  CHECK(v1.system ==
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.");
  CHECK(get_prompt(v1, {{0, "Hi"}, {1, "Hello."}, {0, "Bye"}, {1, ""}}) ==
        v1.system + " USER: Hi ASSISTANT: Hello.</s>USER: Bye ASSISTANT:");
  const auto& l2 = conversation_template("llava_llama_2");
  CHECK(get_prompt(l2, {{0, "Hi"}, {1, "Hello."}, {0, "Bye"}}) ==
        "[INST] <<SYS>>\n" + l2.system + "\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]");
  // str.lstrip("<s>") strips characters: a first message starting with 's' loses it too, as in LLaVA
  // (only without a system line can that happen).
  ConversationTemplate bare = l2;
  bare.system.clear();
  CHECK(get_prompt(bare, {{0, "hello"}}) == "[INST] hello [/INST]");
  CHECK_THROWS_WITH(get_prompt(l2, {{1, "Hi"}}), Catch::Contains("first message must be a non-empty user"));
  CHECK_THROWS_WITH(get_prompt(conversation_template("plain"), {{0, "x"}}), Catch::Contains("plain"));
  CHECK_THROWS_WITH(conversation_template("vicuna_v0"), Catch::Contains("known: plain, vicuna_v1, llava_llama_2"));
}

TEST_CASE("conversation: Python's str.strip on UTF-8", "[conversation]") {
  CHECK(python_strip("  a b \n") == "a b");
  CHECK(python_strip("\u00a0\u3000x\u2028\u0085") == "x");
  CHECK(python_strip("\x1c\x1fy\x0b\x0c") == "y");
  CHECK(python_strip("\u200bz") == "\u200bz");  // ZERO WIDTH SPACE is not a space to Python
  CHECK(python_strip("\xe3\x80") == "\xe3\x80");  // a cut sequence is kept
  CHECK(python_strip(" \t ").empty());
  CHECK(python_strip("猫 🐱") == "猫 🐱");
}

TEST_CASE("conversation: <image> placement as preprocess_multimodal", "[conversation]") {
  CHECK(place_image_tags("What is this?\n<image>", 1) == "<image>\nWhat is this?");
  CHECK(place_image_tags("<image>What", 1) == "<image>\nWhat");
  CHECK(place_image_tags("  a <image> b  ", 1) == "<image>\na  b");
  CHECK(place_image_tags("<image>", 1) == "<image>");
  CHECK(place_image_tags("no tag ", 1) == "no tag ");
  CHECK(place_image_tags("<image> x <image>", 2) == "<image> x <image>");  // several: kept in place
  CHECK(place_image_tags("x <image>", 2) == "<image>\nx");
  CHECK(place_image_tags("<image>x ", 2) == "<image>x ");                   // already in front
  CHECK(place_image_tags("x <image> ", 0) == "x <image> ");
}

TEST_CASE("conversation: what each template refuses", "[conversation]") {
  const auto& plain = conversation_template("plain");
  const auto& v1 = conversation_template("vicuna_v1");
  const auto& l2 = conversation_template("llava_llama_2");
  CHECK(template_refusal(plain, turns({{H, "<image>"}, {G, "cap"}}), 1).empty());
  CHECK_THAT(template_refusal(plain, turns({{H, "q"}, {G, "a"}}), 0), Catch::Contains("text-only"));
  CHECK_THAT(template_refusal(plain, turns({{H, "<image>"}, {G, "a"}, {H, "q"}}), 1),
             Catch::Contains("exactly two turns"));
  CHECK_THAT(template_refusal(plain, turns({{G, "a"}, {H, "<image>"}}), 1), Catch::Contains("human then gpt"));
  CHECK(template_refusal(v1, turns({{G, "hi"}, {H, "q"}, {G, "a"}}), 0).empty());
  CHECK(template_refusal(v1, turns({{H, "q"}}), 0).empty());  // LLaVA takes it (and masks it all)
  CHECK_THAT(template_refusal(v1, turns({{G, "a"}}), 0), Catch::Contains("no human turn"));
  CHECK_THAT(template_refusal(v1, turns({{H, "q"}, {H, "q2"}}), 0),
             Catch::Contains("turn 1 is from human but turns must alternate"));
  CHECK_THAT(template_refusal(l2, turns({{H, ""}, {G, "a"}}), 0), Catch::Contains("first human turn is empty"));
  CHECK(template_refusal(v1, turns({{H, ""}, {G, "a"}}), 0).empty());
}

TEST_CASE("conversation: one <image> tag per image", "[conversation]") {
  const auto& tok = tokenizer("legacy");
  const auto& v1 = conversation_template("vicuna_v1");
  CHECK_THROWS_WITH(preprocess_conversation(tok, v1, turns({{H, "q"}, {G, "a"}}), 1),
                    Catch::Contains("0 <image> tags for 1 images"));
  // LLaVA-1.5's rule would collapse two tags in one turn into one: refused, never a silent collapse.
  CHECK_THROWS_WITH(preprocess_conversation(tok, v1, turns({{H, "<image><image>"}, {G, "a"}}), 1),
                    Catch::Contains("2 <image> tags for 1 images"));
  CHECK_THROWS_WITH(preprocess_conversation(tok, v1, turns({{H, "q"}, {G, "a"}}), 0, {0}),
                    Catch::Contains("model_max_length is 0"));
}

TEST_CASE("conversation: plain masks the image, learns caption and newline", "[conversation]") {
  const auto& tok = tokenizer("legacy");
  const auto out =
      preprocess_conversation(tok, conversation_template("plain"), turns({{H, "Describe.\n<image>"}, {G, "a dog"}}), 1);
  CHECK(out.prompt == "<image>a dog\n");
  REQUIRE(out.input_ids.size() >= 4);
  CHECK(out.input_ids[0] == tok.bos_id());
  CHECK(out.input_ids[1] == kImageTokenIndex);
  CHECK(out.labels[0] == kIgnoreIndex);
  CHECK(out.labels[1] == kIgnoreIndex);
  CHECK(std::equal(out.labels.begin() + 2, out.labels.end(), out.input_ids.begin() + 2));
  CHECK_FALSE(out.no_target());
}

TEST_CASE("conversation: the pad id and the tokenizers >= 0.14 switch decide LLaVA's mismatch", "[conversation]") {
  const auto& v1 = conversation_template("vicuna_v1");
  // A literal "<unk>" answer is id 0 = LLaVA's pad (unk): not counted, so the rounds do not add up.
  const auto unk = turns({{H, "Print the unknown token."}, {G, "<unk>"}});
  const auto& legacy = tokenizer("legacy");
  CHECK(preprocess_conversation(legacy, v1, unk, 0).mismatch);
  PreprocessOptions other_pad;
  other_pad.pad_id = legacy.pad_id();  // <pad>, 401: now every id counts
  const auto kept = preprocess_conversation(legacy, v1, unk, 0, other_pad);
  CHECK_FALSE(kept.mismatch);
  CHECK_FALSE(kept.no_target());

  // Non-legacy tokenizers: rounds after the first are one token shorter in the whole text.
  const auto multi = turns({{H, "Say a number."}, {G, "42"}, {H, "Another one, please."}, {G, "3.14"}});
  const auto& nonlegacy = tokenizer("nonlegacy");
  CHECK_FALSE(preprocess_conversation(nonlegacy, v1, multi, 0).mismatch);
  PreprocessOptions old_tokenizers;
  old_tokenizers.tokenizers_ge_0_14 = false;
  const auto off = preprocess_conversation(nonlegacy, v1, multi, 0, old_tokenizers);
  CHECK(off.mismatch);
  CHECK(off.no_target());
  // A legacy tokenizer never takes the adjustment.
  CHECK_FALSE(preprocess_conversation(legacy, v1, multi, 0, old_tokenizers).mismatch);
}

TEST_CASE("conversation: truncation and mismatches are counted and named", "[conversation]") {
  const auto& tok = tokenizer("legacy");
  const auto& v1 = conversation_template("vicuna_v1");
  PreprocessOptions small;
  small.model_max_length = 140;
  PreprocessCounters a, b;
  const auto ok = preprocess_conversation(tok, v1, turns({{H, "Hi"}, {G, "Hello."}}), 0, small);
  CHECK_FALSE(ok.truncated);
  a.add("ok", ok);
  const auto cut =
      preprocess_conversation(tok, v1, turns({{H, "Hi"}, {G, "The quick brown fox jumps over the lazy dog."}}), 0, small);
  CHECK(cut.truncated);
  CHECK(cut.full_length > 140);
  CHECK(cut.input_ids.size() == 140);
  CHECK(cut.labels.size() == 140);
  CHECK_FALSE(cut.no_target());  // the answer's start survives the cut
  a.add("cut", cut);
  const auto bad = preprocess_conversation(tok, v1, turns({{H, "x"}, {G, "<unk>"}}), 0);
  CHECK(bad.mismatch);
  b.add("bad", bad);
  a.merge(b);
  CHECK(a.samples == 3);
  CHECK(a.truncated == 1);
  CHECK(a.mismatched == 1);
  CHECK(a.no_target == 1);
  CHECK(a.first_truncated == std::vector<std::string>{"cut"});
  CHECK(a.summary() ==
        "3 samples; 1 cut at model_max_length (first: cut); 1 tokenization mismatches (fully masked) (first: bad); "
        "1 with no target left (first: bad)");
  for (int k = 0; k < 10; ++k) a.add("more", cut);
  CHECK(a.truncated == 11);
  CHECK(a.first_truncated.size() == PreprocessCounters::kNamed);
}
