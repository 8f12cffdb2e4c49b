// End-to-end tests of `vlmc data export-mosaics`: the real binary writes the
// Fashion-MNIST mosaics as image files and LLaVA-format JSON; the files are
// read back (JSON parsed, every image decoded with data::load_image) and
// compared with the mosaics, captions and questions vlmc draws in memory for
// the same seed. Needs Debian's dataset-fashion-mnist.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/image_encode.h"
#include "tests/cli/cli_runner.h"
#include "tests/support/temp_dir.h"
#include "train/mosaic.h"
#include "train/mosaic_export.h"
#include "train/mosaic_models.h"
#include "train/tokenizer.h"

using namespace vlmc::cli_test;
namespace fs = std::filesystem;
using nlohmann::json;
using vlmc::test::TempDir;
namespace train = vlmc::train;

namespace {

std::string data_dir() {
  const char* env = std::getenv("VLMC_FASHION_MNIST_DIR");
  return env ? env : train::kFashionMnistDir;
}

std::vector<std::string> export_args(const std::string& out, const std::vector<std::string>& more = {}) {
  std::vector<std::string> args = {"data", "export-mosaics", "--out", out, "--data-dir", data_dir()};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

json read_json(const fs::path& p) {
  const std::string text = read_text(p);
  REQUIRE_FALSE(text.empty());
  return json::parse(text);
}

// Every regular file under dir, by path relative to it.
std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(fs::relative(e.path(), dir).string());
  std::sort(files.begin(), files.end());
  return files;
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The class the caption "top left: bag, top right: ..." names at `quadrant`.
std::string class_in_caption(const std::string& caption, const std::string& quadrant) {
  const size_t at = caption.find(quadrant + ": ");
  REQUIRE(at != std::string::npos);
  const size_t start = at + quadrant.size() + 2, end = caption.find(',', start);
  return caption.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// The conversation's turns alternate human, gpt and hold non-empty text in
// the words of vlmc's mosaic tokenizer (strict: an unknown word throws).
void check_turns(const json& sample) {
  const json& turns = sample.at("conversations");
  REQUIRE(turns.is_array());
  REQUIRE(turns.size() % 2 == 0);
  REQUIRE_FALSE(turns.empty());
  const train::Tokenizer tokenizer;
  train::EncodeOptions strict;
  strict.strict = true;
  for (size_t i = 0; i < turns.size(); ++i) {
    CHECK(turns[i].at("from") == (i % 2 == 0 ? "human" : "gpt"));
    const std::string value = turns[i].at("value");
    CHECK_FALSE(value.empty());
    CHECK_NOTHROW(tokenizer.encode(value, strict));
  }
}

}  // namespace

TEST_CASE("vlmc data export-mosaics writes LLaVA-format files of the mosaics vlmc train draws", "[cli][data_export]") {
  TempDir tmp("data_export");
  const fs::path out = tmp.path / "mosaics";
  const int64_t count = 12, k = 3, seed = 5;
  const Result r = run_cli(export_args(out.string(), {"--count", "12", "--questions-per-image", "3", "--seed", "5"}),
                           tmp.path);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("12 png images of the train split") && Catch::Contains("2 text-only"));
  for (const auto& e : fs::directory_iterator(tmp.path))  // no scratch folder left beside it
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);

  // What vlmc train draws for the same seed: the pool (data.train_mosaics = 12
  // plus the 2 text-only rows after it) and its questions.
  vlmc::Generator pool_gen(train::seeds::derive(seed, train::seeds::kPool));
  const train::MosaicSet set = train::build_train_mosaics(count + 2, pool_gen, data_dir());
  vlmc::Generator question_gen(train::seeds::derive(seed, train::seeds::kPoolQuestions));
  const std::vector<train::Sample> questions = train::instruction_samples(set, k, question_gen);

  // Exactly the images and the two JSON files.
  std::vector<std::string> expected = {"captions.json", "questions.json"};
  for (int64_t m = 0; m < count; ++m) expected.push_back("images/" + train::mosaic_id(m) + ".png");
  std::sort(expected.begin(), expected.end());
  CHECK(files_under(out) == expected);

  // captions.json: stage 1, one sample per mosaic, each image decoding to the mosaic's pixels.
  const json captions = read_json(out / "captions.json");
  REQUIRE(captions.is_array());
  REQUIRE(captions.size() == static_cast<size_t>(count));
  std::set<std::string> ids;
  for (int64_t m = 0; m < count; ++m) {
    const json& c = captions[static_cast<size_t>(m)];
    check_turns(c);
    CHECK(c.at("id") == train::mosaic_id(m));
    ids.insert(c.at("id").get<std::string>());
    const std::string image = c.at("image");
    CHECK(image == "images/" + train::mosaic_id(m) + ".png");
    CHECK(fs::path(image).is_relative());
    REQUIRE(c.at("conversations").size() == 2);
    CHECK(c["conversations"][0]["value"] == "<image>");
    CHECK(c["conversations"][1]["value"] == train::caption(set.classes_of(m)));

    const vlmc::data::Image decoded = vlmc::data::load_image((out / image).string());
    REQUIRE(decoded.width == 56);
    REQUIRE(decoded.height == 56);
    const std::vector<uint8_t> pixels = train::mosaic_pixels(set, m);
    const float* f = set.images.data<float>() + m * 56 * 56;
    int64_t wrong = 0;
    for (int64_t i = 0; i < 56 * 56; ++i) {
      const uint8_t* rgb = decoded.rgb.data() + 3 * i;
      wrong += rgb[0] != pixels[static_cast<size_t>(i)] || rgb[1] != rgb[0] || rgb[2] != rgb[0] ||
               std::abs(rgb[0] / 255.0f - f[i]) > 1e-6f;
    }
    CHECK(wrong == 0);
  }
  CHECK(ids.size() == static_cast<size_t>(count));

  // questions.json: stage 2, a multi-turn conversation per mosaic, then the text-only ones.
  const json conversations = read_json(out / "questions.json");
  REQUIRE(conversations.is_array());
  REQUIRE(conversations.size() == static_cast<size_t>(count + 2));
  ids.clear();
  for (size_t i = 0; i < conversations.size(); ++i) {
    const json& q = conversations[i];
    check_turns(q);
    ids.insert(q.at("id").get<std::string>());
    const json& turns = q.at("conversations");
    REQUIRE(turns.size() == static_cast<size_t>(2 * k));
    std::string all;
    for (const json& t : turns) all += t.at("value").get<std::string>() + "\n";
    const int64_t m = static_cast<int64_t>(i);
    const std::string first = turns[0]["value"];
    if (m < count) {  // an image sample: one <image>, at the start of the first human turn
      CHECK(q.at("id") == train::mosaic_id(m));
      CHECK(q.at("image") == captions[i].at("image"));
      CHECK(occurrences(all, "<image>") == 1);
      CHECK(first.rfind("<image>\n", 0) == 0);
    } else {  // text-only: no image, the caption of a mosaic not written, then the questions
      CHECK(q.at("id") == train::text_only_id(m - count));
      CHECK_FALSE(q.contains("image"));
      CHECK(occurrences(all, "<image>") == 0);
      CHECK(first.rfind(train::caption(set.classes_of(m)) + "\n", 0) == 0);
    }
    for (int64_t j = 0; j < k; ++j) {
      const train::Sample& s = questions[static_cast<size_t>(m * k + j)];
      const std::string asked = turns[static_cast<size_t>(2 * j)]["value"];
      CHECK(asked.size() >= train::question_text(s).size());
      CHECK(asked.compare(asked.size() - train::question_text(s).size(), std::string::npos,
                          train::question_text(s)) == 0);
      CHECK(turns[static_cast<size_t>(2 * j + 1)]["value"] == s.answer);
      // A "what" question's answer is the class the mosaic's caption names there.
      if (s.kind == train::QuestionKind::what) {
        const std::string text = train::question_text(s), prefix = "what is at the ";
        REQUIRE(text.rfind(prefix, 0) == 0);
        const std::string quadrant = text.substr(prefix.size(), text.size() - prefix.size() - 1);  // no '?'

        CHECK(s.answer == class_in_caption(train::caption(set.classes_of(m)), quadrant));
      }
    }
  }
  CHECK(ids.size() == conversations.size());
}

TEST_CASE("vlmc data export-mosaics gives the same bytes for a seed and other bytes for another",
          "[cli][data_export]") {
  TempDir tmp("data_export_determinism");
  const fs::path a = tmp.path / "a", b = tmp.path / "b", c = tmp.path / "c";
  const std::vector<std::string> flags = {"--count", "6", "--questions-per-image", "2", "--seed", "9"};
  REQUIRE(run_cli(export_args(a.string(), flags), tmp.path).status == 0);
  REQUIRE(run_cli(export_args(b.string(), flags), tmp.path).status == 0);
  REQUIRE(run_cli(export_args(c.string(), {"--count", "6", "--questions-per-image", "2", "--seed", "10"}), tmp.path)
              .status == 0);
  const std::vector<std::string> files = files_under(a);
  REQUIRE(files.size() == 8);
  CHECK(files_under(b) == files);
  for (const std::string& f : files) {
    INFO(f);
    CHECK(read_text(a / f) == read_text(b / f));
  }
  CHECK(read_text(a / "captions.json") != read_text(c / "captions.json"));
}

TEST_CASE("vlmc data export-mosaics: the test split is vlmc eval's mosaics, and JPEG images decode close to them",
          "[cli][data_export]") {
  TempDir tmp("data_export_jpeg");
  const fs::path out = tmp.path / "eval";
  const Result r = run_cli(export_args(out.string(), {"--split", "test", "--count", "4", "--image-format", "jpg",
                                                      "--text-only", "0", "--seed", "3"}),
                           tmp.path);
  REQUIRE(r.status == 0);
  vlmc::Generator eval_gen(train::seeds::derive(3, train::seeds::kEval));
  const train::MosaicSet set = train::build_eval_mosaics(4, eval_gen, data_dir());
  const json captions = read_json(out / "captions.json");
  REQUIRE(captions.size() == 4);
  CHECK(read_json(out / "questions.json").size() == 4);  // no text-only samples
  for (int64_t m = 0; m < 4; ++m) {
    const json& c = captions[static_cast<size_t>(m)];
    CHECK(c.at("image") == "images/" + train::mosaic_id(m) + ".jpg");
    CHECK(c["conversations"][1]["value"] == train::caption(set.classes_of(m)));
    const vlmc::data::Image decoded = vlmc::data::load_image((out / c.at("image").get<std::string>()).string());
    REQUIRE(decoded.width == 56);
    REQUIRE(decoded.height == 56);
    const std::vector<uint8_t> pixels = train::mosaic_pixels(set, m);
    int worst = 0;
    double total = 0;
    for (size_t i = 0; i < pixels.size(); ++i) {
      const int d = std::abs(int(decoded.rgb[3 * i]) - int(pixels[i]));
      worst = std::max(worst, d);
      total += d;
    }
    // Quality 95 on these images: at most 8 levels off, about 1 on average (measured).
    CHECK(worst <= 16);
    CHECK(total / double(pixels.size()) < 2.0);
  }
}

TEST_CASE("vlmc data export-mosaics refuses an existing folder and bad options, writing nothing",
          "[cli][data_export]") {
  TempDir tmp("data_export_bad");
  const fs::path existing = tmp.path / "existing";
  fs::create_directories(existing);
  Result r = run_cli(export_args(existing.string(), {"--count", "2"}), tmp.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("already exists") && Catch::Contains(existing.string()));
  CHECK(fs::is_empty(existing));
  r = run_cli(export_args((existing / "").string(), {"--count", "2"}), tmp.path);  // "existing/" too
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("already exists"));
  CHECK(fs::is_empty(existing));

  const fs::path out = tmp.path / "out";
  r = run_cli(export_args(out.string(), {"--split", "validation"}), tmp.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--split") && Catch::Contains("validation"));
  r = run_cli(export_args(out.string(), {"--count", "0"}), tmp.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--count") && Catch::Contains("must be > 0"));
  r = run_cli(export_args(out.string(), {"--image-format", "gif"}), tmp.path);
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Catch::Contains("--image-format"));
  r = run_cli({"data", "export-mosaics", "--out", out.string(), "--data-dir", (tmp.path / "nowhere").string()},
              tmp.path);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("dataset-fashion-mnist"));
  CHECK_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(tmp.path))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("encode_grey_png and encode_grey_jpeg round-trip through data::decode_image", "[cli][data_export]") {
  const int64_t w = 7, h = 5;
  std::vector<uint8_t> pixels(static_cast<size_t>(w * h));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  const std::vector<uint8_t> png = vlmc::data::encode_grey_png(pixels.data(), w, h);
  CHECK(png == vlmc::data::encode_grey_png(pixels.data(), w, h));  // no time stamp: same pixels, same bytes
  const vlmc::data::Image image = vlmc::data::decode_image(png.data(), png.size(), "grey.png");
  REQUIRE(image.width == w);
  REQUIRE(image.height == h);
  for (size_t i = 0; i < pixels.size(); ++i) {
    INFO("pixel " << i);
    CHECK(int(image.rgb[3 * i]) == int(pixels[i]));
    CHECK(int(image.rgb[3 * i + 2]) == int(pixels[i]));
  }
  const std::vector<uint8_t> flat(64 * 64, 200);
  const std::vector<uint8_t> jpeg = vlmc::data::encode_grey_jpeg(flat.data(), 64, 64, train::kExportJpegQuality);
  CHECK(vlmc::data::detect_image_format(jpeg.data(), jpeg.size()) == vlmc::data::ImageFormat::jpeg);
  const vlmc::data::Image j = vlmc::data::decode_image(jpeg.data(), jpeg.size(), "grey.jpg");
  REQUIRE(j.width == 64);
  CHECK(std::count(j.rgb.begin(), j.rgb.end(), uint8_t{200}) == 64 * 64 * 3);  // a flat image survives JPEG exactly
  CHECK_THROWS_WITH(vlmc::data::encode_grey_png(pixels.data(), 0, h), Catch::Contains("image size 0x5"));
  CHECK_THROWS_WITH(vlmc::data::encode_grey_jpeg(pixels.data(), w, h, 0), Catch::Contains("quality 0"));

  train::Sample bad;
  bad.prompt = "<image>";
  bad.kind = train::QuestionKind::what;
  CHECK_THROWS_WITH(train::question_text(bad), Catch::Contains("does not end in \" <image>\""));
}
