// JPEG (libjpeg-turbo) and PNG (libpng) decoding to RGB, converted as PIL 9.4
// converts (see image.h and docs/images.md).
//
// Both libraries report errors through a callback that must not return. We
// leave it with longjmp back to a setjmp in a small function whose own frame
// holds nothing with a destructor (all state lives in a job struct owned by
// the caller), so the jump skips only C frames; the caller then frees the
// library's state through a guard and throws vlmc::Error. No C++ exception
// ever crosses a C frame.
#include "data/image.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <jpeglib.h>
#include <jerror.h>  // JWRN_JPEG_EOF
#include <png.h>

#include "core/error.h"

namespace vlmc::data {

Image::Image(int64_t w, int64_t h, uint8_t r, uint8_t g, uint8_t b) : width(w), height(h) {
  VLMC_CHECK(w >= 0 && h >= 0 && w * h <= kMaxImagePixels, "Image: bad size ", w, "x", h);
  rgb.resize(static_cast<size_t>(w * h * 3));
  for (size_t i = 0; i < rgb.size(); i += 3) {
    rgb[i] = r;
    rgb[i + 1] = g;
    rgb[i + 2] = b;
  }
}

ImageFormat detect_image_format(const uint8_t* bytes, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return ImageFormat::jpeg;
  if (size >= 8 && std::memcmp(bytes, kPng, 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

namespace {

// Width x height within kMaxImagePixels, checked before any pixel buffer exists.
void check_dimensions(uint64_t width, uint64_t height, const std::string& name) {
  VLMC_CHECK(width > 0 && height > 0, "image ", name, ": zero size ", width, "x", height);
  VLMC_CHECK(width <= static_cast<uint64_t>(kMaxImagePixels) && height <= static_cast<uint64_t>(kMaxImagePixels) &&
                 width * height <= static_cast<uint64_t>(kMaxImagePixels),
             "image ", name, ": ", width, "x", height, " pixels is more than the ", kMaxImagePixels,
             " (2^28) vlmc decodes");
}

// A name for the formats we recognise but do not decode, for the error message.
std::string describe_unknown(const uint8_t* b, size_t n) {
  auto starts = [&](const char* magic) { return n >= std::strlen(magic) && std::memcmp(b, magic, std::strlen(magic)) == 0; };
  if (starts("GIF87a") || starts("GIF89a")) return "a GIF image";
  if (starts("BM")) return "possibly a BMP image";
  if (n >= 12 && std::memcmp(b, "RIFF", 4) == 0 && std::memcmp(b + 8, "WEBP", 4) == 0) return "a WebP image";
  if (starts("II*") || starts("MM\0*")) return "a TIFF image";
  std::string hex;
  char buf[4];
  for (size_t i = 0; i < n && i < 8; ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", b[i]);
    hex += buf;
  }
  return "unknown data starting with bytes " + hex;
}

// ---- JPEG -------------------------------------------------------------------

struct JpegErrors {
  jpeg_error_mgr pub;  // first, so libjpeg's pointer to it is a pointer to us
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

struct JpegJob {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  std::vector<uint8_t> samples;  // (height, width, components) as libjpeg writes them
  int64_t width = 0, height = 0;
  int components = 0;
  const std::string* name = nullptr;
  bool too_large = false;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// libjpeg recovers from most corrupt data with a warning; PIL ignores those
// warnings, so do we. The exception is running out of data: libjpeg would pad
// the image with grey, while PIL refuses a truncated file ("image file is
// truncated"), so that warning becomes an error.
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
    errors->truncated = true;
    std::snprintf(errors->message, sizeof errors->message, "truncated JPEG (premature end of data)");
    std::longjmp(errors->jump, 1);
  }
}

void jpeg_output_message(j_common_ptr) {}

// Runs libjpeg; false after an error, with the message in job.errors.message.
// Nothing in this frame needs a destructor: longjmp may land here.
bool run_jpeg(JpegJob& job, const uint8_t* bytes, size_t size) {
  if (setjmp(job.errors.jump)) return false;
  jpeg_create_decompress(&job.cinfo);
  jpeg_mem_src(&job.cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&job.cinfo, TRUE);
  if (job.cinfo.image_width == 0 || job.cinfo.image_height == 0 ||
      static_cast<uint64_t>(job.cinfo.image_width) * job.cinfo.image_height > static_cast<uint64_t>(kMaxImagePixels)) {
    job.too_large = true;  // reported by the caller, before libjpeg allocates its buffers
    job.width = job.cinfo.image_width;
    job.height = job.cinfo.image_height;
    return true;
  }
  // PIL 9.4's JpegDecode.c: grey as L, three components as RGB, four as CMYK;
  // libjpeg's defaults otherwise (ISLOW DCT, fancy upsampling, block smoothing).
  switch (job.cinfo.num_components) {
    case 1: job.cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: job.cinfo.out_color_space = JCS_RGB; break;
    case 4: job.cinfo.out_color_space = JCS_CMYK; break;
    default:
      std::snprintf(job.errors.message, sizeof job.errors.message, "a JPEG with %d components is not supported",
                    job.cinfo.num_components);
      return false;
  }
  job.cinfo.dct_method = JDCT_ISLOW;
  job.cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&job.cinfo);
  job.width = job.cinfo.output_width;
  job.height = job.cinfo.output_height;
  job.components = job.cinfo.output_components;
  const size_t row_bytes = static_cast<size_t>(job.width) * static_cast<size_t>(job.components);
  job.samples.resize(row_bytes * static_cast<size_t>(job.height));
  while (job.cinfo.output_scanline < job.cinfo.output_height) {
    JSAMPROW row = job.samples.data() + row_bytes * job.cinfo.output_scanline;
    jpeg_read_scanlines(&job.cinfo, &row, 1);
  }
  jpeg_finish_decompress(&job.cinfo);
  return true;
}

Image decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name) {
  JpegJob job{};
  job.name = &name;
  job.cinfo.err = jpeg_std_error(&job.errors.pub);
  job.errors.pub.error_exit = jpeg_error_exit;
  job.errors.pub.emit_message = jpeg_emit_message;
  job.errors.pub.output_message = jpeg_output_message;
  struct Destroy {
    jpeg_decompress_struct* cinfo;
    ~Destroy() { jpeg_destroy_decompress(cinfo); }  // safe on a half-made struct (mem == NULL)
  } destroy{&job.cinfo};

  const bool ok = run_jpeg(job, bytes, size);
  VLMC_CHECK(ok, "image ", name, ": ", job.errors.truncated ? "" : "bad JPEG: ", job.errors.message);
  if (job.too_large) check_dimensions(static_cast<uint64_t>(job.width), static_cast<uint64_t>(job.height), name);

  Image image;
  image.width = job.width;
  image.height = job.height;
  const size_t n = static_cast<size_t>(job.width * job.height);
  if (job.components == 3) {
    image.rgb = std::move(job.samples);
    return image;
  }
  image.rgb.resize(n * 3);
  const uint8_t* s = job.samples.data();
  uint8_t* d = image.rgb.data();
  if (job.components == 1) {
    for (size_t i = 0; i < n; ++i) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    return image;
  }
  // CMYK: PIL assumes Adobe's inverted polarity for every CMYK JPEG (rawmode
  // "CMYK;I"), then converts as its cmyk2rgb does: with nk = 255 - k,
  // channel = clip(nk - round(c * nk / 255)), the rounding of MULDIV255.
  for (size_t i = 0; i < n; ++i) {
    const int k = 255 - s[4 * i + 3];
    const int nk = 255 - k;
    for (int c = 0; c < 3; ++c) {
      const int v = 255 - s[4 * i + c];
      const int t = v * nk + 128;
      const int prod = ((t >> 8) + t) >> 8;
      const int out = nk - prod;
      d[3 * i + c] = static_cast<uint8_t>(out < 0 ? 0 : out > 255 ? 255 : out);
    }
  }
  return image;
}

// ---- PNG --------------------------------------------------------------------

struct PngJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* bytes = nullptr;
  size_t size = 0, pos = 0;
  char message[256] = {};
  bool truncated = false;
  bool rows_done = false;  // every pixel row decoded (only trailing chunks left)
  bool too_large = false;
  uint32_t width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  std::vector<uint8_t> raw;  // the rows after png_set_packing: 1 byte per sample below 8 bits
  size_t row_bytes = 0;
  int passes = 1;
  std::vector<uint8_t> palette;  // PLTE as r,g,b triples
};

void png_error_fn(png_structp png, png_const_charp message) {
  auto* job = static_cast<PngJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof job->message, "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}  // PIL ignores ancillary-chunk problems too

void png_read_fn(png_structp png, png_bytep out, png_size_t length) {
  auto* job = static_cast<PngJob*>(png_get_io_ptr(png));
  if (length > job->size - job->pos) {
    job->truncated = true;
    png_error(png, "truncated PNG (premature end of data)");
  }
  std::memcpy(out, job->bytes + job->pos, length);
  job->pos += length;
}

// Runs libpng; false after an error (message in job.message). As run_jpeg,
// nothing in this frame needs a destructor.
bool run_png(PngJob& job) {
  if (setjmp(png_jmpbuf(job.png))) return false;
  png_set_read_fn(job.png, &job, png_read_fn);
  png_read_info(job.png, job.info);
  png_uint_32 w = 0, h = 0;
  int interlace = 0;
  png_get_IHDR(job.png, job.info, &w, &h, &job.bit_depth, &job.color_type, &interlace, nullptr, nullptr);
  job.width = w;
  job.height = h;
  if (static_cast<uint64_t>(w) * h > static_cast<uint64_t>(kMaxImagePixels)) {
    job.too_large = true;
    return true;
  }
  if (job.color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp plte = nullptr;
    int count = 0;
    if (png_get_PLTE(job.png, job.info, &plte, &count) == PNG_INFO_PLTE)
      for (int i = 0; i < count; ++i) job.palette.insert(job.palette.end(), {plte[i].red, plte[i].green, plte[i].blue});
  }
  // No colour transforms: PIL's conversions are applied afterwards, by hand,
  // from the file's own samples. Only unpack sub-byte samples to one byte each
  // and let libpng undo Adam7 interlacing.
  if (job.bit_depth < 8) png_set_packing(job.png);
  job.passes = png_set_interlace_handling(job.png);
  png_read_update_info(job.png, job.info);
  job.row_bytes = png_get_rowbytes(job.png, job.info);
  job.raw.resize(job.row_bytes * h);
  // Row by row, each Adam7 pass over the whole image (libpng fills in the
  // pass's pixels): no array of row pointers, so no C++ object in this frame.
  for (int p = 0; p < job.passes; ++p)
    for (png_uint_32 y = 0; y < h; ++y) png_read_row(job.png, job.raw.data() + job.row_bytes * y, nullptr);
  job.rows_done = true;
  png_read_end(job.png, nullptr);
  return true;
}

Image decode_png(const uint8_t* bytes, size_t size, const std::string& name) {
  PngJob job;
  job.bytes = bytes;
  job.size = size;
  job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_error_fn, png_warning_fn);
  VLMC_CHECK(job.png != nullptr, "image ", name, ": libpng could not start (out of memory)");
  struct Destroy {
    PngJob* job;
    ~Destroy() { png_destroy_read_struct(&job->png, job->info ? &job->info : nullptr, nullptr); }
  } destroy{&job};
  job.info = png_create_info_struct(job.png);
  VLMC_CHECK(job.info != nullptr, "image ", name, ": libpng could not start (out of memory)");
  // libpng's own limits (1,000,000 per side by default) would refuse some
  // images our pixel bound allows; our bound is the one that applies.
  png_set_user_limits(job.png, 0x7fffffff, 0x7fffffff);

  const bool ok = run_png(job);
  // PIL stops reading once it has the pixels: a file cut after the image data
  // (IEND missing) still opens there, so it does here.
  VLMC_CHECK(ok || (job.rows_done && job.truncated), "image ", name, ": ", job.truncated ? "" : "bad PNG: ",
             job.message);
  if (job.too_large) check_dimensions(job.width, job.height, name);

  Image image;
  image.width = job.width;
  image.height = job.height;
  image.rgb.resize(static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3);
  const bool wide = job.bit_depth == 16;  // samples are 2 bytes, big-endian
  const int bytes_per_sample = wide ? 2 : 1;
  for (int64_t y = 0; y < image.height; ++y) {
    const uint8_t* row = job.raw.data() + job.row_bytes * static_cast<size_t>(y);
    for (int64_t x = 0; x < image.width; ++x) {
      uint8_t* out = image.pixel(y, x);
      switch (job.color_type) {
        case PNG_COLOR_TYPE_GRAY: {
          if (wide) {
            // PIL opens 16-bit grey as mode "I" (32-bit ints); "I" -> "RGB" clips to 0..255.
            const int v = (row[2 * x] << 8) | row[2 * x + 1];
            out[0] = out[1] = out[2] = static_cast<uint8_t>(v > 255 ? 255 : v);
          } else {
            // 1/2/4-bit grey is scaled to 0..255 (PIL's "1", "L;2" x85, "L;4" x17).
            const int max = (1 << job.bit_depth) - 1;
            out[0] = out[1] = out[2] = static_cast<uint8_t>(row[x] * 255 / max);
          }
          break;
        }
        case PNG_COLOR_TYPE_GRAY_ALPHA:  // L (or L's high byte); alpha dropped
          out[0] = out[1] = out[2] = row[2 * bytes_per_sample * x];
          break;
        case PNG_COLOR_TYPE_RGB:  // RGB (or each high byte); a tRNS colour key is ignored
        case PNG_COLOR_TYPE_RGB_ALPHA: {
          const int channels = job.color_type == PNG_COLOR_TYPE_RGB ? 3 : 4;
          for (int c = 0; c < 3; ++c) out[c] = row[(channels * x + c) * bytes_per_sample];
          break;
        }
        case PNG_COLOR_TYPE_PALETTE: {
          // An index past the palette reads PIL's default palette entry, the
          // grey ramp (i, i, i). tRNS (palette alpha) is dropped.
          const size_t i = row[x];
          if (3 * i + 2 < job.palette.size()) {
            std::memcpy(out, job.palette.data() + 3 * i, 3);
          } else {
            out[0] = out[1] = out[2] = static_cast<uint8_t>(i);
          }
          break;
        }
        default:
          throw Error(str("image ", name, ": PNG colour type ", job.color_type, " is not supported"));
      }
    }
  }
  return image;
}

}  // namespace

Image decode_image(const uint8_t* bytes, size_t size, const std::string& source_name) {
  VLMC_CHECK(size > 0, "image ", source_name, ": empty file, not an image");
  switch (detect_image_format(bytes, size)) {
    case ImageFormat::jpeg: return decode_jpeg(bytes, size, source_name);
    case ImageFormat::png: return decode_png(bytes, size, source_name);
    case ImageFormat::unknown: break;
  }
  throw Error(str("image ", source_name, ": not a JPEG or PNG image (", describe_unknown(bytes, size), ")"));
}

Image load_image(const std::string& path) {
  std::error_code ec;
  VLMC_CHECK(!std::filesystem::is_directory(path, ec), "image ", path, ": is a directory, not an image file");
  std::ifstream in(path, std::ios::binary);
  VLMC_CHECK(in.good(), "image ", path, ": cannot open (", std::strerror(errno), ")");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  VLMC_CHECK(!in.bad(), "image ", path, ": read error (", std::strerror(errno), ")");
  return decode_image(bytes.data(), bytes.size(), path);
}

}  // namespace vlmc::data
