#include "core/device.h"

#include <cctype>

#include "core/error.h"

namespace vlmc {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  const std::string prefix = "cuda:";
  if (text.rfind(prefix, 0) == 0 && text.size() > prefix.size() && text.size() < prefix.size() + 4) {
    int index = 0;
    for (size_t i = prefix.size(); i < text.size(); ++i) {
      VLMC_CHECK(std::isdigit(static_cast<unsigned char>(text[i])), "device: cannot parse '", text,
                 "' (expected cpu, cuda or cuda:N)");
      index = index * 10 + (text[i] - '0');
    }
    return cuda(index);
  }
  throw Error(vlmc::str("device: cannot parse '", text, "' (expected cpu, cuda or cuda:N)"));
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

}  // namespace vlmc
