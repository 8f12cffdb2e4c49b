// Hugging Face's CLIPImageProcessor (transformers 4.45.2), the preprocessing
// of CLIP and LLaVA vision towers, over vlmc::data::Image:
//
//   [pad]       LLaVA-1.5's image_aspect_ratio "pad": expand2square onto the
//               colour tuple(int(m * 255) for m in image_mean)
//   resize      shorter edge to size["shortest_edge"] (the longer one to
//               int(shortest * long / short)), or to size {"height","width"},
//               with PIL 9.4's resampling (bicubic by default: antialiased
//               when shrinking, 22-bit fixed-point taps, uint8 after each of
//               the horizontal and the vertical pass), bit-exact with PIL
//   center crop to crop_size, zero-padded where the image is smaller
//   rescale    f32(double(u8) * rescale_factor)
//   normalize  (x - f32(mean)) / f32(std) in f32
//   -> f32 [3, H, W] (CHW, RGB), the pixel_values of one image
//
// Each step obeys its do_* flag. Images are always RGB here, so do_convert_rgb
// has nothing left to do (load_image converts as PIL's convert("RGB")).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "data/image.h"

namespace vlmc::data {

// PIL's resampling filters by their Image.Resampling number; NEAREST (0) is
// not a convolution and is not supported.
enum class Resample : int { lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

struct CLIPImageProcessorConfig {
  bool do_resize = true;
  // size: {"shortest_edge": N} (shortest_edge > 0) or {"height", "width"}
  // (shortest_edge == 0); an int in the JSON means shortest_edge.
  int64_t shortest_edge = 224;
  int64_t resize_height = 0, resize_width = 0;
  Resample resample = Resample::bicubic;
  bool do_center_crop = true;
  int64_t crop_height = 224, crop_width = 224;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<double, 3> image_mean = {0.48145466, 0.4578275, 0.40821073};  // OPENAI_CLIP_MEAN
  std::array<double, 3> image_std = {0.26862954, 0.26130258, 0.27577711};   // OPENAI_CLIP_STD
  bool do_convert_rgb = true;
  // LLaVA-1.5's image_aspect_ratio "pad" (from LLaVA's config, not from
  // preprocessor_config.json): expand to a square of the mean colour first.
  bool pad_to_square = false;

  // Reads preprocessor_config.json's text as transformers does (missing or
  // null keys take CLIPImageProcessor's defaults; size / crop_size as an int,
  // a dict or a [height, width] list; use_square_size). Errors name `source`
  // and the key; an image_processor_type other than CLIPImageProcessor (or a
  // feature_extractor_type other than CLIPFeatureExtractor) is refused.
  static CLIPImageProcessorConfig from_json_text(const std::string& text, const std::string& source);
};

// PIL's Image.resize(size=(width, height), resample) of an RGB image,
// bit-exact with PIL 9.4 (Resample.c's algorithm, written anew).
Image resize_like_pil(const Image& image, int64_t width, int64_t height, Resample resample);

// transformers' get_resize_output_image_size(default_to_square=False): the
// (height, width) whose shorter side is `shortest_edge`.
std::pair<int64_t, int64_t> shortest_edge_output_size(int64_t height, int64_t width, int64_t shortest_edge);

// transformers' center_crop: top = (H - h) // 2 (floor), and where the image
// is smaller than the crop, zero padding placed with ceil((h - H) / 2) on top.
Image center_crop(const Image& image, int64_t height, int64_t width);

// LLaVA's expand2square: the image pasted at ((side - w) // 2, (side - h) // 2)
// on a side x side square of `background`; a square image is returned as is.
Image expand_to_square(const Image& image, const std::array<uint8_t, 3>& background);

class CLIPImageProcessor {
 public:
  explicit CLIPImageProcessor(CLIPImageProcessorConfig config);
  // dir/preprocessor_config.json; pad_to_square as LLaVA's image_aspect_ratio "pad".
  static CLIPImageProcessor from_folder(const std::string& dir, bool pad_to_square = false);

  const CLIPImageProcessorConfig& config() const { return config_; }
  // The pad colour: tuple(int(m * 255) for m in image_mean), as LLaVA computes it.
  std::array<uint8_t, 3> pad_color() const;

  // The uint8 image after the pad, resize and crop steps (what is normalised).
  Image prepare(const Image& image) const;
  // f32 [3, H, W]: one image's pixel_values.
  Tensor preprocess(const Image& image) const;
  // f32 [B, 3, H, W]; every image must come out the same size (it does with
  // do_center_crop or a {"height","width"} resize), else an error names it.
  Tensor preprocess_batch(const std::vector<Image>& images) const;

 private:
  CLIPImageProcessorConfig config_;
};

}  // namespace vlmc::data
