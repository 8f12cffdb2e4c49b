#include "train/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/io/output_path.h"

namespace vlmc::train {

void write_file_atomically(const std::string& path, std::string_view bytes, const std::string& who) {
  io::check_output_path(path, who);
  const std::string tmp = str(path, ".tmp.", ::getpid());
  auto why = [] { return std::string(std::strerror(errno)); };
  errno = 0;
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  VLMC_CHECK(f != nullptr, who, ": cannot create temporary file '", tmp, "' for '", path, "': ", why());
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0 &&
                       !std::ferror(f);
  const std::string write_error = written ? "" : why();
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed) {
    const std::string error = written ? why() : write_error;
    std::remove(tmp.c_str());
    throw Error(str(who, ": writing '", path, "' (temporary file '", tmp, "') failed: ", error));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string error = why();
    std::remove(tmp.c_str());
    throw Error(str(who, ": cannot rename temporary file '", tmp, "' onto '", path, "': ", error));
  }
}

}  // namespace vlmc::train
