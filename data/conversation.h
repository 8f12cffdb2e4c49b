// LLaVA's conversation templates and its training preprocessing: the text a conversation
// becomes, its token ids (tokenizer_image_token: IMAGE_TOKEN_INDEX -200 at each "<image>") and
// its labels (-100 everywhere but the assistant's answers and their end-of-turn token), exactly
// as LLaVA-1.5's llava/conversation.py and llava/train/train.py make them (docs/llava_data.md;
// checked against a Python reference of those functions by tests/data/test_conversation.cpp):
//   - plain (conv_llava_plain, stage 1): "<image>" + caption + "\n", the image part masked
//     (preprocess_plain);
//   - vicuna_v1 (conv_vicuna_v1, SeparatorStyle.TWO): the system line, "USER: ... ASSISTANT:
//     ...</s>" rounds; each round's instruction masked from tokenized lengths, with LLaVA's "- 2"
//     and, for non-legacy tokenizers, its "- 1" after the first round (preprocess_v1);
//   - llava_llama_2 (conv_llava_llama_2, SeparatorStyle.LLAMA_2): "[INST] <<SYS>>...<</SYS>>
//     ... [/INST] ... </s><s>[INST] ..." (preprocess_llama_2).
// When the lengths LLaVA adds up do not reach the tokenized length (its "tokenization
// mismatch"), every label is -100, as LLaVA does; here that is a counted event, not a print.
// Samples longer than model_max_length are cut there (LLaVA's collator) and counted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/sentencepiece_tokenizer.h"

namespace vlmc::data {

// LLaVA's IGNORE_INDEX: the label of every position the loss skips.
inline constexpr int64_t kIgnoreIndex = -100;
// LLaVA's DEFAULT_IMAGE_TOKEN: where an image goes in a turn's text.
inline constexpr std::string_view kImageTag = "<image>";

// Who says a turn: LLaVA's data files know only "human" and "gpt".
enum class Speaker : uint8_t { human, gpt };

// One turn of a conversation. value views text owned elsewhere (the dataset's arena).
struct LlavaTurn {
  Speaker from = Speaker::human;
  std::string_view value;
};

enum class SeparatorStyle { plain, two, llama_2 };

// A Conversation of llava/conversation.py, without messages.
struct ConversationTemplate {
  std::string name;
  SeparatorStyle style = SeparatorStyle::two;
  std::string system;
  std::string roles[2];  // user, assistant
  std::string sep;
  std::string sep2;  // "" where LLaVA has None (plain)
};

// "plain", "vicuna_v1" or "llava_llama_2"; anything else throws, listing the three.
const ConversationTemplate& conversation_template(std::string_view name);

// One message of Conversation.messages: role 0 (user) or 1 (assistant), and its text.
struct Message {
  int role = 0;
  std::string text;
};

// Conversation.get_prompt() for the two and llama_2 styles (plain's text is made by
// preprocess_plain, not get_prompt: asking for it throws). An empty text is LLaVA's "message is
// None": "ASSISTANT:" with no separator (two), nothing (llama_2).
std::string get_prompt(const ConversationTemplate& conv, const std::vector<Message>& messages);

// preprocess_multimodal's "<image>" placement, for a sample with num_images images. One image
// (LLaVA-1.5): a turn holding "<image>" loses every tag and gets one back in front,
// "<image>\n" + the rest, stripped as Python's str.strip strips. Several images (LLaVA-1.5 has
// no rule; this is LLaVA-NeXT's): a turn with exactly one tag not at its start has it moved to
// the front the same way; a turn with several keeps them where they are. No image: unchanged.
std::string place_image_tags(std::string_view value, size_t num_images);

// Python's str.strip(): removes the leading and trailing characters str.isspace() accepts
// (ASCII whitespace, U+001C..U+001F, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000) from UTF-8 text.
std::string_view python_strip(std::string_view text);

// Why the template cannot take this conversation as LLaVA's preprocessing would (where LLaVA
// asserts or raises), or "" when it can:
//   plain: exactly two turns, human then gpt, and at least one image;
//   vicuna_v1, llava_llama_2: after a leading gpt turn is dropped (as LLaVA drops it), at least
//   one turn, alternating human / gpt; llava_llama_2 also needs a non-empty first turn.
std::string template_refusal(const ConversationTemplate& conv, const std::vector<LlavaTurn>& turns,
                             size_t num_images);

struct PreprocessOptions {
  // tokenizer.model_max_length: LLaVA-1.5's scripts train with 2048.
  int64_t model_max_length = 2048;
  // The id LLaVA's mismatch rule does not count (total_len = ids != pad_token_id). LLaVA's
  // train() sets pad_token = unk_token for every template it ships but v0, so -1 means the
  // tokenizer's unk id.
  int64_t pad_id = -1;
  // LLaVA's IS_TOKENIZER_GREATER_THAN_0_14 (tokenizers >= 0.14, as with any transformers since
  // 4.34): with a non-legacy tokenizer, rounds after the first are one token shorter.
  bool tokenizers_ge_0_14 = true;
};

struct PreprocessedSample {
  std::vector<int64_t> input_ids;  // [min(full_length, model_max_length)]: -200 at each image
  std::vector<int64_t> labels;     // same length: the id, or -100 where masked
  std::string prompt;              // the text that was tokenized
  int64_t full_length = 0;         // tokens before the cut at model_max_length
  bool truncated = false;          // full_length > model_max_length
  bool mismatch = false;           // LLaVA's tokenization mismatch: every label -100
  // No label left to learn from (a mismatch, or everything learnable cut off).
  bool no_target() const;
};

// The input_ids and labels LLaVA's preprocess (preprocess_multimodal, then preprocess_plain,
// preprocess_v1 or preprocess_llama_2 by the template's style, then the collator's cut) makes of
// one sample with num_images images. Throws vlmc::Error with template_refusal's reason, or when
// the "<image>" tags left after placement are not num_images.
PreprocessedSample preprocess_conversation(const SentencePieceTokenizer& tokenizer, const ConversationTemplate& conv,
                                           const std::vector<LlavaTurn>& turns, size_t num_images,
                                           const PreprocessOptions& options = {});

// What preprocessing did to a stream of samples: the counts a run reports, with the first ids
// of each event named. Not thread-safe: one per worker, merge()d.
struct PreprocessCounters {
  static constexpr size_t kNamed = 5;  // ids kept per event
  int64_t samples = 0;
  int64_t truncated = 0;   // cut at model_max_length
  int64_t mismatched = 0;  // LLaVA's tokenization mismatch: fully masked
  int64_t no_target = 0;   // nothing left to learn from (mismatched ones included)
  std::vector<std::string> first_truncated, first_mismatched, first_no_target;

  void add(std::string_view id, const PreprocessedSample& sample);
  void merge(const PreprocessCounters& other);
  // One line, e.g. "1000 samples; 3 cut at model_max_length (first: a, b, c); 0 tokenization
  // mismatches; 1 with no target left (first: a)".
  std::string summary() const;
};

}  // namespace vlmc::data
