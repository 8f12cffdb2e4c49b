// Image encoding (image_encode.h).
//
// libpng and libjpeg report errors through a callback that must not return; as
// in image.cpp we leave it with longjmp back to a setjmp in a small frame that
// holds nothing with a destructor (the state lives in a job struct of the
// caller), and the caller frees the library's state and throws vlmc::Error.
#include "data/image_encode.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>

#include <jpeglib.h>
#include <png.h>

#include "core/error.h"

namespace vlmc::data {

namespace {

// ---- PNG ---------------------------------------------------------------------------------

struct PngWriteJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<uint8_t> bytes;
  char message[256] = {0};
};

void png_write_error(png_structp png, png_const_charp message) {
  auto* job = static_cast<PngWriteJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof job->message, "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_write_warning(png_structp, png_const_charp) {}

void png_write_bytes(png_structp png, png_bytep data, png_size_t length) {
  auto* job = static_cast<PngWriteJob*>(png_get_io_ptr(png));
  job->bytes.insert(job->bytes.end(), data, data + length);
}

void png_flush_nothing(png_structp) {}

// Nothing in this frame needs a destructor: longjmp may land here.
bool run_png_write(PngWriteJob& job, const uint8_t* pixels, png_uint_32 width, png_uint_32 height) {
  if (setjmp(png_jmpbuf(job.png))) return false;
  png_set_write_fn(job.png, &job, png_write_bytes, png_flush_nothing);
  png_set_IHDR(job.png, job.info, width, height, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(job.png, 9);
  png_write_info(job.png, job.info);
  for (png_uint_32 y = 0; y < height; ++y) png_write_row(job.png, pixels + static_cast<size_t>(y) * width);
  png_write_end(job.png, nullptr);
  return true;
}

// ---- JPEG --------------------------------------------------------------------------------

struct JpegWriteErrors {
  jpeg_error_mgr pub;  // first, so libjpeg's pointer to it is a pointer to us
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

struct JpegWriteJob {
  jpeg_compress_struct cinfo;
  JpegWriteErrors errors;
  unsigned char* buffer = nullptr;  // malloc'ed by jpeg_mem_dest
  unsigned long size = 0;
  bool created = false;
};

void jpeg_write_error_exit(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegWriteErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

void jpeg_write_no_output(j_common_ptr) {}

// Nothing in this frame needs a destructor: longjmp may land here.
bool run_jpeg_write(JpegWriteJob& job, const uint8_t* pixels, JDIMENSION width, JDIMENSION height, int quality) {
  if (setjmp(job.errors.jump)) return false;
  jpeg_create_compress(&job.cinfo);
  job.created = true;
  jpeg_mem_dest(&job.cinfo, &job.buffer, &job.size);
  job.cinfo.image_width = width;
  job.cinfo.image_height = height;
  job.cinfo.input_components = 1;
  job.cinfo.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&job.cinfo);
  jpeg_set_quality(&job.cinfo, quality, TRUE);
  jpeg_start_compress(&job.cinfo, TRUE);
  while (job.cinfo.next_scanline < height) {
    // libjpeg's row type is not const; it only reads the input rows.
    JSAMPROW row = const_cast<JSAMPLE*>(pixels + static_cast<size_t>(job.cinfo.next_scanline) * width);
    jpeg_write_scanlines(&job.cinfo, &row, 1);
  }
  jpeg_finish_compress(&job.cinfo);
  return true;
}

void check_image_size(int64_t width, int64_t height, const char* who) {
  VLMC_CHECK(width > 0 && height > 0 && width <= 65500 && height <= 65500, who, ": image size ", width, "x",
             height, " is outside 1..65500 per side");
}

}  // namespace

std::vector<uint8_t> encode_grey_png(const uint8_t* pixels, int64_t width, int64_t height) {
  check_image_size(width, height, "encode_grey_png");
  PngWriteJob job;
  job.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &job, png_write_error, png_write_warning);
  VLMC_CHECK(job.png != nullptr, "encode_grey_png: libpng could not start (out of memory)");
  struct Destroy {
    PngWriteJob* job;
    ~Destroy() { png_destroy_write_struct(&job->png, job->info ? &job->info : nullptr); }
  } destroy{&job};
  job.info = png_create_info_struct(job.png);
  VLMC_CHECK(job.info != nullptr, "encode_grey_png: libpng could not start (out of memory)");
  const bool ok = run_png_write(job, pixels, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height));
  VLMC_CHECK(ok, "encode_grey_png: libpng failed on a ", width, "x", height, " image: ", job.message);
  return std::move(job.bytes);
}

std::vector<uint8_t> encode_grey_jpeg(const uint8_t* pixels, int64_t width, int64_t height, int quality) {
  check_image_size(width, height, "encode_grey_jpeg");
  VLMC_CHECK(quality >= 1 && quality <= 100, "encode_grey_jpeg: quality ", quality, " is outside 1..100");
  JpegWriteJob job;
  job.cinfo.err = jpeg_std_error(&job.errors.pub);
  job.errors.pub.error_exit = jpeg_write_error_exit;
  job.errors.pub.output_message = jpeg_write_no_output;
  job.errors.message[0] = '\0';
  struct Destroy {
    JpegWriteJob* job;
    ~Destroy() {
      if (job->created) jpeg_destroy_compress(&job->cinfo);
      std::free(job->buffer);
    }
  } destroy{&job};
  const bool ok = run_jpeg_write(job, pixels, static_cast<JDIMENSION>(width), static_cast<JDIMENSION>(height),
                                 quality);
  VLMC_CHECK(ok, "encode_grey_jpeg: libjpeg failed on a ", width, "x", height, " image: ", job.errors.message);
  return std::vector<uint8_t>(job.buffer, job.buffer + job.size);
}

}  // namespace vlmc::data
