// CLIPImageProcessor against transformers 4.45.2 + PIL 9.4 (tests/golden/images/,
// written by make_golden_images.py): PIL's resize bit for bit for every
// convolution filter, shrinking and enlarging; then the processor's
// pixel_values, each case read back from its preprocessor_config.json (the
// shrink and enlarge configs with and without LLaVA's pad, the old int form,
// a {"height","width"} resize without crop, a crop larger than the image,
// rescale or normalise switched off); and bad configs refused by name.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "data/clip_image_processor.h"
#include "tests/support/golden.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::data;
using Catch::Matchers::Contains;
using vlmc::test::TempDir;

namespace {

const std::string kImageDir = std::string(VLMC_GOLDEN_DIR) + "/images/";

// Largest |a - b| over the pixels, or 256 when the sizes differ.
int max_pixel_diff(const Image& img, const Tensor& expected) {
  if (expected.shape() != Shape{img.height, img.width, 3}) return 256;
  const std::vector<uint8_t> e = expected.to_vector<uint8_t>();
  int worst = 0;
  for (size_t i = 0; i < e.size(); ++i) worst = std::max(worst, std::abs(int(img.rgb[i]) - int(e[i])));
  return worst;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(double(x[i]) - double(y[i])));
  return worst;
}

CLIPImageProcessor processor_from_json(const TempDir& dir, const std::string& json, bool pad) {
  dir.write("preprocessor_config.json", json);
  return CLIPImageProcessor::from_folder(dir.path.string(), pad);
}

}  // namespace

TEST_CASE("resize equals PIL's Image.resize bit for bit", "[clip_processor]") {
  const test::GoldenFile golden = test::load_golden("images/golden");
  const Image photo = load_image(kImageDir + "photo420.jpg");
  const std::vector<std::pair<std::string, Resample>> filters = {{"lanczos", Resample::lanczos},
                                                                 {"bilinear", Resample::bilinear},
                                                                 {"bicubic", Resample::bicubic},
                                                                 {"box", Resample::box},
                                                                 {"hamming", Resample::hamming}};
  int checked = 0;
  for (const auto& [key, expected] : test::section(golden.tensors, "resize.")) {
    // key: "<filter>.<w>x<h>"
    const std::string filter = key.substr(0, key.find('.'));
    const std::string size = key.substr(key.find('.') + 1);
    const int64_t w = std::stoll(size.substr(0, size.find('x'))), h = std::stoll(size.substr(size.find('x') + 1));
    Resample r = Resample::bicubic;
    bool known = false;
    for (const auto& [name, value] : filters)
      if (name == filter) r = value, known = true;
    REQUIRE(known);
    INFO("resize " << key);
    CHECK(max_pixel_diff(resize_like_pil(photo, w, h, r), expected) == 0);
    ++checked;
  }
  CHECK(checked == 7);
}

TEST_CASE("shortest-edge sizes round the long edge down as transformers does", "[clip_processor]") {
  using P = std::pair<int64_t, int64_t>;
  CHECK(shortest_edge_output_size(30, 40, 24) == P{24, 32});
  CHECK(shortest_edge_output_size(31, 18, 24) == P{41, 24});   // 24 * 31 / 18 = 41.33
  CHECK(shortest_edge_output_size(30, 40, 50) == P{50, 66});   // 66.67
  CHECK(shortest_edge_output_size(480, 640, 336) == P{336, 448});
  CHECK(shortest_edge_output_size(333, 500, 336) == P{336, 504});  // 504.50...
  CHECK(shortest_edge_output_size(7, 7, 336) == P{336, 336});
  CHECK_THROWS_WITH(shortest_edge_output_size(0, 7, 336), Contains("shortest_edge"));
}

TEST_CASE("center crop and expand-to-square place pixels as transformers and LLaVA do", "[clip_processor]") {
  Image img(5, 3);
  for (int64_t y = 0; y < 3; ++y)
    for (int64_t x = 0; x < 5; ++x) img.pixel(y, x)[0] = uint8_t(10 * y + x + 1);
  // Smaller crop: top = (3 - 2) // 2 = 0, left = (5 - 2) // 2 = 1.
  const Image c = center_crop(img, 2, 2);
  CHECK(c.pixel(0, 0)[0] == 2);
  CHECK(c.pixel(1, 1)[0] == 13);
  // Larger crop: 6 x 8 from 3 x 5, padded ceil(3 / 2) = 2 above and ceil(3 / 2) = 2 left.
  const Image p = center_crop(img, 6, 8);
  REQUIRE((p.height == 6 && p.width == 8));
  CHECK(p.pixel(1, 1)[0] == 0);
  CHECK(p.pixel(2, 2)[0] == 1);
  CHECK(p.pixel(4, 6)[0] == 25);
  CHECK(p.pixel(5, 7)[0] == 0);
  // Wide image: pasted at (0, (5 - 3) // 2 = 1) on a 5 x 5 square.
  const Image s = expand_to_square(img, {7, 8, 9});
  REQUIRE((s.width == 5 && s.height == 5));
  CHECK(s.pixel(0, 0)[0] == 7);
  CHECK(s.pixel(1, 0)[0] == 1);
  CHECK(s.pixel(3, 4)[0] == 25);
  CHECK(s.pixel(4, 4)[2] == 9);
}

TEST_CASE("pixel_values match transformers' CLIPImageProcessor", "[clip_processor]") {
  const test::GoldenFile golden = test::load_golden("images/golden");
  REQUIRE(golden.cases.size() == 11);
  TempDir dir("clip_processor");
  double worst = 0;
  for (const auto& [name, args] : golden.cases) {
    INFO("case " << name << ": " << args.dump());
    const CLIPImageProcessor proc = processor_from_json(dir, args.at("config").dump(), args.at("pad").get<bool>());
    const Image image = load_image(kImageDir + args.at("image").get<std::string>());

    // The resize alone, to localise a mismatch.
    const auto resized = golden.tensors.find(name + ".resized");
    if (resized != golden.tensors.end()) {
      const auto& c = proc.config();
      const Image padded = c.pad_to_square ? expand_to_square(image, proc.pad_color()) : image;
      int64_t h = c.resize_height, w = c.resize_width;
      if (c.shortest_edge > 0) std::tie(h, w) = shortest_edge_output_size(padded.height, padded.width, c.shortest_edge);
      CHECK(max_pixel_diff(resize_like_pil(padded, w, h, c.resample), resized->second) == 0);
    }

    const Tensor expected = golden.tensors.at(name + ".pixel_values");  // [1, 3, H, W]
    const Tensor actual = proc.preprocess(image);                       // [3, H, W]
    REQUIRE(actual.shape() == Shape(expected.shape().begin() + 1, expected.shape().end()));
    const double diff = max_abs_diff(actual.unsqueeze(0), expected);
    worst = std::max(worst, diff);
    CHECK(diff <= 1e-6);
  }
  WARN("largest |pixel_values - transformers| over the cases: " << worst);
}

TEST_CASE("preprocess_batch stacks images into [B, 3, H, W]", "[clip_processor]") {
  const test::GoldenFile golden = test::load_golden("images/golden");
  CLIPImageProcessorConfig config;
  config.shortest_edge = 24;
  config.crop_height = config.crop_width = 24;
  const CLIPImageProcessor proc(config);
  const Image photo = load_image(kImageDir + "photo420.jpg");
  const Image tall = load_image(kImageDir + "tall.png");
  const Tensor batch = proc.preprocess_batch({photo, tall});
  REQUIRE(batch.shape() == Shape{2, 3, 24, 24});
  CHECK(max_abs_diff(batch.narrow(0, 0, 1), golden.tensors.at("shrink_photo.pixel_values")) <= 1e-6);
  CHECK(max_abs_diff(batch.narrow(0, 1, 1), golden.tensors.at("shrink_tall.pixel_values")) <= 1e-6);

  config.do_center_crop = false;
  CHECK_THROWS_WITH(CLIPImageProcessor(config).preprocess_batch({photo, tall}),
                    Contains("image 1") && Contains("do_center_crop"));
  CHECK_THROWS_WITH(proc.preprocess_batch({}), Contains("no images"));
}

TEST_CASE("bad preprocessor_config.json is refused with file and key named", "[clip_processor]") {
  TempDir dir("clip_processor");
  const std::string file = dir.file("preprocessor_config.json");
  auto refused = [&](const std::string& json) {
    dir.write("preprocessor_config.json", json);
    return CLIPImageProcessor::from_folder(dir.path.string());
  };
  CHECK_THROWS_WITH(CLIPImageProcessor::from_folder(dir.file("nowhere")),
                    Contains("nowhere") && Contains("preprocessor_config.json"));
  CHECK_THROWS_WITH(refused("{\"size\": 24,"), Contains(file) && Contains("not valid JSON"));
  // A number no double holds is nlohmann's out_of_range, not a parse_error (found by fuzz_hf_config).
  CHECK_THROWS_AS(refused("{\"rescale_factor\": 1e99999}"), vlmc::Error);
  CHECK_THROWS_WITH(refused("{\"rescale_factor\": 1e99999}"), Contains(file) && Contains("not valid JSON"));
  CHECK_THROWS_WITH(refused("[1, 2]"), Contains(file) && Contains("object"));
  CHECK_THROWS_WITH(refused(R"({"image_processor_type": "SiglipImageProcessor"})"),
                    Contains(file) && Contains("SiglipImageProcessor"));
  CHECK_THROWS_WITH(refused(R"({"feature_extractor_type": "ViTFeatureExtractor"})"),
                    Contains(file) && Contains("ViTFeatureExtractor"));
  CHECK_THROWS_WITH(refused(R"({"size": "big"})"), Contains(file) && Contains("\"size\""));
  CHECK_THROWS_WITH(refused(R"({"size": {"shortest_edge": -3}})"), Contains(file) && Contains("shortest_edge"));
  CHECK_THROWS_WITH(refused(R"({"crop_size": {"height": 24}})"), Contains(file) && Contains("crop_size"));
  CHECK_THROWS_WITH(refused(R"({"resample": 0})"), Contains(file) && Contains("NEAREST"));
  CHECK_THROWS_WITH(refused(R"({"image_mean": [0.5, 0.5]})"), Contains(file) && Contains("image_mean"));
  CHECK_THROWS_WITH(refused(R"({"image_std": [0.5, 0, 0.5]})"), Contains(file) && Contains("image_std[1]"));
  CHECK_THROWS_WITH(refused(R"({"do_resize": "yes"})"), Contains(file) && Contains("do_resize"));

  // Missing and null keys take CLIPImageProcessor's defaults; use_square_size squares the size.
  const CLIPImageProcessor defaults = refused(R"({"size": null, "processor_class": "LlavaProcessor"})");
  CHECK(defaults.config().shortest_edge == 224);
  CHECK(defaults.config().crop_height == 224);
  CHECK(defaults.config().resample == Resample::bicubic);
  const CLIPImageProcessor square = refused(R"({"size": {"shortest_edge": 30}, "use_square_size": true})");
  CHECK(square.config().shortest_edge == 0);
  CHECK((square.config().resize_height == 30 && square.config().resize_width == 30));
  const CLIPImageProcessor scalar = refused(R"({"image_mean": 0.5, "image_std": 0.25, "crop_size": [20, 30]})");
  CHECK(scalar.config().image_mean[2] == 0.5);
  CHECK(scalar.config().image_std[1] == 0.25);
  CHECK((scalar.config().crop_height == 20 && scalar.config().crop_width == 30));

  // The pad colour is int(mean * 255); a mean that gives no colour is refused.
  CHECK(defaults.pad_color() == std::array<uint8_t, 3>{122, 116, 104});
  dir.write("preprocessor_config.json", R"({"image_mean": [127.5, 127.5, 127.5]})");
  CHECK_THROWS_WITH(CLIPImageProcessor::from_folder(dir.path.string(), true), Contains("pad colour"));
}
