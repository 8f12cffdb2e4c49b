// Reading LLaVA's data.json / JSONL (see llava_dataset.h and docs/llava_data.md). A JSON list
// goes through nlohmann's parser with a callback that takes each top-level element when it is
// complete, checks it, copies what it needs into the arena and discards it: the parser never
// holds more than one sample. JSONL is parsed one line at a time.
#include "data/llava_dataset.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vlmc::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

size_t count_tags(std::string_view text) {
  size_t n = 0;
  for (size_t at = text.find(kImageTag); at != std::string_view::npos; at = text.find(kImageTag, at + kImageTag.size()))
    ++n;
  return n;
}

std::string plural(size_t n, const char* word) { return str(n, " ", word, n == 1 ? "" : "s"); }

}  // namespace

std::string image_path_problem(std::string_view path) {
  if (path.empty()) return "an empty image path";
  if (path.find('\0') != std::string_view::npos) return "an image path with a NUL byte";
  if (path.front() == '/') return str("image path '", path, "' is absolute (paths are relative to data.image_folder)");
  for (size_t start = 0;;) {
    const size_t slash = path.find('/', start);
    if (path.substr(start, slash == std::string_view::npos ? slash : slash - start) == "..")
      return str("image path '", path, "' has a '..' component (paths must stay inside data.image_folder)");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return "";
}

// Builds a LlavaDataset sample by sample.
class LlavaReader {
 public:
  LlavaReader(const std::string& path, const LlavaReadOptions& options) : options_(options) {
    VLMC_CHECK(!options.check_files || !options.image_folder.empty(), "llava data ", path,
               ": check_files needs data.image_folder");
    if (!options.conversation_template.empty()) conv_ = &conversation_template(options.conversation_template);
    out_.path_ = path;
    out_.image_folder_ = options.image_folder;
  }

  LlavaDataset read() {
    std::ifstream in(out_.path_, std::ios::binary);
    VLMC_CHECK(in, "llava data ", out_.path_, ": cannot open the file");
    std::error_code ec;
    const auto bytes = fs::file_size(out_.path_, ec);
    // The text kept is never longer than the file: one reservation, no copies as it grows
    // (pages never written are never resident).
    if (!ec) out_.text_.reserve(static_cast<size_t>(bytes));
    char first = 0;
    while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
    }
    VLMC_CHECK(in, "llava data ", out_.path_, ": the file is empty (expected a JSON list or JSONL)");
    in.unget();
    if (first == '[') {
      read_list(in);
    } else if (first == '{') {
      in.seekg(0);  // from the start again, so that line numbers count the blank lines
      read_lines(in);
    }
    else {
      throw Error(str("llava data ", out_.path_, ": starts with '", first,
                      "', neither a JSON list ('[') nor JSONL (one '{' object per line)"));
    }
    return std::move(out_);
  }

 private:
  void read_list(std::istream& in) {
    uint64_t index = 0;
    const json::parser_callback_t take = [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth != 1) return true;
      if (event == json::parse_event_t::object_end || event == json::parse_event_t::array_end ||
          event == json::parse_event_t::value) {
        const uint64_t at = index++;
        add(parsed, at, str("element ", at));
        return false;  // discarded: the parser keeps nothing of the sample
      }
      return true;
    };
    try {
      const json rest = json::parse(in, take);
      VLMC_CHECK(rest.is_array(), "llava data ", out_.path_, ": the top level is not a JSON list");
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number no double holds
      throw Error(str("llava data ", out_.path_, ": not valid JSON (", e.what(), ")"));
    }
  }

  void read_lines(std::istream& in) {
    out_.jsonl_ = true;
    std::string line;
    for (uint64_t number = 1; std::getline(in, line); ++number) {
      if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {  // parse_error, or out_of_range for a number no double holds
        bad("", str("line ", number), str("not valid JSON (", e.what(), ")"));
        continue;
      }
      add(j, number, str("line ", number));
    }
  }

  void bad(std::string id, std::string where, std::string reason) {
    if (options_.strict)
      throw Error(str("llava data ", out_.path_, " ", where, id.empty() ? std::string() : " (id '" + id + "')", ": ",
                      reason, " (data.strict: a bad sample is an error; without it, it is skipped and counted)"));
    out_.bad_.push_back({std::move(id), std::move(where), std::move(reason)});
  }

  // Checks one sample; on success copies it into the arena.
  void add(const json& j, uint64_t position, const std::string& where) {
    std::string id;
    if (j.is_object()) {
      const auto it = j.find("id");
      if (it != j.end() && it->is_string()) id = it->get<std::string>();
      if (it != j.end() && (it->is_number_integer())) id = it->dump();
    }
    std::vector<std::string_view> images;
    std::vector<LlavaTurn> turns;
    const std::string reason = check(j, images, turns);
    if (!reason.empty()) return bad(id, where, reason);

    LlavaDataset::Entry e;
    e.position = position;
    e.id = keep(id);
    e.first_image = static_cast<uint32_t>(out_.images_.size());
    e.num_images = static_cast<uint32_t>(images.size());
    for (const auto image : images) out_.images_.push_back(keep(image));
    e.first_turn = out_.turns_.size();
    e.num_turns = static_cast<uint32_t>(turns.size());
    for (const auto& turn : turns) out_.turns_.push_back({keep(turn.value), turn.from});
    out_.samples_.push_back(e);
  }

  LlavaDataset::Span keep(std::string_view text) {
    VLMC_CHECK(text.size() < (uint64_t{1} << 32), "llava data ", out_.path_, ": a string of ", text.size(),
               " bytes (at most 4 GiB)");
    LlavaDataset::Span s{out_.text_.size(), static_cast<uint32_t>(text.size())};
    out_.text_.append(text);
    return s;
  }

  // "" or the reason the sample is bad; fills images and turns (views into j) when good.
  std::string check(const json& j, std::vector<std::string_view>& images, std::vector<LlavaTurn>& turns) const {
    if (!j.is_object()) return str("the sample is a JSON ", j.type_name(), ", not an object");
    const auto id = j.find("id");
    if (id == j.end()) return "no \"id\"";
    if (!id->is_string() && !id->is_number_integer())
      return str("\"id\" is a JSON ", id->type_name(), " (a string or an integer)");

    if (const auto image = j.find("image"); image != j.end()) {
      if (image->is_string()) {
        images.push_back(image->get_ref<const std::string&>());
      } else if (image->is_array() && !image->empty()) {
        for (const auto& one : *image) {
          if (!one.is_string()) return str("\"image\" holds a JSON ", one.type_name(), " (paths are strings)");
          images.push_back(one.get_ref<const std::string&>());
        }
      } else {
        return image->is_array() ? "\"image\" is an empty list"
                                 : str("\"image\" is a JSON ", image->type_name(), " (a path or a list of paths)");
      }
    }
    for (const auto image : images) {
      std::string problem = image_path_problem(image);
      if (!problem.empty()) return problem;
    }

    const auto conversations = j.find("conversations");
    if (conversations == j.end()) return "no \"conversations\"";
    if (!conversations->is_array()) return str("\"conversations\" is a JSON ", conversations->type_name(), ", not a list");
    if (conversations->empty()) return "an empty conversation";
    size_t tags = 0;
    for (size_t t = 0; t < conversations->size(); ++t) {
      const json& turn = (*conversations)[t];
      if (!turn.is_object()) return str("turn ", t, " is a JSON ", turn.type_name(), ", not an object");
      const auto from = turn.find("from");
      const auto value = turn.find("value");
      if (from == turn.end() || !from->is_string()) return str("turn ", t, " has no string \"from\"");
      if (value == turn.end() || !value->is_string()) return str("turn ", t, " has no string \"value\"");
      const std::string& who = from->get_ref<const std::string&>();
      if (who != "human" && who != "gpt")
        return str("turn ", t, " is from '", who, "' (LLaVA's preprocessing knows only \"human\" and \"gpt\")");
      const std::string& text = value->get_ref<const std::string&>();
      const size_t here = count_tags(text);
      if (here > 0 && who == "gpt") return str("turn ", t, " (gpt) holds <image> (images go in human turns)");
      tags += here;
      turns.push_back({who == "human" ? Speaker::human : Speaker::gpt, text});
    }
    if (images.empty() && tags > 0) return str(plural(tags, "<image> tag"), " but no image");
    if (!images.empty() && tags == 0) return str(plural(images.size(), "image"), " but no <image> tag");
    if (tags != images.size()) return str(plural(tags, "<image> tag"), " for ", plural(images.size(), "image"));

    if (conv_) {
      std::string refusal = template_refusal(*conv_, turns, images.size());
      if (!refusal.empty()) return refusal;
    }
    if (options_.check_files) {
      for (const auto image : images) {
        const fs::path file = fs::path(options_.image_folder) / fs::path(image);
        std::error_code ec;
        if (!fs::is_regular_file(file, ec)) return str("image file ", file.string(), " is missing");
      }
    }
    return "";
  }

  LlavaReadOptions options_;
  const ConversationTemplate* conv_ = nullptr;
  LlavaDataset out_;
};

LlavaDataset read_llava_json(const std::string& path, const LlavaReadOptions& options) {
  return LlavaReader(path, options).read();
}

void LlavaDataset::check_index(size_t i) const {
  VLMC_CHECK(i < samples_.size(), "llava data ", path_, ": sample ", i, " is out of range (", samples_.size(),
             " samples)");
}

std::string_view LlavaDataset::id(size_t i) const {
  check_index(i);
  return view(samples_[i].id);
}

std::string LlavaDataset::where(size_t i) const {
  check_index(i);
  return str(jsonl_ ? "line " : "element ", samples_[i].position);
}

size_t LlavaDataset::num_images(size_t i) const {
  check_index(i);
  return samples_[i].num_images;
}

std::string_view LlavaDataset::image(size_t i, size_t k) const {
  check_index(i);
  VLMC_CHECK(k < samples_[i].num_images, "llava data ", path_, ": sample '", id(i), "' has ",
             samples_[i].num_images, " images, not ", k + 1);
  return view(images_[samples_[i].first_image + k]);
}

std::string LlavaDataset::image_path(size_t i, size_t k) const {
  return (fs::path(image_folder_) / fs::path(image(i, k))).string();
}

std::vector<LlavaTurn> LlavaDataset::turns(size_t i) const {
  check_index(i);
  std::vector<LlavaTurn> out;
  out.reserve(samples_[i].num_turns);
  for (uint32_t t = 0; t < samples_[i].num_turns; ++t) {
    const TurnSpan& turn = turns_[samples_[i].first_turn + t];
    out.push_back({turn.from, view(turn.text)});
  }
  return out;
}

LlavaSample LlavaDataset::sample(size_t i) const {
  LlavaSample s;
  s.id = std::string(id(i));
  for (size_t k = 0; k < num_images(i); ++k) s.images.emplace_back(image(i, k));
  for (const LlavaTurn& turn : turns(i)) {
    s.from.push_back(turn.from);
    s.values.emplace_back(turn.value);
  }
  return s;
}

size_t LlavaDataset::memory_bytes() const {
  return text_.size() + samples_.capacity() * sizeof(Entry) + images_.capacity() * sizeof(Span) +
         turns_.capacity() * sizeof(TurnSpan);
}

}  // namespace vlmc::data
