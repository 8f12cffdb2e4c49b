#include "tests/support/golden.h"

#include <catch2/catch.hpp>

#include "core/io/tensor_io.h"

namespace vlmc::test {

GoldenFile load_golden(const std::string& family) {
  const std::string path = std::string(VLMC_GOLDEN_DIR) + "/" + family + ".safetensors";
  INFO("golden file " << path);
  const std::map<std::string, std::string> meta = io::load_safetensors_metadata(path);
  REQUIRE(meta.count("format") == 1);
  REQUIRE(meta.at("format") == "vlmc-golden");
  REQUIRE(meta.count("version") == 1);
  REQUIRE(meta.at("version") == "1");
  REQUIRE(meta.count("family") == 1);
  REQUIRE(meta.at("family") == family);
  GoldenFile golden;
  golden.tensors = io::load_safetensors(path);
  const std::string suffix = ".args";
  for (const auto& [key, value] : meta) {
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    golden.cases.emplace_back(key.substr(0, key.size() - suffix.size()), nlohmann::json::parse(value));
  }
  return golden;
}

std::map<std::string, Tensor> section(const std::map<std::string, Tensor>& all, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : all)
    if (name.compare(0, prefix.size(), prefix) == 0) out.emplace(name.substr(prefix.size()), t);
  return out;
}

}  // namespace vlmc::test
