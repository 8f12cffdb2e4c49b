// LLaVA's data.json / JSONL reader: both layouts, ids as strings and integers, one or several
// images, text-only samples, every reason a sample is refused, strict mode, path checks; and a
// hidden benchmark of the reader's peak memory on a generated 100K-sample file
// ("[.llava_data_bench]", docs/llava_data.md).
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/llava_dataset.h"
#include "tests/support/memory_use.h"
#include "tests/support/temp_dir.h"

using namespace vlmc::data;
using vlmc::test::TempDir;
namespace fs = std::filesystem;

namespace {

const char* kSamples[] = {
    R"({"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [)"
    R"({"from": "human", "value": "<image>\nWhat are the colors of the bus?"},)"
    R"({"from": "gpt", "value": "White and red."}, {"from": "human", "value": "Where is it?"},)"
    R"({"from": "gpt", "value": "On a street."}]})",
    R"({"id": 42, "conversations": [{"from": "human", "value": "Hi \u00e9"}, {"from": "gpt", "value": "Hello"}]})",
    R"({"id": "two", "image": ["a/1.jpg", "b/2.png"], "model": "ignored", "conversations": [)"
    R"({"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "Both."}]})",
};

std::string json_list(const std::vector<std::string>& samples) {
  std::string out = "[\n";
  for (size_t i = 0; i < samples.size(); ++i) out += (i ? ",\n" : "") + samples[i];
  return out + "\n]\n";
}

std::string jsonl(const std::vector<std::string>& samples) {
  std::string out;
  for (const auto& s : samples) out += s + "\n";
  return out;
}

// A one-sample file's bad reason ("" when it is read).
std::string reason_of(const std::string& sample, LlavaReadOptions options = {}) {
  TempDir dir("llava_reason");
  const auto d = read_llava_json(dir.write("d.json", "[" + sample + "]"), options);
  if (d.size() == 1) return "";
  REQUIRE(d.bad().size() == 1);
  return d.bad()[0].reason;
}

std::string two_turns(const std::string& image, const std::string& human, const std::string& gpt = "ok") {
  return R"({"id": "s")" + image + R"(, "conversations": [{"from": "human", "value": )" + nlohmann::json(human).dump() +
         R"(}, {"from": "gpt", "value": )" + nlohmann::json(gpt).dump() + "}]}";
}

void check_three(const LlavaDataset& d) {
  REQUIRE(d.size() == 3);
  CHECK(d.bad().empty());
  CHECK(d.read() == 3);
  CHECK(d.id(0) == "000000033471");
  CHECK(d.num_images(0) == 1);
  CHECK(d.image(0, 0) == "coco/train2017/000000033471.jpg");
  CHECK(d.image_path(0, 0) == "/data/images/coco/train2017/000000033471.jpg");
  const auto t = d.turns(0);
  REQUIRE(t.size() == 4);
  CHECK(t[0].from == Speaker::human);
  CHECK(t[0].value == "<image>\nWhat are the colors of the bus?");
  CHECK(t[3].from == Speaker::gpt);
  CHECK(t[3].value == "On a street.");
  CHECK(d.id(1) == "42");
  CHECK(d.num_images(1) == 0);
  CHECK(d.turns(1)[0].value == "Hi \xc3\xa9");
  const LlavaSample s = d.sample(2);
  CHECK(s.id == "two");
  CHECK(s.images == std::vector<std::string>{"a/1.jpg", "b/2.png"});
  CHECK(s.values == std::vector<std::string>{"<image> and <image>", "Both."});
  CHECK(s.from == std::vector<Speaker>{Speaker::human, Speaker::gpt});
  CHECK_THROWS_WITH(d.image(1, 0), Catch::Contains("sample '42' has 0 images"));
  CHECK_THROWS_WITH(d.id(3), Catch::Contains("sample 3 is out of range (3 samples)"));
}

}  // namespace

TEST_CASE("llava data: a JSON list and the same samples as JSONL read the same", "[llava_data]") {
  TempDir dir("llava_read");
  const std::vector<std::string> samples(std::begin(kSamples), std::end(kSamples));
  LlavaReadOptions options;
  options.image_folder = "/data/images";
  const auto list = read_llava_json(dir.write("d.json", json_list(samples)), options);
  CHECK_FALSE(list.jsonl());
  check_three(list);
  CHECK(list.where(2) == "element 2");

  const auto lines = read_llava_json(dir.write("d.jsonl", "\n" + jsonl(samples) + "  \n"), options);
  CHECK(lines.jsonl());
  check_three(lines);
  CHECK(lines.where(0) == "line 2");  // the blank first line is skipped but counted
  CHECK(lines.memory_bytes() >= 100);
}

TEST_CASE("llava data: every reason a sample is refused", "[llava_data]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("just a string")", "is a JSON string, not an object"},
      {R"({"conversations": []})", "no \"id\""},
      {R"({"id": 1.5, "conversations": []})", "\"id\" is a JSON number"},
      {R"({"id": "a"})", "no \"conversations\""},
      {R"({"id": "a", "conversations": {}})", "\"conversations\" is a JSON object, not a list"},
      {R"({"id": "a", "conversations": []})", "an empty conversation"},
      {R"({"id": "a", "conversations": ["hi"]})", "turn 0 is a JSON string, not an object"},
      {R"({"id": "a", "conversations": [{"value": "hi"}]})", "turn 0 has no string \"from\""},
      {R"({"id": "a", "conversations": [{"from": "human", "value": 3}]})", "turn 0 has no string \"value\""},
      {R"({"id": "a", "conversations": [{"from": "system", "value": "x"}, {"from": "gpt", "value": "y"}]})",
       "turn 0 is from 'system' (LLaVA's preprocessing knows only \"human\" and \"gpt\")"},
      {R"({"id": "a", "conversations": [{"from": "Human", "value": "x"}]})", "turn 0 is from 'Human'"},
      {two_turns("", "<image>\nWhat?"), "1 <image> tag but no image"},
      {two_turns(R"(, "image": "x.jpg")", "What?"), "1 image but no <image> tag"},
      {two_turns(R"(, "image": ["x.jpg", "y.jpg"])", "<image> What?"), "1 <image> tag for 2 images"},
      {two_turns(R"(, "image": "x.jpg")", "<image><image> What?"), "2 <image> tags for 1 image"},
      {two_turns(R"(, "image": "x.jpg")", "What?", "<image>"), "turn 1 (gpt) holds <image>"},
      {two_turns(R"(, "image": [])", "What?"), "\"image\" is an empty list"},
      {two_turns(R"(, "image": 7)", "<image>"), "\"image\" is a JSON number"},
      {two_turns(R"(, "image": ["a.jpg", null])", "<image><image>"), "\"image\" holds a JSON null"},
      {two_turns(R"(, "image": "")", "<image>"), "an empty image path"},
  };
  for (const auto& [sample, reason] : cases) {
    CAPTURE(sample);
    CHECK_THAT(reason_of(sample), Catch::Contains(reason));
  }
  // What is accepted: an integer id, a text-only sample, a gpt-only conversation (no template).
  CHECK(reason_of(R"({"id": 7, "conversations": [{"from": "gpt", "value": "x"}]})").empty());
  CHECK(reason_of(two_turns("", "no image")).empty());
}

TEST_CASE("llava data: image paths stay inside the image folder", "[llava_data]") {
  CHECK(image_path_problem("coco/train2017/000000033471.jpg").empty());
  CHECK(image_path_problem("./x.jpg").empty());
  CHECK(image_path_problem("..x/y..jpg").empty());  // ".." only as a whole component
  CHECK_THAT(image_path_problem("/etc/passwd"), Catch::Contains("is absolute"));
  CHECK_THAT(image_path_problem("../x.jpg"), Catch::Contains("'..' component"));
  CHECK_THAT(image_path_problem("coco/../../x.jpg"), Catch::Contains("'..' component"));
  CHECK_THAT(image_path_problem("a/.."), Catch::Contains("'..' component"));
  CHECK_THAT(image_path_problem(std::string("a\0b", 3)), Catch::Contains("NUL"));
  CHECK_THAT(reason_of(two_turns(R"(, "image": "../secret.jpg")", "<image>")),
             Catch::Contains("image path '../secret.jpg' has a '..' component"));
  CHECK_THAT(reason_of(two_turns(R"(, "image": ["ok.jpg", "/abs.jpg"])", "<image><image>")),
             Catch::Contains("image path '/abs.jpg' is absolute"));
}

TEST_CASE("llava data: bad samples are skipped and named, or with strict an error", "[llava_data]") {
  TempDir dir("llava_strict");
  const std::vector<std::string> samples = {
      kSamples[0], R"({"id": "no_tag", "image": "x.jpg", "conversations": [{"from": "human", "value": "q"}]})",
      kSamples[1], R"({"id": 17, "conversations": []})"};
  const auto list = dir.write("d.json", json_list(samples));
  const auto d = read_llava_json(list);
  CHECK(d.size() == 2);
  CHECK(d.read() == 4);
  REQUIRE(d.bad().size() == 2);
  CHECK(d.bad()[0].id == "no_tag");
  CHECK(d.bad()[0].where == "element 1");
  CHECK(d.bad()[0].reason == "1 image but no <image> tag");
  CHECK(d.bad()[1].id == "17");
  CHECK(d.bad()[1].where == "element 3");
  CHECK(d.id(1) == "42");  // the good ones keep their order

  LlavaReadOptions strict;
  strict.strict = true;
  CHECK_THROWS_WITH(read_llava_json(list, strict),
                    Catch::Contains(list) && Catch::Contains("element 1 (id 'no_tag'): 1 image but no <image> tag"));
  const auto lines = dir.write("d.jsonl", jsonl(samples));
  CHECK_THROWS_WITH(read_llava_json(lines, strict), Catch::Contains("line 2 (id 'no_tag')"));

  // A JSONL line that does not parse is one bad sample; the lines after it are read.
  const auto broken = dir.write("b.jsonl", std::string(kSamples[1]) + "\n{\"id\": \"x\", \n" + kSamples[0] + "\n");
  const auto b = read_llava_json(broken);
  CHECK(b.size() == 2);
  REQUIRE(b.bad().size() == 1);
  CHECK(b.bad()[0].where == "line 2");
  CHECK_THAT(b.bad()[0].reason, Catch::Contains("not valid JSON"));
  CHECK_THROWS_WITH(read_llava_json(broken, strict), Catch::Contains("line 2: not valid JSON"));
}

TEST_CASE("llava data: files that are not LLaVA data", "[llava_data]") {
  TempDir dir("llava_files");
  CHECK_THROWS_WITH(read_llava_json(dir.file("missing.json")), Catch::Contains("missing.json: cannot open"));
  CHECK_THROWS_WITH(read_llava_json(dir.write("e.json", " \n ")), Catch::Contains("the file is empty"));
  CHECK_THROWS_WITH(read_llava_json(dir.write("s.json", "\"x\"")), Catch::Contains("neither a JSON list"));
  const auto cut = dir.write("c.json", std::string("[") + kSamples[0] + ", {\"id\": ");
  CHECK_THROWS_WITH(read_llava_json(cut), Catch::Contains("c.json: not valid JSON"));
  // A number no double holds is nlohmann's out_of_range, not a parse_error (found by fuzz_llava_json):
  // the list is refused, a JSONL line is one bad sample.
  const auto huge = dir.write("h.json", std::string("[") + kSamples[0] + ", {\"id\": 1e99999}]");
  CHECK_THROWS_AS(read_llava_json(huge), vlmc::Error);
  CHECK_THROWS_WITH(read_llava_json(huge), Catch::Contains("h.json: not valid JSON"));
  const auto huge_line = read_llava_json(dir.write("h.jsonl", std::string(kSamples[0]) + "\n{\"id\": 1e99999}\n"));
  CHECK(huge_line.size() == 1);
  REQUIRE(huge_line.bad().size() == 1);
  CHECK_THAT(huge_line.bad()[0].reason, Catch::Contains("not valid JSON"));
  // An empty list is a file with no samples, not an error.
  CHECK(read_llava_json(dir.write("n.json", "[]")).size() == 0);
}

TEST_CASE("llava data: check_files and the template option refuse up front", "[llava_data]") {
  TempDir dir("llava_checks");
  fs::create_directories(dir.path / "img" / "coco");
  std::ofstream(dir.path / "img" / "coco" / "here.jpg") << "x";
  const std::vector<std::string> samples = {
      two_turns(R"(, "image": "coco/here.jpg")", "<image>"), two_turns(R"(, "image": "coco/gone.jpg")", "<image>"),
      two_turns("", "text only")};
  const auto file = dir.write("d.json", json_list(samples));
  LlavaReadOptions files;
  files.image_folder = (dir.path / "img").string();
  files.check_files = true;
  const auto d = read_llava_json(file, files);
  CHECK(d.size() == 2);
  REQUIRE(d.bad().size() == 1);
  CHECK_THAT(d.bad()[0].reason, Catch::Contains("coco/gone.jpg is missing"));
  LlavaReadOptions no_folder;
  no_folder.check_files = true;
  CHECK_THROWS_WITH(read_llava_json(file, no_folder), Catch::Contains("check_files needs data.image_folder"));

  LlavaReadOptions plain;
  plain.conversation_template = "plain";
  const auto p = read_llava_json(file, plain);
  CHECK(p.size() == 2);
  REQUIRE(p.bad().size() == 1);
  CHECK_THAT(p.bad()[0].reason, Catch::Contains("plain takes only samples with an image"));
  LlavaReadOptions unknown;
  unknown.conversation_template = "v0";
  CHECK_THROWS_WITH(read_llava_json(file, unknown), Catch::Contains("'v0' is unknown"));
}

namespace {

// A COCO-style 12-digit name.
std::string str_pad(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%012d", i);
  return buf;
}

}  // namespace

// Peak memory of reading a 100K-sample file shaped like llava_v1_5_mix665k.json (a mix of
// one-image multi-turn samples and text-only ones). Run by hand:
//   build/tests/vlmc_tests "[.llava_data_bench]"        (VLMC_LLAVA_BENCH_SAMPLES=N to change)
TEST_CASE("llava data bench: peak memory of reading 100K samples", "[.llava_data_bench]") {
  const char* env = std::getenv("VLMC_LLAVA_BENCH_SAMPLES");
  const int n = env ? std::atoi(env) : 100000;
  TempDir dir("llava_bench");
  const std::string file = dir.file("mix.json");
  {
    std::ofstream out(file);
    out << "[\n";
    for (int i = 0; i < n; ++i) {
      nlohmann::json s;
      s["id"] = i % 7 == 0 ? nlohmann::json(i) : nlohmann::json(str_pad(i));
      if (i % 5 != 0) s["image"] = "coco/train2017/" + str_pad(i) + ".jpg";
      s["conversations"] = nlohmann::json::array();
      const int rounds = 1 + i % 4;
      for (int r = 0; r < rounds; ++r) {
        std::string q = "What is the person in the picture doing, and what is in round " + std::to_string(r) + "?";
        if (r == 0 && i % 5 != 0) q = "<image>\n" + q;
        s["conversations"].push_back({{"from", "human"}, {"value", q}});
        s["conversations"].push_back(
            {{"from", "gpt"},
             {"value", std::string(200 + (i * 37 + r * 11) % 600, 'a') + " The answer ends here."}});
      }
      out << (i ? ",\n" : "") << s.dump();
    }
    out << "\n]\n";
  }
  const auto bytes = fs::file_size(file);
  // Reset the high-water mark so it covers the read alone (Linux >= 4.0).
  vlmc::test::reset_peak_rss();
  const double before = vlmc::test::current_rss_bytes() / 1024;
  const auto start = std::chrono::steady_clock::now();
  const auto d = read_llava_json(file);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak = vlmc::test::peak_rss_bytes() / 1024;
  REQUIRE(d.size() == static_cast<size_t>(n));
  std::printf("llava data bench: %d samples, file %.1f MiB, read in %.2f s; held %.1f MiB; RSS before %.1f MiB, "
              "peak %.1f MiB (+%.1f MiB)\n",
              n, bytes / 1048576.0, seconds, d.memory_bytes() / 1048576.0, before / 1024.0, peak / 1024.0,
              (peak - before) / 1024.0);

  // For comparison: the whole file as one nlohmann DOM (what json.load does in LLaVA).
  vlmc::test::reset_peak_rss();
  const double before_dom = vlmc::test::current_rss_bytes() / 1024;
  {
    std::ifstream in(file);
    const auto dom = nlohmann::json::parse(in);
    REQUIRE(dom.size() == static_cast<size_t>(n));
  }
  std::printf("llava data bench: the whole-file DOM peaks at +%.1f MiB\n", (vlmc::test::peak_rss_bytes() / 1024 - before_dom) / 1024.0);
}
