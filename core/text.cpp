#include "core/text.h"

namespace vlmc {

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

std::string with_commas(int64_t n) {
  const std::string all = std::to_string(n);
  const size_t sign = n < 0 ? 1 : 0;
  std::string out = all.substr(0, sign);
  const std::string digits = all.substr(sign);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace vlmc
