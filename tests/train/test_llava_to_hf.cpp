// An original-layout LLaVA converted to transformers' LlavaForConditionalGeneration
// (train/llava_to_hf.h) computes the same logits, with "<image>" in its vocabulary:
// the tokenizer's own token, or a new one past a vocabulary that grows to a
// multiple of 64.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "core/random.h"
#include "data/sentencepiece_tokenizer.h"
#include "modules/hf_checkpoint.h"
#include "modules/hf_export.h"
#include "tests/support/check.h"
#include "tests/support/temp_dir.h"
#include "train/llava_to_hf.h"

using namespace vlmc;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {

const fs::path kChat = fs::path(VLMC_GOLDEN_DIR) / "hf_models" / "llava_chat";

// llava_chat as LLaVA's repository would hold it: the original layout, its
// tower in a folder of its own, the tokenizer files in `tokenizer_dir`.
nn::PretrainedModel original_of(const nn::PretrainedModel& chat, const fs::path& tower_dir,
                                const fs::path& tokenizer_dir) {
  nn::PretrainedModel tower;
  tower.dir = chat.dir;
  tower.config = chat.config;
  tower.config.kind = nn::HfKind::clip_vision;
  tower.vision = chat.vision;
  nn::save_pretrained(tower, tower_dir.string());
  nn::PretrainedModel m = chat;
  m.dir = tokenizer_dir.string();
  m.config.kind = nn::HfKind::llava_original;
  m.config.llava.image_token_index = data::kImageTokenIndex;
  m.config.llava.vision_tower = tower_dir.string();
  return m;
}

// Logits of one prompt with one image: `image_id` where the image goes.
Tensor logits_of(nn::LlavaModel& llava, int64_t image_id, const Tensor& pixels) {
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 5, image_id, 9, 17, 3}, {1, 6});
  NoGradGuard no_grad;
  llava.eval();
  return llava.forward(ids, pixels).logits;  // [1, 6 - 1 + visual tokens, V]
}

}  // namespace

TEST_CASE("llava to hf: the converted model gives the original's logits", "[export][llava]") {
  TempDir dir("llava_to_hf");
  const nn::PretrainedModel chat = nn::load_pretrained(kChat.string());
  Generator gen(5);
  const Tensor pixels = Tensor::randn({1, 3, 12, 12}, gen);

  SECTION("the tokenizer has <image>: its id, no new rows") {
    nn::PretrainedModel orig = original_of(chat, dir.path / "clip", kChat);
    // (The in-memory model is llava_chat's own, its placeholder id 400.)
    const Tensor expected = logits_of(*orig.llava, orig.llava->config().splice.image_token_id, pixels);
    const int64_t id = train::save_as_transformers_llava(orig, (dir.path / "clip").string(), (dir.path / "hf").string());
    CHECK(id == 400);
    const nn::PretrainedModel back = nn::load_pretrained((dir.path / "hf").string());
    CHECK(back.config.kind == nn::HfKind::llava);
    CHECK(back.config.llava.image_token_index == 400);
    CHECK(back.config.text.vocab_size == 402);
    CHECK_REL(logits_of(*back.llava, 400, pixels), expected, 1e-6);
    CHECK(fs::is_regular_file(dir.path / "hf" / "processor_config.json"));
    CHECK(fs::is_regular_file(dir.path / "hf" / "preprocessor_config.json"));
  }

  SECTION("the tokenizer fills the vocabulary without <image>: a new token, rows grown to 448") {
    const fs::path tok = dir.path / "tokenizer";
    fs::create_directories(tok);
    fs::copy_file(kChat / "tokenizer.model", tok / "tokenizer.model");
    std::ofstream(tok / "tokenizer_config.json") << R"({"add_bos_token": true, "add_eos_token": false, "legacy": true,
      "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"})";
    std::ofstream(tok / "added_tokens.json") << R"({"<pad>": 400, "<x>": 401})";
    nn::PretrainedModel orig = original_of(chat, dir.path / "clip", tok);
    // (The in-memory model is llava_chat's own, its placeholder id 400.)
    const Tensor expected = logits_of(*orig.llava, orig.llava->config().splice.image_token_id, pixels);
    const int64_t id = train::save_as_transformers_llava(orig, (dir.path / "clip").string(), (dir.path / "hf").string());
    CHECK(id == 402);
    const nn::PretrainedModel back = nn::load_pretrained((dir.path / "hf").string());
    CHECK(back.config.llava.image_token_index == 402);
    CHECK(back.config.text.vocab_size == 448);
    const Tensor got = logits_of(*back.llava, 402, pixels);  // [1, L, 448]
    CHECK_REL(got.narrow(2, 0, 402).contiguous(), expected, 1e-6);
    // The tokenizer now knows <image> as that id.
    const auto tokenizer = data::SentencePieceTokenizer::from_folder((dir.path / "hf").string());
    CHECK(tokenizer.token_to_id("<image>") == 402);
    bool has_image = false;
    for (const int64_t t : tokenizer.encode("look: <image>\n", false)) has_image = has_image || t == 402;
    CHECK(has_image);
  }

  SECTION("a model that is not original-layout is refused, and nothing is written") {
    CHECK_THROWS_WITH(train::save_as_transformers_llava(chat, kChat.string(), (dir.path / "hf").string()),
                      Catch::Contains("not an original-layout LLaVA"));
    CHECK_FALSE(fs::exists(dir.path / "hf"));
  }
}
