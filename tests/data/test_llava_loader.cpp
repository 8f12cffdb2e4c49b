// The LLaVA loader (data/llava_loader.h) over image files and LLaVA JSON written at test time:
// the same seed gives the same batches with 0, 1 or 3 workers; epochs are reshuffled; a loader
// resumed from any batch's state continues bit for bit; two processes' shares make the global
// batch; group_by_modality_length batches one modality (LLaVA's order structure, checked on
// sample_order's functions too); a missing image and a corrupt JPEG are skipped and counted,
// or with strict an error naming the sample and the file; an early stop does not hang. The
// end-to-end case reads `vlmc data export-mosaics`'s folder when Debian's Fashion-MNIST is there.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image_encode.h"
#include "data/llava_loader.h"
#include "data/sample_order.h"
#include "tests/support/temp_dir.h"
#include "train/idx.h"
#include "train/mosaic_export.h"

using namespace vlmc::data;
using vlmc::Tensor;
using vlmc::test::TempDir;
namespace fs = std::filesystem;

namespace {

const fs::path kTokenizers = fs::path(VLMC_GOLDEN_DIR) / "tokenizer";

const SentencePieceTokenizer& tokenizer() {
  static const SentencePieceTokenizer tok = SentencePieceTokenizer::from_folder((kTokenizers / "legacy").string());
  return tok;
}

// A small CLIP-like processor: shortest edge 12, centre crop 12x12, pad to square.
const CLIPImageProcessor& processor() {
  static const CLIPImageProcessor p = [] {
    CLIPImageProcessorConfig c;
    c.shortest_edge = 12;
    c.crop_height = c.crop_width = 12;
    c.pad_to_square = true;
    return CLIPImageProcessor(c);
  }();
  return p;
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                             static_cast<std::streamsize>(bytes.size()));
}

std::string repeat_words(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += " word";
  return out;
}

// A LLaVA folder: `images` samples "m<i>" with one image each (JPEG, every third a PNG, sizes
// and pixels varying), `texts` text-only samples "t<i>", and optionally a sample "missing"
// whose image file is absent and one "corrupt" whose JPEG is garbage after its magic bytes.
struct Folder {
  TempDir dir{"llava_loader"};
  LlavaDataset data;

  Folder(int images, int texts, bool bad = false) {
    std::string json = "[";
    auto add = [&json](const std::string& sample) { json += (json.size() > 1 ? ",\n" : "\n") + sample; };
    for (int i = 0; i < images; ++i) {
      const int w = 14 + (i * 5) % 11, h = 10 + (i * 3) % 9;
      std::vector<uint8_t> grey(static_cast<size_t>(w * h));
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          grey[static_cast<size_t>(y * w + x)] = static_cast<uint8_t>((x * 7 + y * 13 + i * 29) % 256);
      const bool png = i % 3 == 2;
      const std::string name = "img/m" + std::to_string(i) + (png ? ".png" : ".jpg");
      write_bytes(dir.path / name, png ? encode_grey_png(grey.data(), w, h) : encode_grey_jpeg(grey.data(), w, h, 90));
      add(R"({"id": "m)" + std::to_string(i) + R"(", "image": ")" + name +
          R"(", "conversations": [{"from": "human", "value": "<image>\nWhat is this)" + repeat_words(i % 4) +
          R"(?"}, {"from": "gpt", "value": "A picture)" + repeat_words(i % 5) + R"(."}]})");
    }
    for (int t = 0; t < texts; ++t)
      add(R"({"id": "t)" + std::to_string(t) + R"(", "conversations": [{"from": "human", "value": "Hello there)" +
          repeat_words(t % 6) + R"("}, {"from": "gpt", "value": "Hi."}]})");
    if (bad) {
      add(R"({"id": "missing", "image": "img/missing.jpg", "conversations": [)"
          R"({"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "None."}]})");
      std::vector<uint8_t> corrupt = {0xFF, 0xD8, 0xFF, 0xE0};
      for (int i = 0; i < 200; ++i) corrupt.push_back(static_cast<uint8_t>(i * 37));
      write_bytes(dir.path / "img/corrupt.jpg", corrupt);
      add(R"({"id": "corrupt", "image": "img/corrupt.jpg", "conversations": [)"
          R"({"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Noise."}]})");
    }
    json += "\n]\n";
    LlavaReadOptions options;
    options.image_folder = dir.path.string();
    data = read_llava_json(dir.write("data.json", json), options);
  }
};

LlavaLoaderOptions opts(int64_t batch, int workers, uint64_t seed = 7, int64_t epochs = 2) {
  LlavaLoaderOptions o;
  o.batch_size = batch;
  o.workers = workers;
  o.prefetch = workers == 3 ? 3 : 2;
  o.seed = seed;
  o.epochs = epochs;
  return o;
}

std::vector<LlavaBatch> take(LlavaLoader& loader, int64_t n = -1) {
  std::vector<LlavaBatch> out;
  while (n < 0 || static_cast<int64_t>(out.size()) < n) {
    std::optional<LlavaBatch> b = loader.next();
    if (!b) break;
    out.push_back(std::move(*b));
  }
  return out;
}

std::vector<LlavaBatch> all_batches(const Folder& f, const LlavaLoaderOptions& o,
                                    const char* conv_name = "vicuna_v1") {
  LlavaLoader loader(f.data, tokenizer(), conversation_template(conv_name), processor(), o);
  return take(loader);
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  if (a.dtype() == vlmc::DType::i64) return a.to_vector<int64_t>() == b.to_vector<int64_t>();
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();  // bit for bit, not ==
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Bit for bit: tensors, ids, image counts, epoch and state.
void require_same(const LlavaBatch& a, const LlavaBatch& b) {
  REQUIRE(a.ids == b.ids);
  REQUIRE(a.images == b.images);
  REQUIRE(a.epoch == b.epoch);
  REQUIRE(a.state == b.state);
  REQUIRE(same_tensor(a.input_ids, b.input_ids));
  REQUIRE(same_tensor(a.labels, b.labels));
  REQUIRE(same_tensor(a.attention_mask, b.attention_mask));
  REQUIRE(same_tensor(a.pixel_values, b.pixel_values));
}

void require_same(const std::vector<LlavaBatch>& a, const std::vector<LlavaBatch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) require_same(a[i], b[i]);
}

std::vector<std::string> all_ids(const std::vector<LlavaBatch>& batches, size_t from, size_t to) {
  std::vector<std::string> out;
  for (size_t i = from; i < to; ++i) out.insert(out.end(), batches[i].ids.begin(), batches[i].ids.end());
  return out;
}

}  // namespace

TEST_CASE("llava loader: batches are what prepare_inputs takes", "[llava_loader]") {
  const Folder f(10, 4);
  const auto batches = all_batches(f, opts(4, 0, 7, 1));
  REQUIRE(batches.size() == 3);  // floor(14 / 4)
  const int64_t pad = tokenizer().unk_id();  // LLaVA's pad_token = unk_token
  for (const LlavaBatch& b : batches) {
    const auto ids = b.input_ids.to_vector<int64_t>();
    const auto labels = b.labels.to_vector<int64_t>();
    const auto mask = b.attention_mask.to_vector<int64_t>();
    const int64_t B = b.input_ids.shape()[0], T = b.input_ids.shape()[1];
    REQUIRE(B == 4);
    REQUIRE(b.labels.shape() == b.input_ids.shape());
    int64_t placeholders = 0, real = 0;
    for (int64_t i = 0; i < B; ++i) {
      int64_t length = 0, row_images = 0;
      for (int64_t t = 0; t < T; ++t) {
        const size_t at = static_cast<size_t>(i * T + t);
        if (mask[at] == 0) {  // right padding only
          CHECK(ids[at] == pad);
          CHECK(labels[at] == kIgnoreIndex);
          continue;
        }
        REQUIRE(length == t);
        ++length;
        if (ids[at] == kImageTokenIndex) ++row_images;
      }
      CHECK(ids[static_cast<size_t>(i * T)] == tokenizer().bos_id());
      CHECK(row_images == b.images[static_cast<size_t>(i)]);
      CHECK(row_images == (b.ids[static_cast<size_t>(i)][0] == 'm' ? 1 : 0));
      placeholders += row_images;
      real += length - row_images;
    }
    CHECK(b.text_tokens == real);
    if (placeholders == 0) {
      CHECK_FALSE(b.pixel_values.defined());
    } else {
      CHECK(b.pixel_values.shape() == vlmc::Shape{placeholders, 3, 12, 12});
    }
  }
}

TEST_CASE("llava loader: one seed gives the same batches with 0, 1 or 3 workers", "[llava_loader]") {
  const Folder f(20, 6);
  const auto reference = all_batches(f, opts(4, 0));
  REQUIRE(reference.size() == 13);  // floor(2 * 26 / 4)
  require_same(all_batches(f, opts(4, 0)), reference);
  require_same(all_batches(f, opts(4, 1)), reference);
  require_same(all_batches(f, opts(4, 3)), reference);
  LlavaLoaderOptions tight = opts(4, 3);
  tight.prefetch = 1;
  require_same(all_batches(f, tight), reference);
  // Another seed, another order.
  CHECK(all_ids(all_batches(f, opts(4, 0, 8)), 0, 6) != all_ids(reference, 0, 6));
}

TEST_CASE("llava loader: every epoch visits every sample once, reshuffled", "[llava_loader]") {
  const Folder f(16, 8);  // 24 samples, 6 batches of 4 per epoch
  const auto batches = all_batches(f, opts(4, 2, 3, 3));
  REQUIRE(batches.size() == 18);
  std::vector<std::vector<std::string>> epochs;
  for (size_t e = 0; e < 3; ++e) {
    for (size_t i = 6 * e; i < 6 * e + 6; ++i) CHECK(batches[i].epoch == static_cast<int64_t>(e));
    epochs.push_back(all_ids(batches, 6 * e, 6 * e + 6));
    CHECK(std::set<std::string>(epochs[e].begin(), epochs[e].end()).size() == 24);
  }
  CHECK(epochs[0] != epochs[1]);
  CHECK(epochs[1] != epochs[2]);
  CHECK(batches.back().state == LoaderState{18, 3, 0, 0});
}

TEST_CASE("llava loader: a loader resumed from a batch's state gives the batches that followed", "[llava_loader]") {
  const Folder f(18, 5, true);  // 25 samples, 2 of them bad: the places are not a formula
  LlavaLoaderOptions base = opts(4, 0, 11, 3);
  const auto reference = all_batches(f, base);
  REQUIRE(reference.size() == 18);  // floor(3 * 25 / 4)
  for (const int workers : {0, 1, 3}) {
    for (const int64_t stop : {1, 5, 6, 7, 13}) {  // 6 and 7 are on either side of an epoch's end
      LlavaLoaderOptions o = opts(4, workers, 11, 3);
      LoaderState state;
      {
        LlavaLoader first(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), o);
        const auto head = take(first, stop);
        require_same(head, std::vector<LlavaBatch>(reference.begin(), reference.begin() + stop));
        state = first.state();
        REQUIRE(state == reference[static_cast<size_t>(stop - 1)].state);
      }
      o.resume = state;
      LlavaLoader resumed(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), o);
      CHECK(resumed.state() == state);
      require_same(take(resumed), std::vector<LlavaBatch>(reference.begin() + stop, reference.end()));
      CHECK(resumed.state().skipped == reference.back().state.skipped);
    }
  }
  CHECK(reference.back().state.skipped >= 4);  // both bad samples, in each of the first 2 epochs
}

TEST_CASE("llava loader: two processes' shares are the global batch", "[llava_loader]") {
  const Folder f(18, 6);  // 24 samples: whole global batches of 6 every epoch
  const auto global = all_batches(f, opts(6, 0, 5, 2));
  REQUIRE(global.size() == 8);
  std::vector<std::vector<LlavaBatch>> shares;
  for (int rank = 0; rank < 2; ++rank) {
    LlavaLoaderOptions o = opts(6, rank == 0 ? 0 : 3, 5, 2);
    o.world_size = 2;
    o.rank = rank;
    LlavaLoader loader(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), o);
    CHECK(loader.per_process_batch() == 3);
    CHECK(loader.total_steps() == 8);
    shares.push_back(take(loader));
  }
  for (size_t s = 0; s < global.size(); ++s) {
    REQUIRE(shares[0][s].ids.size() == 3);
    std::vector<std::string> both = shares[0][s].ids;
    both.insert(both.end(), shares[1][s].ids.begin(), shares[1][s].ids.end());
    CHECK(both == global[s].ids);
    // The pixels of the two shares, one after the other, are the global batch's.
    std::vector<float> pixels;
    for (int r = 0; r < 2; ++r)
      if (shares[static_cast<size_t>(r)][s].pixel_values.defined()) {
        const auto v = shares[static_cast<size_t>(r)][s].pixel_values.to_vector<float>();
        pixels.insert(pixels.end(), v.begin(), v.end());
      }
    const Tensor& g = global[s].pixel_values;
    CHECK(pixels == (g.defined() ? g.to_vector<float>() : std::vector<float>{}));
  }
  LlavaLoaderOptions odd = opts(5, 0);
  odd.world_size = 2;
  CHECK_THROWS_WITH(LlavaLoader(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), odd),
                    Catch::Contains("batch_size 5 does not split over the 2 processes"));
}

TEST_CASE("sample order: LLaVA's split_to_even_chunks and length grouping", "[llava_loader]") {
  const std::vector<int64_t> lengths = {10, 9, 8, 7, 1, 1};
  CHECK(split_to_even_chunks({0, 1, 2, 3, 4, 5}, lengths, 2) ==
        std::vector<std::vector<int64_t>>{{0, 3, 4}, {1, 2, 5}});
  CHECK(split_to_even_chunks({0, 1, 2, 3, 4}, lengths, 2) == std::vector<std::vector<int64_t>>{{0, 2, 4}, {1, 3}});
  CHECK(process_share(11, 2, 2, 1) == std::vector<int64_t>{2, 3, 6, 7, 10});
  CHECK(seeded_permutation(50, 1, 0) == seeded_permutation(50, 1, 0));
  CHECK(seeded_permutation(50, 1, 0) != seeded_permutation(50, 1, 1));

  // Mixed modalities, batch 3 over 2 processes: megabatches of 6, one modality each, each split
  // into two length-balanced chunks sorted longest first; LLaVA's leftover megabatch last.
  std::vector<int64_t> mixed;
  for (int i = 0; i < 40; ++i) mixed.push_back(i % 3 == 0 ? -(1 + i % 7) : 1 + (i * 5) % 13);  // 14 text, 26 image
  const auto order = modality_grouped_order(mixed, 3, 2, 9, 0);
  REQUIRE(std::set<int64_t>(order.begin(), order.end()).size() == 40);
  // 26 image = 4 full megabatches + 2 left, 14 text = 2 full + 2 left: 6 pure megabatches, then
  // the 4 left over, sorted by index.
  for (size_t m = 0; m < 6; ++m) {
    const bool image = mixed[static_cast<size_t>(order[6 * m])] > 0;
    for (size_t j = 0; j < 6; ++j) CHECK((mixed[static_cast<size_t>(order[6 * m + j])] > 0) == image);
    for (size_t chunk = 0; chunk < 2; ++chunk)  // each process's batch: longest first
      for (size_t j = 1; j < 3; ++j)
        CHECK(std::abs(mixed[static_cast<size_t>(order[6 * m + 3 * chunk + j - 1])]) >=
              std::abs(mixed[static_cast<size_t>(order[6 * m + 3 * chunk + j])]));
  }
  CHECK(std::is_sorted(order.begin() + 36, order.end()));
  CHECK(modality_grouped_order(mixed, 3, 2, 9, 0) == order);
  CHECK(modality_grouped_order(mixed, 3, 2, 9, 1) != order);
}

TEST_CASE("llava loader: group_by_modality_length makes one-modality batches", "[llava_loader]") {
  const Folder f(24, 16);  // 40 samples, batches of 4: 6 image megabatches, 4 text ones
  LlavaLoaderOptions o = opts(4, 2, 13, 2);
  o.group_by_modality_length = true;
  const auto grouped = all_batches(f, o);
  REQUIRE(grouped.size() == 20);
  auto modalities = [](const LlavaBatch& b) {
    std::set<char> kinds;
    for (const auto& id : b.ids) kinds.insert(id[0]);
    return kinds.size();
  };
  for (size_t e = 0; e < 2; ++e) {
    // 5 + 3 full megabatches shuffled, then LLaVA's leftover (the last of each modality) mixed.
    for (size_t i = 10 * e; i < 10 * e + 8; ++i) CHECK(modalities(grouped[i]) == 1);
    const auto tail = all_ids(grouped, 10 * e + 8, 10 * e + 10);
    CHECK(std::count_if(tail.begin(), tail.end(), [](const std::string& id) { return id[0] == 'm'; }) == 4);
  }
  CHECK(all_ids(grouped, 0, 10) != all_ids(grouped, 10, 20));
  // Without grouping the same data mixes them.
  o.group_by_modality_length = false;
  const auto plain = all_batches(f, o);
  CHECK(std::count_if(plain.begin(), plain.end(), [&](const LlavaBatch& b) { return modalities(b) == 2; }) > 2);
}

TEST_CASE("llava loader: a missing image and a corrupt JPEG are skipped and counted", "[llava_loader]") {
  const Folder f(14, 0, true);  // 16 samples, 2 bad
  for (const int workers : {0, 3}) {
    LlavaLoader loader(f.data, tokenizer(), conversation_template("plain"), processor(), opts(4, workers, 2, 2));
    const auto batches = take(loader);
    REQUIRE(batches.size() == 8);
    std::set<std::string> seen;
    for (const auto& b : batches) {
      CHECK(b.ids.size() == 4);  // a skipped sample's place is taken by the next one
      CHECK(b.pixel_values.shape()[0] == 4);
      seen.insert(b.ids.begin(), b.ids.end());
    }
    CHECK(seen.size() == 14);
    CHECK_FALSE(seen.count("missing"));
    CHECK_FALSE(seen.count("corrupt"));
    const LoaderStats& stats = loader.stats();
    CHECK(stats.skipped >= 2);
    CHECK(stats.skipped == loader.state().skipped);
    REQUIRE(stats.first_skipped.size() >= 2);
    std::set<std::string> named;
    for (const auto& s : stats.first_skipped) {
      named.insert(s.id);
      CHECK(s.file.find("img/" + s.id + ".jpg") != std::string::npos);
      CHECK_FALSE(s.reason.empty());
    }
    CHECK(named == std::set<std::string>{"missing", "corrupt"});
    CHECK_THAT(stats.summary(), Catch::Contains("bad samples skipped") && Catch::Contains("missing"));
    CHECK(stats.batches == 8);
    CHECK(stats.samples == 32);
  }
}

TEST_CASE("llava loader: with strict, the first bad sample is an error naming it and its file", "[llava_loader]") {
  const Folder f(14, 0, true);
  // Where the first bad sample falls in the stream decides the batch that fails.
  const auto reference = [&] {
    LlavaLoader loader(f.data, tokenizer(), conversation_template("plain"), processor(), opts(4, 0, 2, 2));
    return take(loader);
  }();
  size_t failing = 0;
  std::string first_bad;
  for (; failing < reference.size(); ++failing)
    if (!reference[failing].skipped.empty()) {
      first_bad = reference[failing].skipped[0].id;
      break;
    }
  REQUIRE(!first_bad.empty());
  for (const int workers : {0, 3}) {
    LlavaLoaderOptions o = opts(4, workers, 2, 2);
    o.strict = true;
    LlavaLoader loader(f.data, tokenizer(), conversation_template("plain"), processor(), o);
    for (size_t i = 0; i < failing; ++i) require_same(*loader.next(), reference[i]);
    try {
      loader.next();
      FAIL("no error");
    } catch (const vlmc::Error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains("data.strict") && Catch::Contains("'" + first_bad + "'") &&
                           Catch::Contains("img/" + first_bad + ".jpg") && Catch::Contains("data.json"));
    }
    CHECK_THROWS_WITH(loader.next(), Catch::Contains(first_bad));  // and again
  }
}

TEST_CASE("llava loader: a consumer that stops early does not hang", "[llava_loader]") {
  const Folder f(12, 4);
  for (const int taken : {0, 1, 3}) {
    LlavaLoaderOptions o = opts(2, 3, 1, 50);
    o.prefetch = 4;
    LlavaLoader loader(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), o);
    CHECK(take(loader, taken).size() == static_cast<size_t>(taken));
  }  // each destructor joins its workers
  // The end: nothing after total_steps, and next() says so again.
  LlavaLoader loader(f.data, tokenizer(), conversation_template("vicuna_v1"), processor(), opts(8, 2, 1, 1));
  CHECK(take(loader).size() == 2);
  CHECK_FALSE(loader.next().has_value());
  CHECK_FALSE(loader.next().has_value());
}

TEST_CASE("llava loader: options it cannot use are errors naming them", "[llava_loader]") {
  const Folder f(4, 0);
  const auto& conv = conversation_template("plain");
  LlavaLoaderOptions o = opts(8, 0, 1, 1);
  CHECK_THROWS_WITH(LlavaLoader(f.data, tokenizer(), conv, processor(), o),
                    Catch::Contains("4 usable samples") && Catch::Contains("no global batch of 8"));
  o = opts(2, 0, 1, 1);
  o.prefetch = 0;
  CHECK_THROWS_WITH(LlavaLoader(f.data, tokenizer(), conv, processor(), o), Catch::Contains("data.prefetch"));
  o = opts(2, 0, 1, 1);
  o.resume.cursor = 4;
  CHECK_THROWS_WITH(LlavaLoader(f.data, tokenizer(), conv, processor(), o), Catch::Contains("resume state"));
}

TEST_CASE("llava loader: vlmc data export-mosaics's folder, end to end", "[llava_loader]") {
  const char* env = std::getenv("VLMC_FASHION_MNIST_DIR");
  const std::string data_dir = env ? env : vlmc::train::kFashionMnistDir;
  if (!fs::exists(fs::path(data_dir) / "train-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST not found in " << data_dir << " (Debian's dataset-fashion-mnist): skipped");
    return;
  }
  TempDir dir("llava_loader_mosaics");
  vlmc::train::MosaicExportOptions e;
  e.out = (dir.path / "m").string();
  e.count = 12;
  e.questions_per_image = 2;
  e.image_format = vlmc::train::ExportImageFormat::jpeg;
  e.data_dir = data_dir;
  vlmc::train::export_mosaics(e);
  LlavaReadOptions r;
  r.image_folder = e.out;
  r.conversation_template = "plain";
  const LlavaDataset captions = read_llava_json(e.out + "/captions.json", r);
  REQUIRE(captions.size() == 12);
  const CLIPImageProcessor clip{CLIPImageProcessorConfig{}};  // 224 x 224, OpenAI's CLIP statistics
  LlavaLoaderOptions o = opts(4, 2, 0, 1);
  LlavaLoader loader(captions, tokenizer(), conversation_template("plain"), clip, o);
  const auto batches = take(loader);
  REQUIRE(batches.size() == 3);
  for (const auto& b : batches) {
    CHECK(b.pixel_values.shape() == vlmc::Shape{4, 3, 224, 224});
    CHECK(b.ids[0].rfind("mosaic-", 0) == 0);
    const auto ids = b.input_ids.to_vector<int64_t>();
    CHECK(ids[1] == kImageTokenIndex);  // plain: <bos> <image> caption \n
  }
  CHECK(loader.stats().skipped == 0);
}
