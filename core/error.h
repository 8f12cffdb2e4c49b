// vlmc::Error and the argument-check macro every op uses.
//
// Every shape, dtype or device mismatch throws vlmc::Error with a message that
// names the op and the offending shapes, e.g.
//   linear: input [4,576,1000] does not match weight [4096,1024]
#pragma once

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace vlmc {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenates any streamable values into one string: str("dim ", 3, " of ", shape).
template <typename... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

// The text of the last failed system call's errno, for "<file>: cannot ...: <why>".
inline std::string errno_text() { return errno ? std::strerror(errno) : "unknown error"; }

}  // namespace vlmc

// VLMC_CHECK(cond, parts...): throws vlmc::Error(str(parts...)) when cond is false.
#define VLMC_CHECK(cond, ...)                            \
  do {                                                   \
    if (!(cond)) throw ::vlmc::Error(::vlmc::str(__VA_ARGS__)); \
  } while (0)
