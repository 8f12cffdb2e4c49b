// LLaVA's training data files: blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json and their
// like (docs/llava_data.md). A JSON list, or JSONL (one object per line), of
//   {"id": "..." | 123, "image"?: "rel/path.jpg" | ["a.jpg", "b.jpg"],
//    "conversations": [{"from": "human" | "gpt", "value": "..."}, ...]}
// A sample without "image" is text-only. Image paths are relative to the image folder
// (subfolders allowed, as "coco/train2017/x.jpg"; absolute paths and ".." are refused).
//
// The file is parsed once, element by element (the 665K file is ~1 GB: no DOM of the whole
// file is ever built), into compact storage: every id, path and turn text back to back in one
// arena, samples and turns as offsets into it.
//
// Each sample is checked; a bad one is recorded as (id, reason, where) and skipped, or, with
// strict, is an error naming the file, the element index or line, the id and the reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/conversation.h"

namespace vlmc::data {

struct LlavaReadOptions {
  // The folder image paths are relative to; image_path() joins them. May be empty when
  // check_files is false.
  std::string image_folder;
  // The first bad sample throws vlmc::Error instead of being skipped.
  bool strict = false;
  // Also refuse samples whose image files are not regular files under image_folder (one stat
  // per image; a loader that decodes will find them anyway, this finds them up front).
  bool check_files = false;
  // When set ("plain", "vicuna_v1", "llava_llama_2"), also refuse the samples that template
  // cannot take (template_refusal in conversation.h).
  std::string conversation_template;
};

// A sample that was skipped, and why.
struct BadSample {
  std::string id;      // as written ("" when the sample has none)
  std::string where;   // "element 17" (JSON list, from 0) or "line 18" (JSONL, from 1)
  std::string reason;  // e.g. "2 <image> tags for 1 image"
};

// A sample's fields, copied out of the arena.
struct LlavaSample {
  std::string id;
  std::vector<std::string> images;
  std::vector<Speaker> from;
  std::vector<std::string> values;
};

class LlavaDataset {
 public:
  size_t size() const { return samples_.size(); }
  // Samples in the file, good and bad.
  size_t read() const { return samples_.size() + bad_.size(); }
  const std::vector<BadSample>& bad() const { return bad_; }
  const std::string& path() const { return path_; }
  const std::string& image_folder() const { return image_folder_; }
  bool jsonl() const { return jsonl_; }

  std::string_view id(size_t i) const;
  // "element 17" / "line 18": where sample i is in the file.
  std::string where(size_t i) const;
  size_t num_images(size_t i) const;
  std::string_view image(size_t i, size_t k) const;  // as written in the file
  std::string image_path(size_t i, size_t k) const;  // image_folder / image(i, k)
  // The turns, viewing the arena (valid while the dataset lives).
  std::vector<LlavaTurn> turns(size_t i) const;
  LlavaSample sample(size_t i) const;
  // Bytes used: the arena's text and the tables.
  size_t memory_bytes() const;

 private:
  friend class LlavaReader;
  struct Span {
    uint64_t offset = 0;
    uint32_t size = 0;
  };
  struct TurnSpan {
    Span text;
    Speaker from = Speaker::human;
  };
  struct Entry {
    Span id;
    uint64_t position = 0;  // element index or line
    uint32_t first_image = 0, num_images = 0;
    uint64_t first_turn = 0;
    uint32_t num_turns = 0;
  };
  std::string_view view(Span s) const { return std::string_view(text_).substr(s.offset, s.size); }
  void check_index(size_t i) const;

  std::string path_, image_folder_;
  bool jsonl_ = false;
  std::string text_;  // every id, image path and turn value, back to back
  std::vector<Entry> samples_;
  std::vector<Span> images_;
  std::vector<TurnSpan> turns_;
  std::vector<BadSample> bad_;
};

// Reads a JSON list or JSONL file (told apart by the first character that is not whitespace:
// '[' or '{'). An unreadable file, a syntax error in a JSON list or a top level that is neither
// throws vlmc::Error naming the file (and the byte offset); a JSONL line that does not parse is
// a bad sample. The checks on each sample, each a reason of its own:
//   - not an object; no "id", or an id that is neither a string nor an integer;
//   - "image" neither a string nor a non-empty list of strings; an empty, absolute or ".."
//     path; with check_files, a missing file;
//   - no "conversations" or not a list; an empty conversation; a turn that is not an object,
//     or without a string "from" / "value"; "from" neither "human" nor "gpt" (LLaVA's
//     preprocessing maps only those two);
//   - "<image>" in a gpt turn; "<image>" tags without an image; an image without "<image>";
//     a tag count different from the image count;
//   - with conversation_template, what that template refuses.
LlavaDataset read_llava_json(const std::string& path, const LlavaReadOptions& options = {});

// "" when `path` (an image entry of a sample) is relative, non-empty and has no ".."
// component; else the reason.
std::string image_path_problem(std::string_view path);

}  // namespace vlmc::data
