#include "tests/fuzz/fuzz_files.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace vlmc::fuzz {
namespace {

std::string make_scratch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/vlmc-fuzz-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("fuzz: cannot create " + pattern);
  return pattern;
}

void remove_scratch_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(scratch_dir(), ignored);
}

}  // namespace

const std::string& scratch_dir() {
  // Never destroyed: the atexit handler that removes it runs after static
  // destructors registered later.
  static const std::string* dir = [] {
    auto* made = new std::string(make_scratch_dir());
    std::atexit(remove_scratch_dir);
    return made;
  }();
  return *dir;
}

std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) throw std::runtime_error("fuzz: cannot write " + path);
  const bool ok = size == 0 || std::fwrite(data, 1, size, file) == size;
  if (std::fclose(file) != 0 || !ok) throw std::runtime_error("fuzz: short write to " + path);
  return path;
}

std::string write_scratch(const std::string& name, std::string_view text) {
  return write_scratch(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("fuzz: cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string source_path(const std::string& relative) {
  const char* root = std::getenv("VLMC_SOURCE_DIR");
  return std::string(root != nullptr && *root != '\0' ? root : VLMC_FUZZ_SOURCE_DIR) + "/" + relative;
}

}  // namespace vlmc::fuzz
