// LLaVA's templates and training preprocessing (see conversation.h and docs/llava_data.md).
// Every step follows one line of LLaVA's Python; where Python semantics matter (str.split,
// str.strip, str.lstrip with a character set, slices past the end) they are spelled out here.
#include "data/conversation.h"

#include <algorithm>
#include <array>

#include "core/error.h"

namespace vlmc::data {

namespace {

// Python's str.split(sep) for a non-empty sep: every piece, empty ones included.
std::vector<std::string_view> split_all(std::string_view text, std::string_view sep) {
  std::vector<std::string_view> pieces;
  for (size_t start = 0;;) {
    const size_t at = text.find(sep, start);
    if (at == std::string_view::npos) {
      pieces.push_back(text.substr(start));
      return pieces;
    }
    pieces.push_back(text.substr(start, at - start));
    start = at + sep.size();
  }
}

size_t count_tags(std::string_view text) {
  size_t n = 0;
  for (size_t at = text.find(kImageTag); at != std::string_view::npos; at = text.find(kImageTag, at + kImageTag.size()))
    ++n;
  return n;
}

std::string remove_tags(std::string_view text) {
  std::string out;
  for (const std::string_view piece : split_all(text, kImageTag)) out += piece;
  return out;
}

bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point starting at text[at] and its length in bytes; a malformed sequence reads as
// one byte that is not a space.
std::pair<uint32_t, size_t> decode_at(std::string_view text, size_t at) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[at + k]); };
  const unsigned char c = b(0);
  const size_t left = text.size() - at;
  const auto cont = [&](size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c < 0x80) return {c, 1};
  if ((c & 0xE0) == 0xC0 && cont(1)) return {((c & 0x1Fu) << 6) | (b(1) & 0x3Fu), 2};
  if ((c & 0xF0) == 0xE0 && cont(1) && cont(2)) return {((c & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu), 3};
  if ((c & 0xF8) == 0xF0 && cont(1) && cont(2) && cont(3))
    return {((c & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu), 4};
  return {0xFFFFFFFFu, 1};
}

// The start of the code point ending just before `end`.
size_t previous_start(std::string_view text, size_t end) {
  size_t at = end - 1;
  for (size_t k = 0; k < 3 && at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80; ++k) --at;
  return at;
}

std::string with_tag_in_front(std::string_view value) {
  const std::string rest(python_strip(remove_tags(value)));
  return std::string(python_strip(std::string(kImageTag) + "\n" + rest));
}

// The token counts LLaVA's masking adds up: tokenizer_image_token(text) lengths.
int64_t token_count(const SentencePieceTokenizer& tokenizer, std::string_view text) {
  return static_cast<int64_t>(tokenizer_image_token(tokenizer, text).size());
}

// target[begin:end] = IGNORE_INDEX with Python's clamping of non-negative bounds.
void mask(std::vector<int64_t>& labels, int64_t begin, int64_t end) {
  const int64_t n = static_cast<int64_t>(labels.size());
  begin = std::clamp<int64_t>(begin, 0, n);
  end = std::clamp<int64_t>(end, begin, n);
  std::fill(labels.begin() + begin, labels.begin() + end, kIgnoreIndex);
}

// preprocess_plain: the images' tags, the caption, sep; the tags' tokens masked.
PreprocessedSample preprocess_plain(const SentencePieceTokenizer& tokenizer, const ConversationTemplate& conv,
                                    const std::vector<LlavaTurn>& turns, size_t num_images) {
  std::string head;
  for (size_t k = 0; k < num_images; ++k) head += kImageTag;
  PreprocessedSample out;
  out.prompt = head + std::string(turns[1].value) + conv.sep;
  out.input_ids = tokenizer_image_token(tokenizer, out.prompt);
  out.labels = out.input_ids;
  mask(out.labels, 0, token_count(tokenizer, head));
  return out;
}

// preprocess_v1 (style two) and preprocess_llama_2: rounds split on sep2, each round's
// instruction masked, then LLaVA's check that the rounds add up to the tokenized length.
PreprocessedSample preprocess_rounds(const SentencePieceTokenizer& tokenizer, const ConversationTemplate& conv,
                                     const std::vector<LlavaTurn>& turns, size_t num_images,
                                     const PreprocessOptions& options) {
  // A conversation opened by gpt loses that turn (template_refusal checked the alternation).
  const size_t first = turns[0].from == Speaker::gpt ? 1 : 0;
  std::vector<Message> messages;
  for (size_t j = first; j < turns.size(); ++j)
    messages.push_back({turns[j].from == Speaker::human ? 0 : 1, std::string(turns[j].value)});

  PreprocessedSample out;
  out.prompt = get_prompt(conv, messages);
  out.input_ids = tokenizer_image_token(tokenizer, out.prompt);
  out.labels = out.input_ids;

  // total_len: LLaVA counts the non-pad ids of what it tokenized, which for a text-only sample
  // is already cut at model_max_length (tokenizer(..., truncation=True)); an image sample's
  // tokenizer_image_token ids are cut only later, by the collator.
  const int64_t pad = options.pad_id >= 0 ? options.pad_id : tokenizer.unk_id();
  const int64_t n = static_cast<int64_t>(out.input_ids.size());
  const int64_t counted = num_images > 0 ? n : std::min(n, options.model_max_length);
  const int64_t total_len = std::count_if(out.input_ids.begin(), out.input_ids.begin() + counted,
                                          [&](int64_t id) { return id != pad; });

  const std::string sep = conv.style == SeparatorStyle::two ? conv.sep + conv.roles[1] + ": " : "[/INST] ";
  int64_t cur_len = 1;
  mask(out.labels, 0, cur_len);
  const std::vector<std::string_view> rounds = split_all(out.prompt, conv.sep2);
  for (size_t i = 0; i < rounds.size(); ++i) {
    if (rounds[i].empty()) break;
    const std::vector<std::string_view> parts = split_all(rounds[i], sep);
    if (parts.size() != 2) break;
    int64_t round_len = token_count(tokenizer, rounds[i]);
    int64_t instruction_len = token_count(tokenizer, std::string(parts[0]) + sep) - 2;
    // preprocess_v1 only: a non-legacy tokenizer puts no "▁" before the "USER" that follows
    // "</s>" in the whole conversation, but does when a round is tokenized alone.
    if (conv.style == SeparatorStyle::two && i != 0 && !tokenizer.legacy() && options.tokenizers_ge_0_14) {
      round_len -= 1;
      instruction_len -= 1;
    }
    mask(out.labels, cur_len, cur_len + instruction_len);
    cur_len += round_len;
  }
  mask(out.labels, cur_len, n);
  if (cur_len < options.model_max_length && cur_len != total_len) {
    std::fill(out.labels.begin(), out.labels.end(), kIgnoreIndex);
    out.mismatch = true;
  }
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void keep_first(std::vector<std::string>& names, std::string_view id) {
  if (names.size() < PreprocessCounters::kNamed) names.emplace_back(id);
}

}  // namespace

const ConversationTemplate& conversation_template(std::string_view name) {
  static const std::array<ConversationTemplate, 3> templates = [] {
    std::array<ConversationTemplate, 3> t;
    t[0].name = "plain";
    t[0].style = SeparatorStyle::plain;
    t[0].sep = "\n";
    t[1].name = "vicuna_v1";
    t[1].style = SeparatorStyle::two;
    t[1].system =
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.";
    t[1].roles[0] = "USER";
    t[1].roles[1] = "ASSISTANT";
    t[1].sep = " ";
    t[1].sep2 = "</s>";
    t[2].name = "llava_llama_2";
    t[2].style = SeparatorStyle::llama_2;
    t[2].system =
        "You are a helpful language and vision assistant. "
        "You are able to understand the visual content that the user provides, "
        "and assist the user with a variety of tasks using natural language.";
    t[2].roles[0] = "USER";
    t[2].roles[1] = "ASSISTANT";
    t[2].sep = "<s>";
    t[2].sep2 = "</s>";
    return t;
  }();
  for (const auto& t : templates)
    if (t.name == name) return t;
  throw Error(str("conversation template '", name, "' is unknown (known: plain, vicuna_v1, llava_llama_2)"));
}

std::string get_prompt(const ConversationTemplate& conv, const std::vector<Message>& messages) {
  std::string out;
  switch (conv.style) {
    case SeparatorStyle::two: {
      out = conv.system + conv.sep;
      for (size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        VLMC_CHECK(m.role == 0 || m.role == 1, "get_prompt: message ", i, " has role ", m.role, " (0 or 1)");
        if (m.text.empty())
          out += conv.roles[m.role] + ":";
        else
          out += conv.roles[m.role] + ": " + m.text + (i % 2 == 0 ? conv.sep : conv.sep2);
      }
      return out;
    }
    case SeparatorStyle::llama_2: {
      for (size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        if (i == 0)
          VLMC_CHECK(!m.text.empty() && m.role == 0, "get_prompt (", conv.name,
                     "): the first message must be a non-empty user message");
        if (m.text.empty()) continue;
        std::string text = m.text;
        if (i == 0 && !conv.system.empty()) text = "<<SYS>>\n" + conv.system + "\n<</SYS>>\n\n" + text;
        if (i % 2 == 0)
          out += conv.sep + "[INST] " + text + " [/INST]";
        else
          out += " " + text + " " + conv.sep2;
      }
      // ret.lstrip(self.sep): Python strips any of sep's characters, not the string.
      const size_t start = out.find_first_not_of(conv.sep);
      return start == std::string::npos ? std::string() : out.substr(start);
    }
    case SeparatorStyle::plain:
      break;
  }
  throw Error(str("get_prompt: template '", conv.name, "' (plain) has no prompt; preprocess_plain makes its text"));
}

std::string_view python_strip(std::string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end) {
    const auto [c, len] = decode_at(text, begin);
    if (!is_python_space(c)) break;
    begin += len;
  }
  while (end > begin) {
    const size_t at = previous_start(text, end);
    if (at < begin || !is_python_space(decode_at(text, at).first) || at + decode_at(text, at).second != end) break;
    end = at;
  }
  return text.substr(begin, end - begin);
}

std::string place_image_tags(std::string_view value, size_t num_images) {
  const size_t tags = count_tags(value);
  if (num_images == 1 && tags > 0) return with_tag_in_front(value);
  if (num_images > 1 && tags == 1 && value.substr(0, kImageTag.size()) != kImageTag) return with_tag_in_front(value);
  return std::string(value);
}

std::string template_refusal(const ConversationTemplate& conv, const std::vector<LlavaTurn>& turns,
                             size_t num_images) {
  if (conv.style == SeparatorStyle::plain) {
    if (turns.size() != 2 || turns[0].from != Speaker::human || turns[1].from != Speaker::gpt)
      return str("template plain takes exactly two turns, human then gpt (this one has ", turns.size(), ")");
    if (num_images == 0) return "template plain takes only samples with an image (this one is text-only)";
    return "";
  }
  const size_t first = !turns.empty() && turns[0].from == Speaker::gpt ? 1 : 0;
  if (turns.size() <= first) return str("template ", conv.name, ": no human turn (a leading gpt turn is dropped)");
  for (size_t j = first; j < turns.size(); ++j) {
    const Speaker expected = (j - first) % 2 == 0 ? Speaker::human : Speaker::gpt;
    if (turns[j].from != expected)
      return str("template ", conv.name, ": turn ", j, " is from ", turns[j].from == Speaker::human ? "human" : "gpt",
                 " but turns must alternate human, gpt");
  }
  if (conv.style == SeparatorStyle::llama_2 && turns[first].value.empty())
    return str("template ", conv.name, ": the first human turn is empty");
  return "";
}

bool PreprocessedSample::no_target() const {
  return std::all_of(labels.begin(), labels.end(), [](int64_t l) { return l == kIgnoreIndex; });
}

PreprocessedSample preprocess_conversation(const SentencePieceTokenizer& tokenizer, const ConversationTemplate& conv,
                                           const std::vector<LlavaTurn>& turns, size_t num_images,
                                           const PreprocessOptions& options) {
  VLMC_CHECK(options.model_max_length > 0, "preprocess: model_max_length is ", options.model_max_length,
             " (must be positive)");
  const std::string refusal = template_refusal(conv, turns, num_images);
  VLMC_CHECK(refusal.empty(), "preprocess: ", refusal);

  // One tag per image, before placement: LLaVA-1.5's placement would silently make one of two
  // tags in a turn (the dataset refuses such samples; this refuses them here too).
  size_t tags = 0;
  for (const LlavaTurn& turn : turns) tags += count_tags(turn.value);
  VLMC_CHECK(tags == num_images, "preprocess: the conversation has ", tags, " <image> tags for ", num_images,
             " images");
  // preprocess_multimodal runs on image samples only.
  std::vector<std::string> values;
  values.reserve(turns.size());
  for (const LlavaTurn& turn : turns)
    values.push_back(num_images > 0 ? place_image_tags(turn.value, num_images) : std::string(turn.value));
  std::vector<LlavaTurn> placed = turns;
  for (size_t j = 0; j < turns.size(); ++j) placed[j].value = values[j];

  PreprocessedSample out = conv.style == SeparatorStyle::plain
                               ? preprocess_plain(tokenizer, conv, placed, num_images)
                               : preprocess_rounds(tokenizer, conv, placed, num_images, options);
  // DataCollatorForSupervisedDataset: input_ids[:, :model_max_length], labels likewise.
  out.full_length = static_cast<int64_t>(out.input_ids.size());
  if (out.full_length > options.model_max_length) {
    out.truncated = true;
    out.input_ids.resize(options.model_max_length);
    out.labels.resize(options.model_max_length);
  }
  return out;
}

void PreprocessCounters::add(std::string_view id, const PreprocessedSample& sample) {
  ++samples;
  if (sample.truncated) {
    ++truncated;
    keep_first(first_truncated, id);
  }
  if (sample.mismatch) {
    ++mismatched;
    keep_first(first_mismatched, id);
  }
  if (sample.no_target()) {
    ++no_target;
    keep_first(first_no_target, id);
  }
}

void PreprocessCounters::merge(const PreprocessCounters& other) {
  samples += other.samples;
  truncated += other.truncated;
  mismatched += other.mismatched;
  no_target += other.no_target;
  for (const auto& id : other.first_truncated) keep_first(first_truncated, id);
  for (const auto& id : other.first_mismatched) keep_first(first_mismatched, id);
  for (const auto& id : other.first_no_target) keep_first(first_no_target, id);
}

std::string PreprocessCounters::summary() const {
  const auto event = [](int64_t n, const char* what, const std::vector<std::string>& first) {
    return str("; ", n, " ", what, n > 0 ? " (first: " + join_names(first) + ")" : std::string());
  };
  return str(samples, " samples", event(truncated, "cut at model_max_length", first_truncated),
             event(mismatched, "tokenization mismatches (fully masked)", first_mismatched),
             event(no_target, "with no target left", first_no_target));
}

}  // namespace vlmc::data
