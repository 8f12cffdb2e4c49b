// Small text helpers for messages, tables and help strings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlmc {

// "a, b, c" (with the default separator).
std::string join(const std::vector<std::string>& parts, const char* separator = ", ");
// 20979712 -> "20,979,712"; negative numbers keep their sign.
std::string with_commas(int64_t n);

}  // namespace vlmc
