// Files a LLaVA training test needs, made at test time: a CLIP folder and a
// LLaMA folder split out of the tiny LLaVA golden (tests/golden/hf_models/
// llava_chat, with its SentencePiece tokenizer and CLIP processor), PNG and
// JPEG images, and LLaVA-format data (captions.json for stage 1, chats.jsonl
// for stage 2). Header-only: the support library links the core alone.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/image_encode.h"
#include "modules/hf_checkpoint.h"
#include "modules/hf_export.h"

namespace vlmc::test {

namespace llava_files_detail {
namespace fs = std::filesystem;
inline const fs::path kChat = fs::path(VLMC_GOLDEN_DIR) / "hf_models" / "llava_chat";

inline void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace llava_files_detail

// The tower and the language model as users hold them: two Hugging Face folders.
inline void split_models(const std::filesystem::path& root) {
  const nn::PretrainedModel chat = nn::load_pretrained(llava_files_detail::kChat.string());
  nn::PretrainedModel lm;
  lm.dir = chat.dir;  // tokenizer files are copied from there
  lm.config = chat.config;
  lm.config.kind = nn::HfKind::llama;
  // Room for vicuna_v1's system line (rotary positions are computed, not learned).
  lm.config.text.max_position_embeddings = 512;
  lm.llama = chat.llama;
  nn::save_pretrained(lm, (root / "llama").string());
  nn::PretrainedModel tower;
  tower.dir = chat.dir;  // preprocessor_config.json
  tower.config = chat.config;
  tower.config.kind = nn::HfKind::clip_vision;
  tower.vision = chat.vision;
  nn::save_pretrained(tower, (root / "clip").string());
}

// Dark and light images, captioned by what they are; one sample's image is
// missing (skipped at load), one sample has an image but no <image> tag (bad
// in the file). Stage 2's samples ask about them in two turns.
inline void write_data(const std::filesystem::path& root) {
  std::filesystem::create_directories(root / "images" / "sub");
  nlohmann::json captions = nlohmann::json::array(), chats = nlohmann::json::array();
  for (int i = 0; i < 12; ++i) {
    const bool light = i % 2 == 0;
    std::vector<uint8_t> pixels(20 * 16);
    for (size_t p = 0; p < pixels.size(); ++p) pixels[p] = static_cast<uint8_t>((light ? 200 : 30) + (p * 7 + i) % 40);
    const std::string name = i % 3 == 0 ? "sub/img" + std::to_string(i) + ".jpg" : "img" + std::to_string(i) + ".png";
    llava_files_detail::write_bytes(root / "images" / name,
                i % 3 == 0 ? data::encode_grey_jpeg(pixels.data(), 20, 16, 90) : data::encode_grey_png(pixels.data(), 20, 16));
    const std::string caption = light ? "a light picture" : "a dark picture";
    captions.push_back({{"id", "c" + std::to_string(i)}, {"image", name},
                        {"conversations", {{{"from", "human"}, {"value", "<image>\n"}}, {{"from", "gpt"}, {"value", caption}}}}});
    chats.push_back({{"id", i},
                     {"image", name},
                     {"conversations",
                      {{{"from", "human"}, {"value", "What is this?\n<image>"}},
                       {{"from", "gpt"}, {"value", caption}},
                       {{"from", "human"}, {"value", "Light or dark?"}},
                       {{"from", "gpt"}, {"value", light ? "light" : "dark"}}}}});
  }
  captions.push_back({{"id", "missing"}, {"image", "nowhere.png"},
                      {"conversations", {{{"from", "human"}, {"value", "<image>\n"}}, {{"from", "gpt"}, {"value", "x"}}}}});
  captions.push_back({{"id", "untagged"}, {"image", "img1.png"},
                      {"conversations", {{{"from", "human"}, {"value", "hi"}}, {{"from", "gpt"}, {"value", "x"}}}}});
  std::ofstream(root / "captions.json") << captions.dump();
  std::ofstream jsonl(root / "chats.jsonl");
  for (const auto& sample : chats) jsonl << sample.dump() << "\n";
}

}  // namespace vlmc::test
