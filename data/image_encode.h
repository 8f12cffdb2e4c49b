// Image encoding, for the tools that write image files (the mosaic
// exporter): 8-bit greyscale as PNG through libpng or as JPEG through
// libjpeg-turbo. data/image.h decodes them back.
#pragma once

#include <cstdint>
#include <vector>

namespace vlmc::data {

// An 8-bit greyscale image (rows top first, width bytes each) as PNG (libpng,
// colour type 0, no time chunk: the bytes depend only on the pixels) or as a
// baseline greyscale JFIF JPEG at `quality` (1..100). Sizes outside 1..65500
// per side and a libpng / libjpeg failure are vlmc::Errors naming the size.
std::vector<uint8_t> encode_grey_png(const uint8_t* pixels, int64_t width, int64_t height);
std::vector<uint8_t> encode_grey_jpeg(const uint8_t* pixels, int64_t width, int64_t height, int quality);

}  // namespace vlmc::data
