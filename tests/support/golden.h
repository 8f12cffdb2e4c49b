// Loading the PyTorch golden files (tests/golden/, format "vlmc-golden").
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace vlmc::test {

struct GoldenFile {
  std::map<std::string, Tensor> tensors;                      // "<case>.in.x", "<case>.out", ...
  std::vector<std::pair<std::string, nlohmann::json>> cases;  // (case name, its "<case>.args")
};

// Reads VLMC_GOLDEN_DIR/<family>.safetensors, requires the header's format,
// version and family to be vlmc-golden / 1 / family (a REQUIRE failure names
// the field), and lists the cases in name order.
GoldenFile load_golden(const std::string& family);

// The tensors whose names start with prefix (e.g. "<case>.weights."), keyed by the rest of the name.
std::map<std::string, Tensor> section(const std::map<std::string, Tensor>& all, const std::string& prefix);

}  // namespace vlmc::test
