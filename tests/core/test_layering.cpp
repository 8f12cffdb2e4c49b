// The README's layering, checked on the source tree: arrows point down only
// (`train → modules → core → kernels`), and the three places that reach
// kernels/ past core/ are the ones the README names.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(VLMC_GOLDEN_DIR) / ".." / "..";

// path (relative to the root) -> the project headers it includes.
std::map<std::string, std::vector<std::string>> includes_under(const std::string& folder) {
  std::map<std::string, std::vector<std::string>> out;
  const std::regex include(R"re(^\s*#\s*include\s+"([^"]+)")re");
  for (const auto& entry : fs::recursive_directory_iterator(kRoot / folder)) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".cpp" && ext != ".h" && ext != ".cu" && ext != ".cuh")) continue;
    std::ifstream in(entry.path());
    std::string line;
    auto& list = out[fs::relative(entry.path(), kRoot).lexically_normal().string()];
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_search(line, m, include)) list.push_back(m[1]);
    }
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

TEST_CASE("layering: kernels/ includes nothing from above it, core/ nothing from modules/optim/train", "[docs]") {
  for (const auto& [file, headers] : includes_under("kernels")) {
    for (const std::string& h : headers) {
      INFO(file << " includes " << h);
      CHECK(!(starts_with(h, "core/") || starts_with(h, "modules/") || starts_with(h, "optim/") ||
              starts_with(h, "train/") || starts_with(h, "dist/") || starts_with(h, "data/")));
    }
  }
  for (const auto& [file, headers] : includes_under("core")) {
    for (const std::string& h : headers) {
      INFO(file << " includes " << h);
      CHECK(!(starts_with(h, "modules/") || starts_with(h, "optim/") || starts_with(h, "train/") ||
              starts_with(h, "dist/") || starts_with(h, "data/")));
    }
  }
}

TEST_CASE("layering: only the README's three exceptions reach kernels/ past core/", "[docs]") {
  const std::set<std::pair<std::string, std::string>> allowed = {
      {"optim/adamw.cpp", "kernels/adamw.h"},         {"optim/clip.cpp", "kernels/adamw.h"},
      {"train/batches.cpp", "kernels/philox.h"},       {"train/mosaic.cpp", "kernels/philox.h"},
      {"dist/nccl_group.cpp", "kernels/cuda/check.h"},
  };
  std::set<std::pair<std::string, std::string>> found;
  for (const char* folder : {"modules", "optim", "dist", "train", "data"}) {
    for (const auto& [file, headers] : includes_under(folder)) {
      for (const std::string& h : headers) {
        if (!starts_with(h, "kernels/")) continue;
        INFO(file << " includes " << h);
        CHECK(allowed.count({file, h}) == 1);
        found.insert({file, h});
      }
    }
  }
  CHECK(found == allowed);  // an exception that went away is taken off the README's list too
}
