// JPEG and PNG images decoded to 8-bit RGB, pixel for pixel what PIL 9.4's
// `Image.open(f).convert("RGB")` gives (docs/images.md), which is what LLaVA
// and transformers feed their vision towers.
//
// JPEG goes through libjpeg-turbo (the library PIL itself links, with PIL's
// settings: ISLOW DCT, fancy upsampling; CMYK read with Adobe's inverted
// polarity), PNG through libpng. The format comes from the first bytes, never
// from the file name. Grey, grey+alpha, palette (with or without tRNS), RGBA
// and 16-bit PNGs are converted as PIL converts them: alpha and tRNS are
// dropped, 16-bit RGB/RGBA/LA keep the high byte, 16-bit grey is clipped to
// 255 (PIL opens it as mode "I").
//
// Every failure (unreadable, empty, not a JPEG/PNG, truncated, corrupt, more
// than kMaxImagePixels pixels) throws vlmc::Error naming the source.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vlmc::data {

// Refused before any pixel buffer is allocated: 2^28 pixels (768 MiB as RGB).
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

// An 8-bit RGB image, rows top to bottom: rgb[(y * width + x) * 3 + c].
struct Image {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> rgb;  // (height, width, 3)

  Image() = default;
  // A width x height image filled with one colour.
  Image(int64_t width, int64_t height, uint8_t r = 0, uint8_t g = 0, uint8_t b = 0);

  uint8_t* pixel(int64_t y, int64_t x) { return rgb.data() + (y * width + x) * 3; }
  const uint8_t* pixel(int64_t y, int64_t x) const { return rgb.data() + (y * width + x) * 3; }
};

enum class ImageFormat { unknown, jpeg, png };

// From the magic bytes: FF D8 FF (JPEG), 89 'PNG' 0D 0A 1A 0A (PNG).
ImageFormat detect_image_format(const uint8_t* bytes, size_t size);

// Decodes a JPEG or PNG held in memory; source_name names it in errors.
Image decode_image(const uint8_t* bytes, size_t size, const std::string& source_name);

// Reads and decodes a file.
Image load_image(const std::string& path);

}  // namespace vlmc::data
