// Number checks for command-line options. CLI11's PositiveNumber and
// NonNegativeNumber say "Value 0 not in range 0.000000 to 1797...(309
// digits)"; these say what is wanted, under the same names in --help.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

namespace vlmc::cli {

namespace detail {
inline CLI::Validator number_at_least(bool strictly_positive) {
  return CLI::Validator(
      [strictly_positive](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !std::isfinite(value))
          return "'" + text + "' is not a number";
        if (strictly_positive ? value > 0 : value >= 0) return "";
        return std::string("must be ") + (strictly_positive ? "> 0" : ">= 0") + ", got " + text;
      },
      strictly_positive ? "POSITIVE" : "NONNEGATIVE");
}
}  // namespace detail

inline const CLI::Validator kPositive = detail::number_at_least(true);
inline const CLI::Validator kNonNegative = detail::number_at_least(false);

}  // namespace vlmc::cli
