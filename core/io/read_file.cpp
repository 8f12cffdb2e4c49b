#include "core/io/read_file.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace vlmc::io {

std::string read_file(const std::string& path, const std::string& what) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str(path, ": cannot open ", what, ": ", errno_text()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(str(path, ": reading ", what, " failed"));
  return ss.str();
}

}  // namespace vlmc::io
