// The LLaVA loader (data/llava_loader.h): how many images per second its workers decode and
// preprocess, and how long a training step waits for its batch.
//
// At start it writes --images RGB JPEGs of 640x480 (quality 90, smooth colour gradients with
// a little noise, about the size of a COCO photo) and a stage-1 data.json over them (template
// plain; tokenizer tests/golden/tokenizer/legacy). Preprocessing is LLaVA-1.5's for CLIP
// ViT-L/14-336: pad to square, bicubic resize to 336, centre crop 336x336, normalise.
//
// Validation: the loader's first batch equals load_image + CLIPImageProcessor::preprocess of
// its images called directly (bit for bit), and its ids are the samples of the seed's order.
// Then, per worker count (0 = on the caller's thread, --workers-list, default 1,2):
//   rows "decode+preprocess": a consumer that takes batches and does nothing else, median ms per
//     image and images/s (per worker: images/s / workers);
//   "stage-1 wait": a consumer that spends --step-ms per batch (sleeping, as the host does
//     while a GPU step runs) reports the fraction of its time spent waiting in next() after
//     the first batch (which nothing can hide).
//
// --quick: 6 images of 160x120, batches of 2, 1 worker count (1), a 20 ms step.
// jpeglib.h needs size_t and FILE declared before it.
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "data/clip_image_processor.h"
#include "data/image.h"
#include "data/llava_loader.h"

using namespace vlmc;
namespace fs = std::filesystem;

namespace {

// An RGB JPEG through libjpeg (data/image_encode only writes grey ones).
std::vector<uint8_t> encode_rgb_jpeg(const std::vector<uint8_t>& rgb, int width, int height, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb.data() + static_cast<size_t>(cinfo.next_scanline) * width * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> out(buffer, buffer + size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

// Gradients that differ per image, plus noise so the JPEG is not trivially small.
std::vector<uint8_t> photo(int width, int height, int seed) {
  std::vector<uint8_t> rgb(static_cast<size_t>(width * height * 3));
  uint32_t state = 2463534242u + static_cast<uint32_t>(seed) * 7919u;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      const int noise = static_cast<int>(state % 24);
      uint8_t* p = rgb.data() + (static_cast<size_t>(y) * width + x) * 3;
      p[0] = static_cast<uint8_t>((x * 255 / width + seed * 37 + noise) % 256);
      p[1] = static_cast<uint8_t>((y * 255 / height + seed * 11 + noise) % 256);
      p[2] = static_cast<uint8_t>(((x + y) * 128 / (width + height) + seed * 5 + noise) % 256);
    }
  return rgb;
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    out.push_back(std::stoi(text.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bench::CommonFlags flags;
  int images = 0, batch = 0, width = 640, height = 480;
  double step_ms = -1;
  std::vector<int> worker_counts;
  std::string tokenizer_dir = (fs::path(VLMC_SOURCE_DIR) / "tests/golden/tokenizer/legacy").string();
  try {
    if (!bench::parse_common_flags(argc, argv,
                                   "usage: bench_loader [--threads N] [--repeats N] [--json PATH] [--quick] "
                                   "[--images N] [--batch B] [--step-ms MS] [--workers-list 1,2] [--tokenizer DIR]",
                                   flags))
      return 0;
    for (size_t i = 0; i < flags.rest.size(); ++i) {
      const std::string& arg = flags.rest[i];
      if (i + 1 >= flags.rest.size()) throw std::runtime_error("flag '" + arg + "' needs a value");
      const std::string& value = flags.rest[++i];
      if (arg == "--images") images = std::stoi(value);
      else if (arg == "--batch") batch = std::stoi(value);
      else if (arg == "--step-ms") step_ms = std::stod(value);
      else if (arg == "--workers-list") worker_counts = parse_list(value);
      else if (arg == "--tokenizer") tokenizer_dir = value;
      else throw std::runtime_error("unknown flag '" + arg + "'");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 2;
  }
  if (flags.quick) {
    width = 160;
    height = 120;
  }
  if (images == 0) images = flags.quick ? 6 : 64;
  if (batch == 0) batch = flags.quick ? 2 : 16;
  if (step_ms < 0) step_ms = flags.quick ? 20 : 1000;
  if (worker_counts.empty()) worker_counts = flags.quick ? std::vector<int>{1} : std::vector<int>{1, 2};

  // The folder: JPEGs and a stage-1 data.json.
  const fs::path dir = fs::temp_directory_path() / ("vlmc_bench_loader_" + std::to_string(::getpid()));
  fs::create_directories(dir / "images");
  std::string json = "[";
  size_t jpeg_bytes = 0;
  for (int i = 0; i < images; ++i) {
    const auto bytes = encode_rgb_jpeg(photo(width, height, i), width, height, 90);
    jpeg_bytes += bytes.size();
    std::ofstream(dir / "images" / (std::to_string(i) + ".jpg"), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    json += std::string(i ? ",\n" : "\n") + R"({"id": ")" + std::to_string(i) + R"(", "image": "images/)" +
            std::to_string(i) + R"(.jpg", "conversations": [{"from": "human", "value": "<image>"}, )" +
            R"({"from": "gpt", "value": "a photo of a street with a red bus and people walking by"}]})";
  }
  std::ofstream(dir / "data.json") << json << "\n]\n";
  std::printf("%d RGB JPEGs of %dx%d, %.0f KB each on average; batches of %d; simulated step %.0f ms\n", images,
              width, height, jpeg_bytes / 1024.0 / images, batch, step_ms);

  int status = 0;
  try {
    data::LlavaReadOptions read;
    read.image_folder = dir.string();
    const data::LlavaDataset dataset = data::read_llava_json((dir / "data.json").string(), read);
    const auto tokenizer = data::SentencePieceTokenizer::from_folder(tokenizer_dir);
    const auto& conv = data::conversation_template("plain");
    data::CLIPImageProcessorConfig c;  // CLIP ViT-L/14-336 as LLaVA-1.5 feeds it
    c.shortest_edge = 336;
    c.crop_height = c.crop_width = 336;
    c.pad_to_square = true;
    const data::CLIPImageProcessor processor(c);
    auto options = [&](int workers, int64_t epochs) {
      data::LlavaLoaderOptions o;
      o.batch_size = batch;
      o.workers = workers;
      o.prefetch = std::max(2, workers);
      o.seed = 1;
      o.epochs = epochs;
      return o;
    };

    bench::Report report("LLaVA loader: JPEG decode + CLIP-L/336 preprocessing + plain template");
    const std::string shape = std::to_string(width) + "x" + std::to_string(height) + " jpg->3x336x336 B=" +
                              std::to_string(batch);
    std::vector<std::string> first_ids;
    for (const int workers : worker_counts) {
      bench::Row row;
      row.kernel = "llava_loader";
      row.version = "workers=" + std::to_string(workers);
      row.device = "cpu";
      row.shape = shape;
      // Validate: the first batch against the processor called directly.
      {
        data::LlavaLoader loader(dataset, tokenizer, conv, processor, options(workers, 1));
        const data::LlavaBatch b = *loader.next();
        if (first_ids.empty()) first_ids = b.ids;
        std::vector<float> expected;
        for (const std::string& id : b.ids) {
          const auto v = processor.preprocess(data::load_image((dir / "images" / (id + ".jpg")).string())).to_vector<float>();
          expected.insert(expected.end(), v.begin(), v.end());
        }
        const std::vector<float> got = b.pixel_values.to_vector<float>();
        row.valid = b.ids == first_ids && got.size() == expected.size() &&
                    std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0;
        row.max_rel_error = row.valid ? 0 : 1;
      }
      if (row.valid) {
        // Throughput: every image of one epoch per repeat, the consumer doing nothing.
        std::vector<double> per_image_ms;
        for (int r = 0; r < flags.warmup(1) + flags.repeats; ++r) {
          const auto start = std::chrono::steady_clock::now();
          data::LlavaLoader loader(dataset, tokenizer, conv, processor, options(workers, 1));
          int64_t taken = 0;
          while (auto b = loader.next()) taken += static_cast<int64_t>(b->ids.size());
          const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
          if (r >= flags.warmup(1)) per_image_ms.push_back(ms / static_cast<double>(taken));
        }
        std::sort(per_image_ms.begin(), per_image_ms.end());
        row.timing.median_ms = per_image_ms[per_image_ms.size() / 2];
        row.timing.min_ms = per_image_ms.front();
        row.timing.repeats = static_cast<int>(per_image_ms.size());
        const double rate = 1000.0 / row.timing.median_ms;
        std::printf("workers=%d: %.1f images/s (%.1f per worker), %.1f ms per image\n", workers, rate,
                    workers ? rate / workers : rate, row.timing.median_ms);

        // A stage-1 step of step_ms per batch: how long the consumer waits.
        data::LlavaLoader loader(dataset, tokenizer, conv, processor, options(workers, 1));
        const auto start = std::chrono::steady_clock::now();
        auto first = loader.next();
        const double first_wait = loader.stats().wait_seconds;
        int steps = 1;
        for (;;) {
          std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_ms));
          if (!loader.next()) break;
          ++steps;
        }
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double waited = loader.stats().wait_seconds - first_wait;
        std::printf("workers=%d: stage-1 steps of %.0f ms: %d steps, waited %.3f s of %.3f s after the first batch "
                    "(%.1f%%; the first batch took %.3f s)\n",
                    workers, step_ms, steps, waited, total - first_wait, 100.0 * waited / (total - first_wait),
                    first_wait);
      }
      report.add(row);
    }
    report.print();
    if (!flags.json.empty()) report.write_json(flags.json);
    status = bench::exit_status(report, flags, "bench_loader");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    status = 1;
  }
  fs::remove_all(dir);
  return status;
}
