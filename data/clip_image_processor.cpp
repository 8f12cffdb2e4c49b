// CLIPImageProcessor (see clip_image_processor.h and docs/images.md). The
// resize reproduces PIL 9.4's convolution resampling: per output pixel a
// window of source pixels weighted by the filter, the filter stretched by the
// scale when shrinking (antialiasing), weights normalised to sum 1, turned
// into 22-bit fixed point, applied horizontally then vertically with the
// result clipped to uint8 after each pass.
#include "data/clip_image_processor.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vlmc::data {

namespace {

// ---- PIL's filters ---------------------------------------------------------------

constexpr double kPi = 3.14159265358979323846;

double filter_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double filter_bilinear(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double filter_hamming(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= kPi;
  return std::sin(x) / x * (0.54 + 0.46 * std::cos(x));
}

// Keys' cubic with a = -0.5 (PIL's choice).
double filter_bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= kPi;
  return std::sin(x) / x;
}

double filter_lanczos(double x) { return (x > -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

struct Filter {
  double (*f)(double);
  double support;
};

Filter filter_of(Resample r) {
  switch (r) {
    case Resample::box: return {filter_box, 0.5};
    case Resample::bilinear: return {filter_bilinear, 1.0};
    case Resample::hamming: return {filter_hamming, 1.0};
    case Resample::bicubic: return {filter_bicubic, 2.0};
    case Resample::lanczos: return {filter_lanczos, 3.0};
  }
  throw Error(str("resize: unknown resample filter ", static_cast<int>(r)));
}

// ---- coefficients ----------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's PRECISION_BITS

// For each output index: the first source index, the tap count, and the taps
// in fixed point (ksize per output, unused ones 0).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

Taps compute_taps(int64_t in_size, int64_t out_size, const Filter& filter) {
  // PIL passes the box as floats (0, in_size); the scale is a double quotient.
  const double scale = static_cast<double>(static_cast<float>(in_size) - 0.0f) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // stretch the filter only when shrinking
  const double support = filter.support * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(out_size));
  t.count.resize(static_cast<size_t>(out_size));
  t.weights.assign(static_cast<size_t>(out_size * t.ksize), 0);
  std::vector<double> w(static_cast<size_t>(t.ksize));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    const double inv = 1.0 / filterscale;
    int lo = static_cast<int>(center - support + 0.5);  // truncation toward 0, as C's (int)
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = static_cast<int>(in_size);
    const int n = hi - lo;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      w[static_cast<size_t>(i)] = filter.f((static_cast<double>(i + lo) - center + 0.5) * inv);
      sum += w[static_cast<size_t>(i)];
    }
    int32_t* k = t.weights.data() + o * t.ksize;
    for (int i = 0; i < n; ++i) {
      const double v = sum != 0.0 ? w[static_cast<size_t>(i)] / sum : w[static_cast<size_t>(i)];
      const double fixed = v * static_cast<double>(1 << kPrecisionBits);
      k[i] = static_cast<int32_t>(v < 0 ? fixed - 0.5 : fixed + 0.5);  // round half away from 0
    }
    t.first[static_cast<size_t>(o)] = lo;
    t.count[static_cast<size_t>(o)] = n;
  }
  return t;
}

// The accumulator starts at one half (rounding), and clips to 0..255.
inline uint8_t clip8(int32_t acc) {
  if (acc >= (1 << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return static_cast<uint8_t>(acc >> kPrecisionBits);
}

}  // namespace

// ---- resize, crop, pad -------------------------------------------------------------

Image resize_like_pil(const Image& image, int64_t width, int64_t height, Resample resample) {
  VLMC_CHECK(width > 0 && height > 0 && width * height <= kMaxImagePixels, "resize: bad output size ", width, "x",
             height, " for an image of ", image.width, "x", image.height);
  VLMC_CHECK(image.width > 0 && image.height > 0, "resize: empty input image ", image.width, "x", image.height);
  if (width == image.width && height == image.height) return image;  // PIL returns a copy
  const Filter filter = filter_of(resample);
  const Taps horiz = compute_taps(image.width, width, filter);
  const Taps vert = compute_taps(image.height, height, filter);

  // Horizontal pass, only over the source rows the vertical pass will read.
  const int64_t row0 = vert.first.front();
  const int64_t row1 = vert.first.back() + vert.count.back();
  Image mid;
  if (width != image.width) {
    mid.width = width;
    mid.height = row1 - row0;
    mid.rgb.resize(static_cast<size_t>(mid.width * mid.height * 3));
    for (int64_t y = 0; y < mid.height; ++y) {
      const uint8_t* src = image.pixel(y + row0, 0);
      uint8_t* dst = mid.pixel(y, 0);
      for (int64_t x = 0; x < width; ++x) {
        const int32_t* k = horiz.weights.data() + x * horiz.ksize;
        const uint8_t* s = src + horiz.first[static_cast<size_t>(x)] * 3;
        int32_t a0 = 1 << (kPrecisionBits - 1), a1 = a0, a2 = a0;
        for (int i = 0; i < horiz.count[static_cast<size_t>(x)]; ++i) {
          a0 += s[3 * i] * k[i];
          a1 += s[3 * i + 1] * k[i];
          a2 += s[3 * i + 2] * k[i];
        }
        dst[3 * x] = clip8(a0);
        dst[3 * x + 1] = clip8(a1);
        dst[3 * x + 2] = clip8(a2);
      }
    }
  }
  const Image& src = width != image.width ? mid : image;
  const int64_t shift = width != image.width ? row0 : 0;  // mid starts at source row row0
  if (height == image.height) return mid;  // only the horizontal pass was needed (mid spans every row)

  Image out(width, height);
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* k = vert.weights.data() + y * vert.ksize;
    const int64_t first = vert.first[static_cast<size_t>(y)] - shift;
    const int n = vert.count[static_cast<size_t>(y)];
    uint8_t* dst = out.pixel(y, 0);
    for (int64_t x = 0; x < width * 3; ++x) {
      int32_t acc = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < n; ++i) acc += src.rgb[static_cast<size_t>(((first + i) * width) * 3 + x)] * k[i];
      dst[x] = clip8(acc);
    }
  }
  return out;
}

std::pair<int64_t, int64_t> shortest_edge_output_size(int64_t height, int64_t width, int64_t shortest_edge) {
  VLMC_CHECK(height > 0 && width > 0 && shortest_edge > 0, "resize: shortest_edge ", shortest_edge,
             " for an image of ", width, "x", height);
  const int64_t short_side = std::min(width, height), long_side = std::max(width, height);
  // Python's int(size * long / short): a correctly rounded double quotient, truncated.
  const auto new_long = static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) /
                                             static_cast<double>(short_side));
  return width <= height ? std::pair{new_long, shortest_edge} : std::pair{shortest_edge, new_long};
}

namespace {
int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }
}  // namespace

Image center_crop(const Image& image, int64_t height, int64_t width) {
  VLMC_CHECK(height > 0 && width > 0, "center_crop: bad crop size ", height, "x", width);
  // Offsets of the crop in the image (may be negative where the crop is larger).
  int64_t top = floor_div2(image.height - height), left = floor_div2(image.width - width);
  if (top < 0 || left < 0 || top + height > image.height || left + width > image.width) {
    // transformers pads to max(crop, image) with ceil((new - old) / 2) before
    // the image, then crops; in image coordinates that moves the crop by the
    // pad and the result is clipped to the padded canvas.
    const int64_t new_h = std::max(height, image.height), new_w = std::max(width, image.width);
    const int64_t pad_top = (new_h - image.height + 1) / 2, pad_left = (new_w - image.width + 1) / 2;
    const int64_t t0 = std::max<int64_t>(0, top + pad_top), t1 = std::min(new_h, top + pad_top + height);
    const int64_t l0 = std::max<int64_t>(0, left + pad_left), l1 = std::min(new_w, left + pad_left + width);
    Image out(l1 - l0, t1 - t0);
    for (int64_t y = 0; y < out.height; ++y)
      for (int64_t x = 0; x < out.width; ++x) {
        const int64_t sy = y + t0 - pad_top, sx = x + l0 - pad_left;  // in the source image
        if (sy >= 0 && sy < image.height && sx >= 0 && sx < image.width)
          std::copy_n(image.pixel(sy, sx), 3, out.pixel(y, x));
      }
    return out;
  }
  Image out(width, height);
  for (int64_t y = 0; y < height; ++y) std::copy_n(image.pixel(top + y, left), width * 3, out.pixel(y, 0));
  return out;
}

Image expand_to_square(const Image& image, const std::array<uint8_t, 3>& background) {
  if (image.width == image.height) return image;
  const int64_t side = std::max(image.width, image.height);
  Image out(side, side, background[0], background[1], background[2]);
  const int64_t x0 = (side - image.width) / 2, y0 = (side - image.height) / 2;
  for (int64_t y = 0; y < image.height; ++y) std::copy_n(image.pixel(y, 0), image.width * 3, out.pixel(y + y0, x0));
  return out;
}

// ---- the config ----------------------------------------------------------------------

namespace {

using nlohmann::json;

const json* get(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& source) {
  const json* v = get(j, key);
  if (!v) return fallback;
  VLMC_CHECK(v->is_boolean(), source, ": key \"", key, "\" must be true or false, got ", v->dump());
  return v->get<bool>();
}

int64_t positive_int(const json& v, const std::string& what, const std::string& source) {
  VLMC_CHECK(v.is_number_integer() && v.get<int64_t>() > 0, source, ": ", what, " must be a positive integer, got ",
             v.dump());
  return v.get<int64_t>();
}

// mean / std: a list of 3 numbers, or one number for every channel.
std::array<double, 3> three_numbers(const json& j, const char* key, std::array<double, 3> fallback,
                                    const std::string& source) {
  const json* v = get(j, key);
  if (!v) return fallback;
  if (v->is_number()) return {v->get<double>(), v->get<double>(), v->get<double>()};
  VLMC_CHECK(v->is_array() && v->size() == 3 && (*v)[0].is_number() && (*v)[1].is_number() && (*v)[2].is_number(),
             source, ": key \"", key, "\" must be 3 numbers (one per RGB channel), got ", v->dump());
  return {(*v)[0].get<double>(), (*v)[1].get<double>(), (*v)[2].get<double>()};
}

// {"height","width"} from a dict, a [h, w] list, or an int (square).
std::pair<int64_t, int64_t> height_width(const json& v, const std::string& key, const std::string& source) {
  if (v.is_number()) {
    const int64_t n = positive_int(v, "\"" + key + "\"", source);
    return {n, n};
  }
  if (v.is_array() && v.size() == 2)
    return {positive_int(v[0], "\"" + key + "\"[0]", source), positive_int(v[1], "\"" + key + "\"[1]", source)};
  VLMC_CHECK(v.is_object() && v.contains("height") && v.contains("width"), source, ": key \"", key,
             "\" must be an int, [height, width] or {\"height\", \"width\"}, got ", v.dump());
  return {positive_int(v["height"], "\"" + key + "\".height", source),
          positive_int(v["width"], "\"" + key + "\".width", source)};
}

}  // namespace

CLIPImageProcessorConfig CLIPImageProcessorConfig::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number no double holds
    throw Error(str(source, ": not valid JSON (", e.what(), ")"));
  }
  VLMC_CHECK(j.is_object(), source, ": expected a JSON object, got ", j.type_name());
  if (const json* t = get(j, "image_processor_type")) {
    VLMC_CHECK(t->is_string() && t->get<std::string>() == "CLIPImageProcessor", source,
               ": image_processor_type ", t->dump(), " is not supported (vlmc implements CLIPImageProcessor)");
  } else if (const json* f = get(j, "feature_extractor_type")) {
    VLMC_CHECK(f->is_string() && f->get<std::string>() == "CLIPFeatureExtractor", source,
               ": feature_extractor_type ", f->dump(), " is not supported (vlmc implements CLIPImageProcessor)");
  }

  CLIPImageProcessorConfig c;
  c.do_resize = get_bool(j, "do_resize", c.do_resize, source);
  if (const json* s = get(j, "size")) {
    if (s->is_number()) {
      c.shortest_edge = positive_int(*s, "\"size\"", source);  // get_size_dict(default_to_square=False)
    } else if (s->is_object() && s->contains("shortest_edge")) {
      c.shortest_edge = positive_int((*s)["shortest_edge"], "\"size\".shortest_edge", source);
    } else {
      const auto [h, w] = height_width(*s, "size", source);
      c.shortest_edge = 0;
      c.resize_height = h;
      c.resize_width = w;
    }
  }
  if (get_bool(j, "use_square_size", false, source) && c.shortest_edge > 0) {
    c.resize_height = c.resize_width = c.shortest_edge;
    c.shortest_edge = 0;
  }
  if (const json* r = get(j, "resample")) {
    VLMC_CHECK(r->is_number_integer() && r->get<int64_t>() >= 1 && r->get<int64_t>() <= 5, source, ": resample ", r->dump(),
               " is not supported (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING; not 0 NEAREST)");
    c.resample = static_cast<Resample>(r->get<int64_t>());
  }
  c.do_center_crop = get_bool(j, "do_center_crop", c.do_center_crop, source);
  if (const json* s = get(j, "crop_size")) std::tie(c.crop_height, c.crop_width) = height_width(*s, "crop_size", source);
  c.do_rescale = get_bool(j, "do_rescale", c.do_rescale, source);
  if (const json* r = get(j, "rescale_factor")) {
    VLMC_CHECK(r->is_number(), source, ": key \"rescale_factor\" must be a number, got ", r->dump());
    c.rescale_factor = r->get<double>();
  }
  c.do_normalize = get_bool(j, "do_normalize", c.do_normalize, source);
  c.image_mean = three_numbers(j, "image_mean", c.image_mean, source);
  c.image_std = three_numbers(j, "image_std", c.image_std, source);
  for (int i = 0; i < 3; ++i)
    VLMC_CHECK(c.image_std[static_cast<size_t>(i)] != 0.0, source, ": image_std[", i, "] is 0");
  c.do_convert_rgb = get_bool(j, "do_convert_rgb", c.do_convert_rgb, source);
  return c;
}

// ---- the processor -------------------------------------------------------------------

CLIPImageProcessor::CLIPImageProcessor(CLIPImageProcessorConfig config) : config_(config) {
  const auto& c = config_;
  VLMC_CHECK(c.shortest_edge > 0 || (c.resize_height > 0 && c.resize_width > 0),
             "CLIPImageProcessor: size needs shortest_edge > 0 or height and width > 0, got shortest_edge ",
             c.shortest_edge, ", height ", c.resize_height, ", width ", c.resize_width);
  VLMC_CHECK(c.crop_height > 0 && c.crop_width > 0, "CLIPImageProcessor: bad crop_size ", c.crop_height, "x",
             c.crop_width);
  filter_of(c.resample);  // throws on an unknown filter
  for (int i = 0; i < 3; ++i)
    VLMC_CHECK(c.image_std[static_cast<size_t>(i)] != 0.0, "CLIPImageProcessor: image_std[", i, "] is 0");
  if (c.pad_to_square) pad_color();  // checks the mean gives a colour
}

CLIPImageProcessor CLIPImageProcessor::from_folder(const std::string& dir, bool pad_to_square) {
  const std::string path = (std::filesystem::path(dir) / "preprocessor_config.json").string();
  std::ifstream in(path);
  VLMC_CHECK(in.good(), path, ": cannot open (a Hugging Face model folder has preprocessor_config.json)");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CLIPImageProcessorConfig c = CLIPImageProcessorConfig::from_json_text(text, path);
  c.pad_to_square = pad_to_square;
  return CLIPImageProcessor(c);
}

std::array<uint8_t, 3> CLIPImageProcessor::pad_color() const {
  std::array<uint8_t, 3> color{};
  for (size_t i = 0; i < 3; ++i) {
    const double v = std::trunc(config_.image_mean[i] * 255.0);  // Python's int(x * 255)
    VLMC_CHECK(v >= 0 && v <= 255, "CLIPImageProcessor: pad colour int(image_mean[", i, "] * 255) = ", v,
               " is outside 0..255");
    color[i] = static_cast<uint8_t>(v);
  }
  return color;
}

Image CLIPImageProcessor::prepare(const Image& input) const {
  const auto& c = config_;
  VLMC_CHECK(input.width > 0 && input.height > 0 &&
                 input.rgb.size() == static_cast<size_t>(input.width * input.height * 3),
             "CLIPImageProcessor: bad image ", input.width, "x", input.height, " with ", input.rgb.size(), " bytes");
  Image image = c.pad_to_square ? expand_to_square(input, pad_color()) : input;
  if (c.do_resize) {
    int64_t h = c.resize_height, w = c.resize_width;
    if (c.shortest_edge > 0) std::tie(h, w) = shortest_edge_output_size(image.height, image.width, c.shortest_edge);
    image = resize_like_pil(image, w, h, c.resample);
  }
  if (c.do_center_crop) image = center_crop(image, c.crop_height, c.crop_width);
  return image;
}

Tensor CLIPImageProcessor::preprocess(const Image& input) const {
  const auto& c = config_;
  const Image image = prepare(input);
  const int64_t plane = image.width * image.height;
  std::vector<float> values(static_cast<size_t>(3 * plane));
  for (int ch = 0; ch < 3; ++ch) {
    const float mean = static_cast<float>(c.image_mean[static_cast<size_t>(ch)]);
    const float std = static_cast<float>(c.image_std[static_cast<size_t>(ch)]);
    float* out = values.data() + ch * plane;
    for (int64_t i = 0; i < plane; ++i) {
      const uint8_t v = image.rgb[static_cast<size_t>(3 * i + ch)];
      // transformers: uint8 * factor in float64, then cast to float32; the
      // normalisation in float32 (mean and std cast to the image's dtype).
      float x = c.do_rescale ? static_cast<float>(static_cast<double>(v) * c.rescale_factor) : static_cast<float>(v);
      if (c.do_normalize) x = (x - mean) / std;
      out[i] = x;
    }
  }
  return Tensor::from_vector(values, {3, image.height, image.width});  // (3, H, W)
}

Tensor CLIPImageProcessor::preprocess_batch(const std::vector<Image>& images) const {
  VLMC_CHECK(!images.empty(), "CLIPImageProcessor: preprocess_batch of no images");
  std::vector<Tensor> each;
  each.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    each.push_back(preprocess(images[i]));
    VLMC_CHECK(each[i].shape() == each[0].shape(), "CLIPImageProcessor: image ", i, " comes out ", describe(each[i]),
               ", image 0 ", describe(each[0]), ": a batch needs one size (set do_center_crop)");
  }
  const Shape& s = each[0].shape();
  Tensor batch = Tensor::empty({static_cast<int64_t>(images.size()), s[0], s[1], s[2]});  // (B, 3, H, W)
  float* dst = batch.data<float>();
  for (const Tensor& t : each) dst = std::copy_n(t.data<float>(), t.numel(), dst);
  return batch;
}

}  // namespace vlmc::data
