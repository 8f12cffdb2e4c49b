// The mosaics as LLaVA-format files (mosaic_export.h).
#include "train/mosaic_export.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/output_folder.h"
#include "data/image_encode.h"
#include "train/mosaic_models.h"

namespace vlmc::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // LLaVA's key order: id, image, conversations

namespace {

// ---- the files ---------------------------------------------------------------------------

json turn(const char* from, const std::string& value) {
  json t;
  t["from"] = from;
  t["value"] = value;
  return t;
}

// The K questions of one mosaic as alternating human / gpt turns; `lead` goes
// before the first question ("<image>\n", or a caption and "\n").
json conversation(const std::vector<Sample>& questions, size_t first, int64_t count, const std::string& lead) {
  json turns = json::array();
  for (int64_t j = 0; j < count; ++j) {
    const Sample& s = questions[first + static_cast<size_t>(j)];
    turns.push_back(turn("human", (j == 0 ? lead : std::string()) + question_text(s)));
    turns.push_back(turn("gpt", s.answer));
  }
  return turns;
}


}  // namespace

std::vector<uint8_t> mosaic_pixels(const MosaicSet& set, int64_t m) {
  VLMC_CHECK(m >= 0 && m < set.size(), "mosaic_pixels: index ", m, " outside a set of ", set.size());
  const int64_t n = set.side() * set.side();
  const Tensor images = set.images.contiguous();
  const float* src = images.data<float>() + m * n;
  std::vector<uint8_t> out(static_cast<size_t>(n));
  // pixel / 255 in f32 times 255 is within 1e-4 of the byte it came from.
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(std::lround(src[i] * 255.0f));
  return out;
}

std::string question_text(const Sample& sample) {
  static const std::string suffix = std::string(" ") + kImageToken;
  const std::string& p = sample.prompt;
  VLMC_CHECK(p.size() > suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0,
             "question_text: the ", question_kind_name(sample.kind), " prompt \"", p, "\" does not end in \"",
             suffix, "\"");
  return p.substr(0, p.size() - suffix.size());
}

std::string mosaic_id(int64_t m) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "mosaic-%06lld", static_cast<long long>(m));
  return buf;
}

std::string text_only_id(int64_t t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "text-%06lld", static_cast<long long>(t));
  return buf;
}

MosaicExportSummary export_mosaics(const MosaicExportOptions& o) {
  const char* who = "data export-mosaics";
  VLMC_CHECK(o.count >= 1, who, ": --count must be >= 1, got ", o.count);
  VLMC_CHECK(o.questions_per_image >= 1, who, ": --questions-per-image must be >= 1, got ", o.questions_per_image);
  VLMC_CHECK(o.text_only >= -1, who, ": --text-only must be >= 0, got ", o.text_only);
  const int64_t text_only = o.text_only == -1 ? (o.count + 9) / 10 : o.text_only;
  io::check_new_folder(o.out, who);  // before reading the data

  // The mosaics and questions `vlmc train` (train split) or `vlmc eval` (test
  // split) draw for this seed; text-only conversations use the rows after count.
  const bool train = o.split == Split::train;
  // The train split without the validation items, as vlmc train draws its pool.
  const FashionMnist split = load_fashion_mnist(o.split, o.data_dir);
  const FashionMnist data = train ? training_items(split) : split;
  Generator mosaic_gen(seeds::derive(o.seed, train ? seeds::kPool : seeds::kEval));
  const MosaicSet set = make_mosaics(data, o.count + text_only, mosaic_gen, o.grid);
  Generator question_gen(seeds::derive(o.seed, train ? seeds::kPoolQuestions : seeds::kEvalQuestions));
  const int64_t k = o.questions_per_image;
  const std::vector<Sample> questions = instruction_samples(set, k, question_gen);

  const std::string extension = o.image_format == ExportImageFormat::png ? ".png" : ".jpg";
  const std::string image_lead = std::string(kImageToken) + "\n";
  json captions = json::array(), conversations = json::array();
  for (int64_t m = 0; m < o.count; ++m) {
    const std::string id = mosaic_id(m), image = "images/" + id + extension;
    json c;
    c["id"] = id;
    c["image"] = image;
    // LLaVA's plain template keeps only the image of the human turn; vlmc's
    // word vocabulary has no words for an instruction like "Describe the image
    // briefly.", so the turn is the image alone.
    c["conversations"] = json::array({turn("human", kImageToken), turn("gpt", caption(set.classes_of(m)))});
    captions.push_back(std::move(c));
    json q;
    q["id"] = id;
    q["image"] = image;
    q["conversations"] = conversation(questions, static_cast<size_t>(m * k), k, image_lead);
    conversations.push_back(std::move(q));
  }
  for (int64_t t = 0; t < text_only; ++t) {
    const int64_t m = o.count + t;
    json q;
    q["id"] = text_only_id(t);
    q["conversations"] = conversation(questions, static_cast<size_t>(m * k), k, caption(set.classes_of(m)) + "\n");
    conversations.push_back(std::move(q));
  }

  io::write_new_folder(o.out, who, [&](const fs::path& tmp) {
    fs::create_directories(tmp / "images");
    for (int64_t m = 0; m < o.count; ++m) {
      const std::vector<uint8_t> pixels = mosaic_pixels(set, m);
      const std::vector<uint8_t> bytes =
          o.image_format == ExportImageFormat::png
              ? data::encode_grey_png(pixels.data(), set.side(), set.side())
              : data::encode_grey_jpeg(pixels.data(), set.side(), set.side(), kExportJpegQuality);
      io::write_file(tmp / "images" / (mosaic_id(m) + extension),
                     std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), who);
    }
    io::write_file(tmp / "captions.json", captions.dump(2) + "\n", who);
    io::write_file(tmp / "questions.json", conversations.dump(2) + "\n", who);
  });
  MosaicExportSummary summary;
  summary.images = o.count;
  summary.questions = (o.count + text_only) * k;
  summary.text_only = text_only;
  return summary;
}

}  // namespace vlmc::train
